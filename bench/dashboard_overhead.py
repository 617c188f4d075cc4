#!/usr/bin/env python3
"""Seconds per step with the live dashboard (in a real terminal, tmux) against `--headless`.

    python bench/dashboard_overhead.py [--rounds 2] [--steps 4] [--set key=value ...]

Alternates headless and dashboard runs of the same recipe and config, `rounds` times each, and
compares the median `time/step` (step 1, the warm-up, left out) from each run's metrics.jsonl.
Needs tmux for the dashboard side.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def step_times(run: Path) -> list[float]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["time/step"] for r in rows if r["step"] > 1]


def run_headless(cmd: list[str], run: Path) -> list[float]:
    subprocess.run(cmd + ["--headless", "--run-dir", str(run)], check=True, capture_output=True)
    return step_times(run)


def run_dashboard(cmd: list[str], run: Path, steps: int) -> list[float]:
    session = "ppo-term-overhead"
    subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "120", "-y", "36",
                    " ".join(cmd + ["--run-dir", str(run)])], check=True)
    try:
        while True:
            time.sleep(1)
            state = json.loads((run / "state.json").read_text()) if (run / "state.json").exists() else {}
            if state.get("status", "running") != "running" or state.get("steps_done", 0) >= steps:
                break
        # let the last metrics line land, then leave the app
        time.sleep(2)
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
    return step_times(run)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", default="recipes/safety.toml")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--set", dest="overrides", action="append", default=[],
                    help="recipe overrides for both sides (e.g. ppo.batch_prompts=2 for short steps)")
    args = ap.parse_args()
    if not shutil.which("tmux"):
        sys.exit("tmux is not installed (apt-get install tmux)")
    cmd = [shutil.which("ppo-term") or "ppo-term", "run", args.recipe, "--steps", str(args.steps)]
    for o in args.overrides:
        cmd += ["--set", o]
    root = Path(tempfile.mkdtemp(prefix="dash-overhead-"))
    times: dict[str, list[float]] = {"headless": [], "dashboard": []}
    for i in range(args.rounds):
        t = run_headless(cmd, root / f"headless-{i}")
        times["headless"] += t
        print(f"round {i + 1} headless:  {[round(x, 2) for x in t]}", flush=True)
        t = run_dashboard(cmd, root / f"dashboard-{i}", args.steps)
        times["dashboard"] += t
        print(f"round {i + 1} dashboard: {[round(x, 2) for x in t]}", flush=True)
    h, d = statistics.median(times["headless"]), statistics.median(times["dashboard"])
    print(f"\nmedian s/step: headless {h:.2f}, dashboard {d:.2f}; overhead {100 * (d / h - 1):+.1f}% "
          f"({len(times['headless'])} and {len(times['dashboard'])} steps; overrides {args.overrides})")


if __name__ == "__main__":
    main()
