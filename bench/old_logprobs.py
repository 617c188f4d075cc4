#!/usr/bin/env python3
"""The old log-probs and values taken while sampling against a pass of the policy over the rollout.

    python bench/old_logprobs.py                 # the safety recipe, 4 rounds
    python bench/old_logprobs.py --recipe bench/compare_trl/recipe.toml --rounds 3

In one process, on the same prompts, alternating within each round (the order turned each round):
- recompute: generate (an opening's candidates in a generate() call of their own), then the
  update's no-grad passes as `ppo.old_logprobs = "recompute"` runs them (the policy's over every
  row, the reference's);
- rollout: the same calls recording the log-probs and values, then the passes as `rollout` runs
  them (the policy's only over the opened and greedy rows);
- one_call: all candidates in one generate() call, every row recorded, the reference's pass alone.
Medians of the rounds; the largest difference between the recorded and the recomputed log-probs
and values.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from ppo_step import machine  # noqa: E402

MODES = {"recompute": {"record": False, "one_call": False}, "rollout": {"record": True, "one_call": False},
         "one_call": {"record": True, "one_call": True}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", default="recipes/safety.toml")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--json", type=Path)
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    args = ap.parse_args()

    from ppo_term.engine.rollout import generate
    from ppo_term.engine.trainer import Trainer
    from ppo_term.recipe import load_recipe

    recipe = load_recipe(args.recipe, args.overrides)
    trainer = Trainer(recipe, progress=False)
    trainer.setup()
    items = trainer.next_prompts()
    plan = trainer.sampler.plan(items, recipe.generation)
    generate(trainer.policy, trainer.tokenizer, items, plan)  # warm-up
    times: dict[str, dict[str, list[float]]] = {k: {"generate": [], "passes": []} for k in args.modes}
    diff_lp, diff_v = 0.0, 0.0
    gaps: list[torch.Tensor] = []  # every recorded token's |recorded - recomputed| log-prob
    for rnd in range(args.rounds):
        for mode in args.modes if rnd % 2 == 0 else args.modes[::-1]:
            t0 = time.perf_counter()
            batch = generate(trainer.policy, trainer.tokenizer, items, plan, **MODES[mode])
            t1 = time.perf_counter()
            logprobs, values, _ = trainer._rollout_stats(batch)
            t2 = time.perf_counter()
            times[mode]["generate"].append(t1 - t0)
            times[mode]["passes"].append(t2 - t1)
            if MODES[mode]["record"]:
                recorded = torch.tensor(batch.recorded)
                batch.old_logprobs = batch.old_values = None
                batch.recorded = [False] * len(batch.recorded)
                full, full_values, _ = trainer._rollout_stats(batch)
                keep = batch.mask.bool() & recorded[:, None].to(batch.mask.device)
                gaps.append((logprobs - full)[keep].abs().float().cpu())
                diff_lp = max(diff_lp, float(gaps[-1].max()))
                diff_v = max(diff_v, float((values - full_values)[keep].abs().max()))
        print(f"round {rnd}: " + "  ".join(f"{m} generate {t['generate'][-1]:.2f}s passes {t['passes'][-1]:.2f}s"
                                          for m, t in times.items()), flush=True)
    gap = torch.cat(gaps) if gaps else torch.zeros(1)
    # a token whose recorded log-prob is off by more than log(1 + cliprange) starts outside the clip range
    clip_at = math.log1p(recipe.ppo.cliprange)
    med = {m: {k: statistics.median(v) for k, v in t.items()} for m, t in times.items()}
    for m in med:
        med[m]["sum"] = med[m]["generate"] + med[m]["passes"]
    first = args.modes[0]
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "recipe": args.recipe, "overrides": args.overrides,
        "rounds": args.rounds, "samples": len(batch.responses), "precision": trainer.precision.name,
        "machine": machine(), "median_s": med, "raw_s": times,
        f"ratio_generate_plus_passes_to_{first}": {m: med[m]["sum"] / med[first]["sum"] for m in med},
        "max_abs_diff_logprob": diff_lp, "max_abs_diff_value": diff_v,
        "mean_abs_diff_logprob": float(gap.mean()), "p99_abs_diff_logprob": float(gap.quantile(0.99)),
        "share_beyond_cliprange": float((gap > clip_at).float().mean()),
    }
    print(f"\nmedians of {args.rounds}:")
    for m, t in med.items():
        print(f"  {m:10} generate {t['generate']:.2f}s + passes {t['passes']:.2f}s = {t['sum']:.2f}s "
              f"({t['sum'] / med[first]['sum']:.2f}x)")
    print(f"recorded vs recomputed: log-prob {diff_lp:.1e} at most, {result['mean_abs_diff_logprob']:.1e} on "
          f"average, {result['p99_abs_diff_logprob']:.1e} at the 99th percentile; "
          f"{result['share_beyond_cliprange']:.2%} of tokens beyond log(1 + cliprange); value {diff_v:.1e}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
