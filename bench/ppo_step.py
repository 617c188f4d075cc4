#!/usr/bin/env python3
"""Seconds per PPO step (generate / score / train), tokens/s and peak RSS for a recipe.

    python bench/ppo_step.py                       # recipes/safety.toml on the default model
    python bench/ppo_step.py --steps 5 --warmup 1 --set generation.n=2 --json out.json

Runs `warmup` untimed steps, then `steps` timed ones, in one process; prints medians. Records
the CPU model and flags, torch's CPU capability and thread count with the figures.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def machine() -> dict:
    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads()}
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in lscpu.splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("Model name", "CPU(s)"):
                info[key.strip()] = value.strip()
            if key.strip() == "Flags":
                flags = value.split()
                info["avx512_bf16"] = "avx512_bf16" in flags
                info["avx2"] = "avx2" in flags
    except FileNotFoundError:
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", default="recipes/safety.toml")
    ap.add_argument("--steps", type=int, default=3, help="timed steps")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()

    import torch

    from ppo_term.engine.trainer import Trainer
    from ppo_term.recipe import load_recipe

    recipe = load_recipe(args.recipe, args.overrides + [f"steps={args.warmup + args.steps}"])
    t0 = time.perf_counter()
    trainer = Trainer(recipe, progress=False)
    trainer.setup()
    load_s = time.perf_counter() - t0
    rows = []
    for i in range(args.warmup + args.steps):
        m = trainer.train_step()
        tag = "warm-up" if i < args.warmup else "timed"
        print(f"step {i + 1} ({tag}): generate {m['time/generate']:.2f}s  score {m['time/score']:.3f}s  "
              f"train {m['time/train']:.2f}s  total {m['time/step']:.2f}s  {m['tokens_per_s']:.1f} tok/s", flush=True)
        if i >= args.warmup:
            rows.append(m)
    med = lambda k: statistics.median(r[k] for r in rows)  # noqa: E731
    peak_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    g, p = recipe.generation, recipe.ppo
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "recipe": args.recipe,
        "overrides": args.overrides,
        "config": {"samples_per_step": p.batch_prompts * g.n, "max_new_tokens": g.max_new_tokens,
                   "epochs": p.epochs, "minibatch": p.minibatch, "lora": recipe.lora.enabled},
        "device": str(trainer.device),
        "machine": machine(),
        "load_s": load_s,
        "timed_steps": len(rows),
        "median_s": {"generate": med("time/generate"), "score": med("time/score"),
                     "train": med("time/train"), "step": med("time/step")},
        "median_tokens_per_s": med("tokens_per_s"),
        "median_response_length": med("response_length"),
        "peak_rss_mib": peak_rss_mib,
        **({"peak_cuda_mib": torch.cuda.max_memory_allocated() / 2**20} if trainer.device.type == "cuda" else {}),
        "precision": trainer.precision.name,
        "precision_reason": trainer.precision.reason,
        "master_weights": trainer.master.name,
        "master_weights_reason": trainer.master.reason,
        "steps": [{"gen_s": r["time/generate"], "score_s": r["time/score"], "train_s": r["time/train"],
                   "total_s": r["time/step"], "tokens_per_s": r["tokens_per_s"]} for r in rows],
    }
    s = result["median_s"]
    print(f"\nmedian of {len(rows)} steps: step {s['step']:.2f}s = generate {s['generate']:.2f}s + "
          f"score {s['score']:.3f}s + train {s['train']:.2f}s; {result['median_tokens_per_s']:.1f} tok/s; "
          f"peak RSS {peak_rss_mib:.0f} MiB" + (f", peak CUDA {result['peak_cuda_mib']:.0f} MiB" if "peak_cuda_mib" in result else "")
          + f"; {result['precision']} ({result['precision_reason']}); trained weights "
          f"{result['master_weights']} ({result['master_weights_reason']})")
    print(json.dumps(result["machine"]))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
