#!/usr/bin/env python3
"""Real-terminal check of the dashboard: `ppo-term run` on the default model inside tmux.

    python bench/tmux_check.py [--out bench/results/tmux_check.txt]

Starts the run in a detached tmux session (120x36), reads the screen with capture-pane, presses
pause, raises the KL coefficient, resumes, then stops (confirming), and checks both the screen and
the run directory at each stage. Needs tmux (apt-get install tmux). Exits non-zero on a failed check.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SESSION = "ppo-term-check"


def tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], capture_output=True, text=True, check=True).stdout


def screen() -> str:
    return tmux("capture-pane", "-p", "-t", SESSION)


def wait_for(what: str, check, timeout: float = 600.0) -> str:
    t0 = time.time()
    while time.time() - t0 < timeout:
        shot = screen()
        if check(shot):
            return shot
        time.sleep(0.5)
    raise SystemExit(f"FAILED: timed out waiting for {what}\n{screen()}")


def metrics(run: Path) -> list[dict]:
    path = run / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("bench/results/tmux_check.txt"))
    args = ap.parse_args()
    if not shutil.which("tmux"):
        sys.exit("tmux is not installed (apt-get install tmux)")
    run = Path(tempfile.mkdtemp(prefix="tmux-check-")) / "run"
    cmd = (f"ppo-term run recipes/safety.toml --run-dir {run} --steps 20 "
           "--set ppo.batch_prompts=2 --set generation.n=2")
    subprocess.run(["tmux", "kill-session", "-t", SESSION], capture_output=True)
    tmux("new-session", "-d", "-s", SESSION, "-x", "120", "-y", "36", cmd)
    log: list[str] = []

    def shot(title: str, text: str) -> None:
        log.append(f"===== {title} =====\n{text}")
        print(f"ok: {title}")

    try:
        shot("dashboard up", wait_for("the dashboard", lambda s: "latest rollouts" in s and "Pause/Resume" in s))
        shot("first step on screen", wait_for("step 1", lambda s: "step 1/20" in s and len(metrics(run)) >= 1))
        tmux("send-keys", "-t", SESSION, "p")
        shot("pause pressed", wait_for("pausing", lambda s: "pausing..." in s or " paused " in s, 30))
        paused = wait_for("paused", lambda s: " paused " in s)
        shot("paused", paused)
        done = len(metrics(run))
        time.sleep(3)
        assert len(metrics(run)) == done, "a step ran while paused"
        tmux("send-keys", "-t", SESSION, "+")
        shot("kl raised", wait_for("kl_coef 0.0750", lambda s: "kl_coef 0.0750" in s, 30))
        wait_for("the KL change in events", lambda s: any(
            e.get("command") == "set_kl_coef" for e in map(json.loads, (run / "events.jsonl").read_text().splitlines())), 30)
        tmux("send-keys", "-t", SESSION, "p")
        wait_for("the next step", lambda s: len(metrics(run)) > done)
        applied, before = metrics(run)[done], metrics(run)[done - 1]
        assert abs(applied["kl_coef"] - 1.5 * before["kl_coef_next"]) < 1e-9, (applied, before)
        shot("resumed with the new kl_coef", screen())
        tmux("send-keys", "-t", SESSION, "q")
        shot("stop asked", wait_for("the confirmation", lambda s: "Stop the run?" in s, 30))
        tmux("send-keys", "-t", SESSION, "y")
        wait_for("the process to end", lambda s: json.loads((run / "state.json").read_text())["status"] != "running")
        state = json.loads((run / "state.json").read_text())
        assert state["status"] == "stopped", state
        ckpts = sorted(p.name for p in (run / "checkpoints").iterdir())
        assert ckpts and (run / "checkpoints" / ckpts[-1] / "adapter_model.safetensors").is_file()
        shot("after stop", screen())
        events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
        log.append(f"===== run directory =====\nstate: {state}\ncheckpoints: {ckpts}\n"
                   f"controls: {[(e['command'], e['step']) for e in events if e['kind'] == 'control']}\n"
                   f"kl_coef per step: {[m['kl_coef'] for m in metrics(run)]}")
        print("all checks passed")
    finally:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n\n".join(log) + "\n")
        subprocess.run(["tmux", "kill-session", "-t", SESSION], capture_output=True)


if __name__ == "__main__":
    main()
