#!/usr/bin/env python3
"""Generation against the memory-bandwidth limit, training against the FLOP limit, on this machine.

    python bench/roofline.py [--json bench/results/roofline.json]

Measures, in one process: read bandwidth (sum over a 1 GiB tensor) and copy bandwidth; matmul
throughput in fp32 and bf16 (a 2048^3 product and a model-shaped one); then, with the engine on the
default model at the precision it picks, decode tokens/s at batch 1 and 16 and the tokens/s of a
PPO minibatch's forward + backward.

Limits: a decode step reads every matmul weight once (the weight bytes at the compute dtype), so
generation can do at most batch x bandwidth / weight_bytes tokens/s; and each token costs 2 FLOPs
per matmul weight, so at most peak_FLOPs / (2 N) tokens/s: the roofline is the lower of the two.
A training token costs about 4 x N FLOPs with LoRA (forward 2N, backward to the activations 2N;
the frozen weights get no gradient), N = the matmul parameters it passes (the output head only on
response tokens).
"""

from __future__ import annotations

import argparse
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


def best_of(fn, repeats: int = 5) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def bandwidth() -> dict:
    n = 2**28  # 1 GiB of fp32
    a, b = torch.ones(n), torch.empty(n)
    read = n * 4 / best_of(lambda: a.sum())
    copy = 2 * n * 4 / best_of(lambda: b.copy_(a))
    return {"read_GBps": read / 1e9, "copy_GBps": copy / 1e9}


def matmul() -> dict:
    out = {}
    for dtype, name in ((torch.float32, "fp32"), (torch.bfloat16, "bf16")):
        for m, k, n in ((2048, 2048, 2048), (372, 576, 1536)):
            a, b = torch.randn(m, k).to(dtype), torch.randn(k, n).to(dtype)
            out[f"{name}_{m}x{k}x{n}_GFLOPs"] = 2 * m * k * n / best_of(lambda: a @ b) / 1e9
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "roofline.json")
    args = ap.parse_args()

    from ppo_term.engine.rollout import generate
    from ppo_term.engine.trainer import Trainer
    from ppo_term.recipe import load_recipe

    bw, mm = bandwidth(), matmul()
    print(f"bandwidth: read {bw['read_GBps']:.1f} GB/s, copy {bw['copy_GBps']:.1f} GB/s")
    for k, v in mm.items():
        print(f"matmul {k}: {v:.0f}")

    recipe = load_recipe(ROOT / "bench" / "compare_trl" / "recipe.toml")
    trainer = Trainer(recipe, progress=False)
    trainer.setup()
    policy = trainer.policy
    linears = [m for n, m in policy.lm.named_modules() if isinstance(m, torch.nn.Linear) and "lora_" not in n]
    weight_bytes = sum(m.weight.numel() * m.weight.element_size() for m in linears)
    head = policy.lm.get_output_embeddings().weight.numel()
    body_params = sum(m.weight.numel() for m in linears) - head
    peak = mm[f"{trainer.precision.name}_2048x2048x2048_GFLOPs"] * 1e9
    result = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": machine(),
              "precision": trainer.precision.name, "bandwidth": bw, "matmul": mm,
              "decode_weight_bytes": weight_bytes, "generation": {}, "training": {}}

    items = trainer.items
    gen = recipe.generation
    for batch in (1, 16):
        runs = []
        for _ in range(3):
            t0 = time.perf_counter()
            out = generate(policy, trainer.tokenizer, items[:batch], gen)
            runs.append(out.mask.sum().item() / (time.perf_counter() - t0))
        measured = statistics.median(runs)
        limit = batch * bw["read_GBps"] * 1e9 / weight_bytes
        # a token also costs 2 FLOPs per matmul weight, whatever the batch: the other ceiling
        flop_limit = peak / (2 * (body_params + head))
        roof = min(limit, flop_limit)
        result["generation"][f"batch_{batch}"] = {"tokens_per_s": measured, "bandwidth_limit_tokens_per_s": limit,
                                                  "fraction_of_limit": measured / limit,
                                                  "flop_limit_tokens_per_s": flop_limit,
                                                  "roofline_tokens_per_s": roof, "fraction_of_roofline": measured / roof}
        print(f"generation batch {batch}: {measured:.0f} tok/s; bandwidth limit {limit:.0f} tok/s "
              f"({100 * measured / limit:.0f}%), FLOP limit {flop_limit:.0f} tok/s; roofline "
              f"{100 * measured / roof:.0f}%")

    # one PPO minibatch (4 samples, as the comparison runs it): forward + backward
    batch = generate(policy, trainer.tokenizer, items[:4], gen)
    prompt_len = batch.query_ids.shape[1]

    def step():
        logits, values = policy.forward(policy.lm, batch.input_ids, batch.attention_mask, prompt_len)
        (torch.log_softmax(logits, -1).mean() + values.mean()).backward()

    seconds = statistics.median(best_of(step, 1) for _ in range(4))
    tokens = batch.input_ids.numel()
    response_tokens = batch.response_ids.numel()
    flops = 4 * (body_params * tokens + head * response_tokens)
    result["training"] = {"minibatch_tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds,
                          "flops": flops, "achieved_GFLOPs": flops / seconds / 1e9,
                          "flop_limit_tokens_per_s": tokens * peak / flops,
                          "fraction_of_limit": flops / seconds / peak}
    t = result["training"]
    print(f"training minibatch: {t['tokens_per_s']:.0f} tok/s, {t['achieved_GFLOPs']:.0f} GFLOP/s; FLOP limit "
          f"{t['flop_limit_tokens_per_s']:.0f} tok/s ({100 * t['fraction_of_limit']:.0f}%)")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
