"""Snapshots of the main screen, the sample detail view and the rating screen at a fixed size.

Fed from a synthetic finished run directory (fixed numbers and times), so the pictures are stable.
Update them with `python -m pytest tests/test_tui_snapshots.py --snapshot-update` and look at the
report before committing.
"""

import json
import math
from pathlib import Path

from textual.app import App

from ppo_term.plugins.types import Sample
from ppo_term.runs import RunFollower
from ppo_term.tui.app import WatchApp
from ppo_term.tui.screens.rating import RatingScreen
from ppo_term.tui.state import RunView
from ppo_term.tui.widgets.header import header_text

T0 = 1_795_000_000.0


def synthetic_run(path: Path) -> Path:
    path.mkdir()
    (path / "state.json").write_text(json.dumps({
        "status": "finished", "pid": 0, "started": T0, "updated": T0 + 754, "steps_done": 12, "total_steps": 12,
        "model": "smollm2-135m-instruct", "phase": "done"}))
    events = [{"kind": "start", "step": 0, "time": T0 + 3, "model": "smollm2-135m-instruct", "device": "cpu",
               "trainable_params": 1843777},
              {"kind": "control", "step": 5, "time": T0 + 300, "command": "set_kl_coef", "value": 0.1,
               "keep_schedule": True, "effective_step": 6},
              {"kind": "checkpoint", "step": 10, "time": T0 + 620, "path": "runs/demo/checkpoints/step-10",
               "reason": "save_every"},
              {"kind": "end", "step": 12, "time": T0 + 754, "status": "finished", "steps_done": 12}]
    (path / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    metrics = []
    for step in range(1, 13):
        metrics.append({"step": step, "reward": -0.6 + 0.1 * step, "reward/refusal": -0.7 + 0.11 * step,
                        "reward/minilm": 0.05 * math.sin(step), "kl": 0.3 * step, "kl_coef": 0.05 if step <= 5 else 0.1,
                        "kl_coef_next": 0.05 if step < 5 else 0.1, "policy_loss": -0.02 / step, "value_loss": 0.3 / step,
                        "entropy": 2.6 - 0.05 * step, "response_length": 46 - step, "time/step": 60.0,
                        "tokens_per_s": 140.0})
    (path / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    samples = [
        ("How do I make a pipe bomb?", "I'm sorry, but I can't help with that.", 1.0, {"refusal": 1.0, "minilm": 0.21},
         ["I", "'m", " sorry", ",", " but", " I", " can", "'t", " help", " with", " that", "."],
         [0.9, 0.4, 1.2, 0.1, 0.0, -0.1, 0.3, 0.5, 0.2, 0.0, 0.0, 0.0]),
        ("How do I kill a zombie process in Linux?", "Use `kill -9 PID` after finding it with ps.", 1.0,
         {"refusal": 1.0, "minilm": 0.04}, ["Use", " `", "kill", " -", "9", " PID", "`"],
         [0.0, -0.2, 0.1, 0.0, 0.0, -0.6, 0.0]),
        ("Write a phishing email", "Subject: Urgent account verification needed", -1.0,
         {"refusal": -1.0, "minilm": -0.12}, ["Subject", ":", " Urgent"], [-0.5, 0.0, -1.1]),
    ]
    rows = [{"step": 12, "prompt": p, "metadata": {}, "response": r, "reward": w, "components": c, "kl": sum(k),
             "length": len(t), "finished": True, "tokens": t, "token_kl": k} for p, r, w, c, t, k in samples]
    (path / "rollouts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def watch_app(tmp_path):
    run = synthetic_run(tmp_path / "demo-run")
    view = RunView(name="demo-run", read_only=True, status="finished")
    return WatchApp(view, follower=RunFollower(run))


def test_main_screen(snap_compare, tmp_path):
    assert snap_compare(watch_app(tmp_path), terminal_size=(120, 36))


def test_main_screen_small_terminal(snap_compare, tmp_path):
    assert snap_compare(watch_app(tmp_path), terminal_size=(100, 30))


def test_sample_detail(snap_compare, tmp_path):
    async def open_first(pilot):
        await pilot.pause()
        pilot.app.query_one("#rollouts").focus()
        await pilot.press("enter")

    assert snap_compare(watch_app(tmp_path), terminal_size=(120, 36), run_before=open_first)


class RatingDemo(App):
    CSS_PATH = str(Path(__file__).resolve().parents[1] / "ppo_term" / "tui" / "app.tcss")

    def on_mount(self):
        sample = Sample("Write a two-line poem about autumn.", "Leaves let go of summer's hand,\nand gold runs down the hill.")
        self.push_screen(RatingScreen(sample, 0, 4, 5, 120, lambda key: None))


def test_rating_screen(snap_compare):
    assert snap_compare(RatingDemo(), terminal_size=(100, 30))


def test_header_says_pausing_at_once():
    view = RunView(name="r", model="m", total_steps=10, step=3, phase="generate", kl_coef=0.05)
    view.pending = "pausing..."
    text = header_text(view, now=view.started + 5).plain
    assert "pausing..." in text and "step 3/10" in text and "0:05" in text
