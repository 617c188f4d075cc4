"""The dashboard driven by Textual's Pilot against a live engine on the tiny model."""

import asyncio
import json
import subprocess
import sys

import pytest

from ppo_term.engine.trainer import Trainer
from ppo_term.plugins.manager import build_plugins
from ppo_term.recipe import load_recipe
from ppo_term.runs import RunDir, read_jsonl
from ppo_term.tui.app import DashboardApp, WatchApp
from ppo_term.tui.screens.dialogs import KLInputScreen
from ppo_term.tui.screens.rating import RatingScreen
from ppo_term.tui.screens.sample import SampleScreen
from ppo_term.tui.state import RunView
from ppo_term.tui.widgets.header import RunHeader


def live_app(recipe, tmp_path):
    trainer = Trainer(recipe, plugins=build_plugins(load_entry_points=False), progress=False)
    rd = RunDir(tmp_path / "run")
    rd.create("", [], recipe.steps, "tiny")
    trainer.run_dir = rd

    def engine(listener, rater):
        trainer.listeners += [rd, listener]
        trainer.rater = rater
        trainer.setup()
        return trainer.run()

    view = RunView(name="tiny-run", model=recipe.model, total_steps=recipe.steps, kl_coef=recipe.kl.coef)
    return DashboardApp(view, controller=trainer.controls, engine=engine), trainer, rd


async def until(pilot, condition, timeout=60.0):
    for _ in range(int(timeout / 0.05)):
        if condition():
            return
        await pilot.pause(0.05)
    raise AssertionError("timed out waiting")


def header_text(app):
    return str(app.query_one(RunHeader).render())


def test_engine_does_not_import_textual():
    code = "import sys, ppo_term.engine.trainer, ppo_term.runs; print(any(m.startswith('textual') for m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


def test_pause_kl_save_and_stop_from_the_keyboard(write_recipe, tmp_path):
    app, trainer, rd = live_app(load_recipe(write_recipe(steps=500)), tmp_path)

    async def drive():
        async with app.run_test(size=(120, 40)) as pilot:
            await until(pilot, lambda: trainer.step >= 1)
            # pause: the header says so at once, the engine stops at the next phase boundary
            await pilot.press("p")
            # "pausing..." at once, unless the tiny engine already reached its next phase boundary
            assert "pausing..." in header_text(app) or trainer.phase == "paused"
            await until(pilot, lambda: trainer.phase == "paused")
            await until(pilot, lambda: "paused" in header_text(app))
            paused_at = trainer.step
            await pilot.pause(0.6)
            assert trainer.step == paused_at
            # raise KL by the factor, then type an exact value that fixes the schedule
            await pilot.press("plus")
            raised = app.view.kl_coef
            assert raised == pytest.approx(0.05 * 1.5)
            await pilot.press("k")
            assert isinstance(app.screen, KLInputScreen)
            app.screen.query_one("#kl-value").value = ""
            await pilot.press(*"0.2", "enter")
            await pilot.press("s")
            await pilot.press("p")
            await until(pilot, lambda: trainer.step >= paused_at + 2)
            # the controls are in the command palette too
            commands = [c.title for c in app.get_system_commands(app.screen)]
            assert {"Pause/Resume", "KL up", "KL down", "Set KL", "Save", "Stop"} <= set(commands)
            # stop: confirm, the engine saves and the app exits
            await pilot.press("q")
            await pilot.press("y")
            await until(pilot, lambda: app.engine_done.is_set())
            return paused_at

    paused_at = asyncio.run(drive())
    assert app.result.status == "stopped"
    rd.close()
    metrics = list(read_jsonl(rd.path / "metrics.jsonl"))
    assert metrics[paused_at]["kl_coef"] == pytest.approx(0.2)  # the first step after the change
    events = [e for e in read_jsonl(rd.path / "events.jsonl") if e["kind"] == "control"]
    kl_events = [e for e in events if e["command"] == "set_kl_coef"]
    assert [round(e["value"], 4) for e in kl_events] == [0.075, 0.2]
    assert all(e["effective_step"] == paused_at + 1 for e in kl_events)
    assert kl_events[1]["keep_schedule"] is True
    assert (rd.path / "checkpoints" / f"step-{paused_at}").is_dir()  # "save" while paused
    assert (rd.path / "checkpoints" / f"step-{trainer.step}").is_dir()  # stop saves first
    assert [e["command"] for e in events][-1] == "stop"


def test_sample_detail_and_rating_feed_the_reward(write_recipe, tmp_path):
    rewards = '[[rewards]]\nname = "human"\nmax_per_step = 1\ndefault = 0.0\ntimeout = 30\n'
    app, trainer, rd = live_app(load_recipe(write_recipe(steps=2, rewards=rewards)), tmp_path)

    async def drive():
        async with app.run_test(size=(120, 40)) as pilot:
            await until(pilot, lambda: isinstance(app.screen, RatingScreen))
            assert "Rate sample 1 of 1" in str(app.screen.query_one("#rating-title").render())
            await pilot.press("5")
            await until(pilot, lambda: isinstance(app.screen, RatingScreen))
            await pilot.press("s")
            await until(pilot, lambda: app.engine_done.is_set() and app.view.rollouts)
            await pilot.pause(0.2)
            app.query_one("#rollouts").focus()
            await pilot.press("enter")
            assert isinstance(app.screen, SampleScreen)
            await pilot.press("escape")
            assert not isinstance(app.screen, SampleScreen)

    asyncio.run(drive())
    rd.close()
    rollouts = list(read_jsonl(rd.path / "rollouts.jsonl"))
    assert rollouts[0]["components"]["human"] == 1.0  # key 5 on a 1-5 scale
    assert [r["components"]["human"] for r in rollouts if r["step"] == 2][0] == 0.0  # skipped
    ratings = [json.loads(line) for line in (rd.path / "ratings.jsonl").read_text().splitlines()]
    assert [(r["step"], r["key"]) for r in ratings] == [(1, 5), (2, None)]


def test_quitting_the_app_stops_the_engine(write_recipe, tmp_path):
    app, trainer, rd = live_app(load_recipe(write_recipe(steps=10_000)), tmp_path)

    async def drive():
        async with app.run_test(size=(100, 30)) as pilot:
            await until(pilot, lambda: trainer.step >= 1)
            await app.action_quit()

    asyncio.run(drive())
    assert app.engine_done.wait(60)
    assert app.result.status == "stopped" and app.result.steps_done < 10_000


def test_watch_steers_a_headless_run_through_the_control_channel(write_recipe, tmp_path):
    from ppo_term.control_channel import FileController
    from ppo_term.runs import RunFollower

    run_dir = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "ppo_term", "run", str(write_recipe(steps=10_000)), "--headless",
                             "--run-dir", str(run_dir)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for line in proc.stdout:
            if line.startswith("step    1"):
                break
        assert oct((run_dir / "control.jsonl").stat().st_mode & 0o777) == "0o600"
        view = RunView(name="run", read_only=False)
        app = WatchApp(view, controller=FileController(run_dir), follower=RunFollower(run_dir))

        async def drive():
            async with app.run_test(size=(120, 40)) as pilot:
                await until(pilot, lambda: app.view.step >= 1 and app.view.metrics)
                await pilot.press("p")
                await until(pilot, lambda: app.view.phase == "paused", timeout=60)
                await pilot.press("minus")
                await pilot.press("x", "y")  # stop the run from the viewer
                await pilot.press("q")  # the viewer quits; the run is already stopping on its own

        asyncio.run(drive())
        proc.wait(timeout=120)
    finally:
        proc.kill()
    state = json.loads((run_dir / "state.json").read_text())
    assert state["status"] == "stopped"
    commands = [e["command"] for e in read_jsonl(run_dir / "events.jsonl") if e["kind"] == "control"]
    assert commands[:3] == ["pause", "set_kl_coef", "stop"]


def test_rollouts_show_a_given_opening_apart_from_what_the_model_wrote():
    from ppo_term.tui.widgets.rollouts import response_text

    opened = response_text({"response": "I'm sorry, but as a chatbot I can't", "opening": "I'm sorry, but"})
    assert opened.plain == "I'm sorry, but as a chatbot I can't"
    styled = [(span.start, span.end, str(span.style)) for span in opened.spans]
    assert styled == [(0, len("I'm sorry, but"), "italic cyan")]
    assert response_text({"response": "Sure, here it is", "opening": None}).spans == []
    assert response_text({"response": "Sure, here it is"}).spans == []  # rows from before openings
