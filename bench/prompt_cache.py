#!/usr/bin/env python3
"""Each prompt run once for all its candidates, against once per candidate: in generation and
in the training passes.

    python bench/prompt_cache.py [--rounds 5] [--json bench/results/prompt_cache.json]

The safety recipe's rollout (`recipes/safety.toml`: 6 prompts x 8 candidates, one of them opened
with "I'm sorry, but", 24 new tokens at temperature 0.7) on the default model at the precision the
engine picks. generate() either copies each prompt's KV cache to its candidates (`shared`, what
training does) or runs every candidate's prompt through the model (`per candidate`, generate()'s
own way with num_return_sequences). Alternating within each round, the same prompts and random
draws for both; medians over the rounds after one warm-up round. Also 16 prompts x 1 candidate
(the TRL comparison's shape), where there is nothing to share and both ways must time the same.

Then the training passes of a step (`Trainer.ppo_update`: old log-probs and values, reference
log-probs, the PPO minibatches' forward and backward) on one rollout of the recipe, with
`Policy.share_prompts` on (each distinct prompt of a pass once, its KV cache given to its rows)
and off (every row's whole sequence), alternating the same way.
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
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--recipe", default=str(ROOT / "recipes" / "safety.toml"))
    ap.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "prompt_cache.json")
    args = ap.parse_args()

    from ppo_term.engine.rollout import generate, score
    from ppo_term.engine.trainer import Trainer
    from ppo_term.recipe import load_recipe

    recipe = load_recipe(args.recipe)
    trainer = Trainer(recipe, progress=False)
    trainer.setup()
    policy, tokenizer = trainer.policy, trainer.tokenizer
    result = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": machine(),
              "precision": trainer.precision.name, "recipe": args.recipe, "rounds": args.rounds, "work": {}}
    single = recipe.generation.model_copy(update={"n": 1, "openings": []})
    for label, items, gen in (
        (f"{recipe.ppo.batch_prompts} prompts x {recipe.generation.n}", trainer.items[: recipe.ppo.batch_prompts],
         recipe.generation),
        ("16 prompts x 1", trainer.items[:16], single),
    ):
        seconds: dict[str, list[float]] = {"per candidate": [], "shared": []}
        for r in range(args.rounds + 1):  # the first round warms up
            for way, share in (("per candidate", False), ("shared", True)):
                torch.manual_seed(r)
                t0 = time.perf_counter()
                generate(policy, tokenizer, items, gen, share_prompts=share)
                if r:
                    seconds[way].append(time.perf_counter() - t0)
        medians = {w: statistics.median(v) for w, v in seconds.items()}
        result["work"][label] = {"seconds": seconds, "median_s": medians,
                                 "ratio_shared": medians["shared"] / medians["per candidate"]}
        print(f"{label}: per candidate {medians['per candidate']:.2f} s, shared {medians['shared']:.2f} s "
              f"({medians['shared'] / medians['per candidate']:.2f}x)", flush=True)
    # the training passes of one step, on one rollout
    torch.manual_seed(0)
    items = trainer.items[: recipe.ppo.batch_prompts]
    batch = generate(policy, tokenizer, items, recipe.generation)
    score(trainer.rewards, batch)
    label = f"train passes, {recipe.ppo.batch_prompts} prompts x {recipe.generation.n}"
    seconds = {"per candidate": [], "shared": []}
    for r in range(args.rounds + 1):
        for way, share in (("per candidate", False), ("shared", True)):
            policy.share_prompts = share
            t0 = time.perf_counter()
            trainer.ppo_update(batch, recipe.kl.coef)
            if r:
                seconds[way].append(time.perf_counter() - t0)
    policy.share_prompts = True
    medians = {w: statistics.median(v) for w, v in seconds.items()}
    result["work"][label] = {"seconds": seconds, "median_s": medians,
                             "ratio_shared": medians["shared"] / medians["per candidate"],
                             "prompt_tokens": batch.query_ids.shape[1], "response_tokens": batch.response_ids.shape[1]}
    print(f"{label}: per candidate {medians['per candidate']:.2f} s, shared {medians['shared']:.2f} s "
          f"({medians['shared'] / medians['per candidate']:.2f}x)", flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
