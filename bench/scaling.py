#!/usr/bin/env python3
"""Seconds per PPO step as the batch (8, 16, 32 prompts) and the response length (32, 64, 128) grow.

    python bench/scaling.py [--steps 2] [--json bench/results/scaling.json]

The work of bench/compare_trl/recipe.toml (LoRA, one response a prompt of exactly L tokens, 4
epochs of minibatch 4), one setting at a time, each in its own process (`bench/ppo_step.py`, one
warm-up step, medians of the timed ones). Batch varies at 48 tokens; length varies at 16 prompts.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "bench" / "compare_trl" / "recipe.toml"
SETTINGS = [(8, 48), (16, 48), (32, 48), (16, 32), (16, 64), (16, 128)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=2, help="timed steps per setting")
    ap.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "scaling.json")
    args = ap.parse_args()

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for prompts, tokens in SETTINGS:
            out = Path(tmp) / f"{prompts}x{tokens}.json"
            # the 16 prompts repeat when a step takes 32
            cmd = [sys.executable, str(ROOT / "bench" / "ppo_step.py"), "--recipe", str(RECIPE),
                   "--warmup", "1", "--steps", str(args.steps), "--json", str(out),
                   "--set", f"ppo.batch_prompts={prompts}", "--set", f"generation.max_new_tokens={tokens}",
                   "--set", f"generation.min_new_tokens={tokens}"]
            subprocess.run(cmd, check=True, cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS="2"),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            r = json.loads(out.read_text())
            s = r["median_s"]
            rows.append({"prompts": prompts, "tokens": tokens, "generate_s": s["generate"], "train_s": s["train"],
                         "step_s": s["step"], "tokens_per_s": r["median_tokens_per_s"],
                         "peak_rss_mib": r["peak_rss_mib"], "precision": r["precision"]})
            print(f"{prompts:3d} prompts x {tokens:3d} tokens: step {s['step']:6.2f}s  generate {s['generate']:6.2f}s  "
                  f"train {s['train']:6.2f}s  {r['median_tokens_per_s']:6.1f} tok/s  peak RSS {r['peak_rss_mib']:.0f} MiB",
                  flush=True)
            machine = r["machine"]
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                                     "machine": machine, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
