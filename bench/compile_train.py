#!/usr/bin/env python3
"""A PPO minibatch's forward + backward, eager against a `torch.compile`d backbone.

    python bench/compile_train.py [--model DIR] [--device cpu|cuda] [--full] [--precision fp32|bf16]
                                  [--rows 4] [--prompt 41] [--response 48] [--rounds 3] [--json OUT]

The shapes of the comparison work (`compare_trl/recipe.toml`: minibatch 4, ~41 prompt and 48
response tokens) through `Policy.forward`, the pass every PPO minibatch runs, with a loss over
every logit and value so the backward is the update's. The backbone is compiled once
(`dynamic=True`, inductor), its compile and first call timed apart; then eager and compiled
alternate for `--rounds` rounds of 5 timed minibatches each (medians). A measurement of the lever
before it is wired into the trainer.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--full", action="store_true", help="full fine-tuning (default: LoRA r16 on q/k/v/o)")
    ap.add_argument("--precision", choices=["fp32", "bf16"], default=None,
                    help="compute dtype (default: bf16 on CUDA, fp32 on a CPU)")
    ap.add_argument("--rows", type=int, default=4)
    ap.add_argument("--prompt", type=int, default=41)
    ap.add_argument("--response", type=int, default=48)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    from ppo_term.engine.policy import Policy
    from ppo_term.models import load_causal_lm, resolve_model
    from ppo_term.recipe import LoraConfig

    device = torch.device(args.device)
    precision = args.precision or ("bf16" if device.type == "cuda" else "fp32")
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    torch.manual_seed(0)
    lm = load_causal_lm(resolve_model(args.model), device)
    lora = LoraConfig(enabled=not args.full, r=16, alpha=32, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    policy = Policy(lm, lora, device, dtype=dtype)
    P, T = args.prompt, args.response
    ids = torch.randint(0, lm.config.vocab_size, (args.rows, P + T), device=device)
    mask = torch.ones_like(ids)
    mask[0, : P // 4] = 0  # one left-padded row, as a batch of prompts of different lengths has

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def minibatch() -> None:
        logits, values = policy.forward(policy.lm, ids, mask, P)
        (logits.float().logsumexp(-1).mean() + values.mean()).backward()

    def timed(n: int = 5) -> list[float]:
        out = []
        for _ in range(n):
            sync()
            t = time.perf_counter()
            minibatch()
            sync()
            out.append(time.perf_counter() - t)
        return out

    backbone = getattr(policy.lm, policy.lm.base_model_prefix)
    eager_forward = backbone.forward
    compiled_forward = torch.compile(eager_forward, dynamic=True)
    minibatch()  # warm-up, eager
    backbone.forward = compiled_forward
    sync()
    t = time.perf_counter()
    minibatch()
    sync()
    compile_s = time.perf_counter() - t
    print(f"compile + first minibatch: {compile_s:.1f} s", flush=True)
    eager: list[float] = []
    compiled: list[float] = []
    for r in range(args.rounds):
        backbone.forward = eager_forward
        eager += timed()
        backbone.forward = compiled_forward
        compiled += timed()
        print(f"round {r}: eager {statistics.median(eager[-5:]):.4f} s, compiled {statistics.median(compiled[-5:]):.4f} s",
              flush=True)
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M"), "model": args.model, "device": args.device,
        "gpu": torch.cuda.get_device_name() if device.type == "cuda" else None, "torch": torch.__version__,
        "variant": "full" if args.full else "lora", "precision": precision,
        "shape": {"rows": args.rows, "prompt": P, "response": T},
        "compile_s": compile_s, "eager_s": statistics.median(eager), "compiled_s": statistics.median(compiled),
        "ratio": statistics.median(compiled) / statistics.median(eager),
    }
    print(f"median: eager {result['eager_s']:.4f} s, compiled {result['compiled_s']:.4f} s "
          f"({result['ratio']:.2f}x); compile {compile_s:.1f} s")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
