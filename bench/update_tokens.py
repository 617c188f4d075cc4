#!/usr/bin/env python3
"""The PPO update over the responses' first K tokens (`ppo.update_tokens`) against all of them.

    python bench/update_tokens.py [--tokens 8] [--rounds 4] [--set ppo.batch_prompts=12 ...]

One rollout of the recipe (default `recipes/safety.toml`) on the default model at the precision
the engine picks; then `Trainer.ppo_update` on it, alternating the two settings within each round
(the first round warms up), and the update's no-grad passes (`_rollout_stats`: the policy's old
log-probs and the reference's, which both settings run over the whole response) timed alone.
Medians; writes `bench/results/update_tokens.json`.
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", default=str(ROOT / "recipes" / "safety.toml"))
    ap.add_argument("--tokens", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "update_tokens.json")
    args = ap.parse_args()

    from ppo_term.engine.rollout import generate, score
    from ppo_term.engine.trainer import Trainer
    from ppo_term.recipe import load_recipe

    recipe = load_recipe(args.recipe, args.overrides)
    trainer = Trainer(recipe, progress=False)
    trainer.setup()
    torch.manual_seed(0)
    batch = generate(trainer.policy, trainer.tokenizer, trainer.items[: recipe.ppo.batch_prompts], recipe.generation)
    score(trainer.rewards, batch)
    settings = {"all tokens": None, f"first {args.tokens}": args.tokens}
    seconds: dict[str, list[float]] = {name: [] for name in [*settings, "no-grad passes"]}
    for r in range(args.rounds + 1):  # the first round warms up
        for name, k in settings.items():
            trainer.recipe.ppo.update_tokens = k
            t0 = time.perf_counter()
            trainer.ppo_update(batch, recipe.kl.coef)
            if r:
                seconds[name].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        trainer._rollout_stats(batch)
        if r:
            seconds["no-grad passes"].append(time.perf_counter() - t0)
    medians = {name: statistics.median(v) for name, v in seconds.items()}
    result = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": machine(),
              "precision": trainer.precision.name, "recipe": args.recipe, "overrides": args.overrides,
              "rows": len(batch.responses), "prompt_tokens": batch.query_ids.shape[1],
              "response_tokens": batch.response_ids.shape[1], "rounds": args.rounds,
              "seconds": seconds, "median_s": medians,
              "ratio": medians[f"first {args.tokens}"] / medians["all tokens"]}
    for name, m in medians.items():
        print(f"{name}: {m:.2f} s", flush=True)
    print(f"update over the first {args.tokens} tokens / over all: {result['ratio']:.2f}x")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
