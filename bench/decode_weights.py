#!/usr/bin/env python3
"""Generation speed with the weights decoding runs on: adapter layers as trained, merged, packed.

    python bench/decode_weights.py [--rounds 5] [--json bench/results/decode_weights.json]

The comparison's work (default model, LoRA r16 on q/k/v/o, the 16 prompts, exactly 48 new tokens
at temperature 1), at the precision the engine picks. Three ways to run a decode step, alternating
within each round, medians over the rounds:

- adapter: the PEFT model as trained (two extra small matmuls per adapted projection);
- merged: W + BA in the base layers, adapter off;
- packed: merged, and every weight reordered once into oneDNN's layout (fp32, or bf16 where chosen).

Also batch 1 (one prompt), where a step is a matrix-vector product per weight.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import torch  # noqa: E402

from ppo_step import machine  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "decode_weights.json")
    args = ap.parse_args()

    from ppo_term.engine import decode
    from ppo_term.engine.rollout import generate
    from ppo_term.engine.trainer import Trainer
    from ppo_term.recipe import load_recipe

    recipe = load_recipe(ROOT / "bench" / "compare_trl" / "recipe.toml")
    trainer = Trainer(recipe, progress=False)
    trainer.setup()
    policy, tokenizer = trainer.policy, trainer.tokenizer
    torch.manual_seed(0)
    for name, p in policy.model.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, 1e-3)  # a trained-looking adapter: merging has something to add
    can_pack = decode.can_pack(policy.device, policy.dtype)

    @contextlib.contextmanager
    def mode(name: str):
        if name == "adapter":
            # the PEFT model as it trains: no merged or packed weights
            with _patch(policy, "decode_weights", lambda rows: contextlib.nullcontext()):
                yield
        elif name == "merged":
            with _patch(decode, "can_pack", lambda device, dtype: False):
                yield
        else:
            yield

    modes = ["adapter", "merged"] + (["packed"] if can_pack else [])
    result = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": machine(),
              "precision": trainer.precision.name, "rounds": args.rounds, "tokens_per_s": {}}
    for batch in (16, 1):
        items = trainer.items[:batch]
        runs: dict[str, list[float]] = {m: [] for m in modes}
        for r in range(args.rounds + 1):  # the first round warms up
            for m in modes:
                with mode(m):
                    t0 = time.perf_counter()
                    out = generate(policy, tokenizer, items, recipe.generation)
                    rate = out.mask.sum().item() / (time.perf_counter() - t0)
                if r:
                    runs[m].append(rate)
        medians = {m: statistics.median(v) for m, v in runs.items()}
        result["tokens_per_s"][f"batch_{batch}"] = medians
        print(f"batch {batch}: " + ", ".join(f"{m} {v:.0f} tok/s" for m, v in medians.items())
              + (f"; packed / adapter {medians['packed'] / medians['adapter']:.2f}x" if can_pack else ""), flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))


@contextlib.contextmanager
def _patch(obj, name: str, value):
    old = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, old)


if __name__ == "__main__":
    main()
