#!/usr/bin/env python3
"""One AdamW step over the default model's weights: torch's default kernel, the fused one, and
ppo-term's bf16 AdamW with stochastic rounding (`AdamWBF16`, compiled).

    python bench/adamw.py [--rounds 3] [--steps 4]

Full fine-tuning takes an optimizer step per PPO minibatch (16 a step in the TRL comparison), over
all 135M weights; a LoRA adapter has 1.8M. The parameters here have the default model's shapes
(SmolLM2-135M: the 49152x576 embedding, 30 layers of attention and MLP matrices) with random
values and gradients (bf16 for `bf16-sr`, which full fine-tuning with bf16 `master_weights` runs).
Alternates the kernels, `--rounds` times `--steps` timed steps after one untimed first step
(which allocates the moments, or compiles); medians. Also times torch's two for an adapter-sized
set (a LoRA adapter stays fp32). Writes bench/results/adamw.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from ppo_step import machine  # noqa: E402


def default_model_shapes() -> list[tuple[int, ...]]:
    hidden, inter, kv, layers, vocab = 576, 1536, 192, 30, 49152
    per_layer = [(hidden, hidden), (kv, hidden), (kv, hidden), (hidden, hidden),  # q, k, v, o
                 (inter, hidden), (inter, hidden), (hidden, inter), (hidden,), (hidden,)]  # MLP, norms
    return [(vocab, hidden)] + per_layer * layers + [(hidden,)]


def lora_shapes(r: int = 16) -> list[tuple[int, ...]]:
    hidden, kv, layers = 576, 192, 30
    return [(r, hidden), (hidden, r), (r, hidden), (kv, r), (r, hidden), (kv, r), (r, hidden), (hidden, r)] * layers


def time_steps(shapes: list[tuple[int, ...]], kernel: str, steps: int) -> tuple[float, list[float]]:
    from ppo_term.engine.optim import AdamWBF16

    g = torch.Generator().manual_seed(0)
    dtype = torch.bfloat16 if kernel == "bf16-sr" else torch.float32
    params = [torch.nn.Parameter((torch.randn(*s, generator=g) * 0.02).to(dtype)) for s in shapes]
    for p in params:
        p.grad = (torch.randn(p.shape, generator=g) * 1e-3).to(dtype)
    if kernel == "bf16-sr":
        opt = AdamWBF16(params, lr=1e-5, weight_decay=0.0)
    else:
        opt = torch.optim.AdamW(params, lr=1e-5, weight_decay=0.0, fused=kernel == "fused")
    t0 = time.perf_counter()
    opt.step()
    first = time.perf_counter() - t0
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        opt.step()
        times.append(time.perf_counter() - t0)
    return first, times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--out", type=Path, default=ROOT / "bench/results/adamw.json")
    args = ap.parse_args()

    result = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine()}
    print("| parameters | kernel | first step (s) | median step (s) |\n|---|---|---|---|")
    for name, shapes in (("full", default_model_shapes()), ("lora", lora_shapes())):
        n = sum(torch.Size(s).numel() for s in shapes)
        kernels = ["default", "fused"] + (["bf16-sr"] if name == "full" else [])
        times: dict[str, list[float]] = {k: [] for k in kernels}
        firsts: dict[str, list[float]] = {k: [] for k in kernels}
        for _ in range(args.rounds):
            for kernel in kernels:
                first, ts = time_steps(shapes, kernel, args.steps)
                firsts[kernel].append(first)
                times[kernel] += ts
        result[name] = {"params": n}
        for kernel in kernels:
            med = statistics.median(times[kernel])
            result[name][kernel] = {"median_step_s": med, "steps_s": times[kernel],
                                    "median_first_step_s": statistics.median(firsts[kernel])}
            print(f"| {name} ({n / 1e6:.1f}M) | {kernel} | {statistics.median(firsts[kernel]):.3f} | {med:.4f} |")
        result[name]["ratio_fused_default"] = result[name]["fused"]["median_step_s"] / result[name]["default"]["median_step_s"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
