"""`DashboardApp`: the live view of a PPO run, and its controls.

Fed by engine events, either from a trainer running in a thread worker (`ppo-term run`) or from a
run directory that another process writes (`ppo-term watch`). Controls go to the engine's
`Controls` directly, or through the run directory's control channel.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal
from textual.message import Message
from textual.widgets import DataTable, Footer, RichLog

from ppo_term.engine.events import Event
from ppo_term.tui.rater import DashboardRater
from ppo_term.tui.screens.dialogs import ConfirmScreen, KLInputScreen
from ppo_term.tui.screens.rating import RatingScreen
from ppo_term.tui.screens.sample import SampleScreen
from ppo_term.tui.state import RunView
from ppo_term.tui.widgets.curves import PANELS, Curve
from ppo_term.tui.widgets.header import RunHeader
from ppo_term.tui.widgets.rollouts import RolloutsTable

LOGGED = {"start", "control", "checkpoint", "warning", "error", "end"}


class EngineEvent(Message):
    """An engine event, delivered to the app's message loop."""

    def __init__(self, event: Event):
        super().__init__()
        self.event = event


class DashboardApp(App):
    CSS_PATH = "app.tcss"
    TITLE = "ppo-term"
    BINDINGS = [
        Binding("p", "toggle_pause", "Pause/Resume"),
        Binding("plus,equals_sign", "kl_up", "KL up"),
        Binding("minus", "kl_down", "KL down"),
        Binding("k", "kl_set", "Set KL"),
        Binding("f", "toggle_schedule", "Fix/free KL"),
        Binding("s", "save", "Save"),
        Binding("enter", "open_sample", "Sample", show=False),
        Binding("q", "stop", "Stop"),
    ]

    def __init__(self, view: RunView, controller: Any = None, engine: Callable | None = None,
                 follower: Any = None, kl_factor: float = 1.5, watch: bool = False):
        super().__init__()
        self.view, self.controller, self.engine, self.follower = view, controller, engine, follower
        self.kl_factor, self.watch = kl_factor, watch
        self.engine_done = threading.Event()
        self.stopping = False
        self.result: Any = None
        self.error: BaseException | None = None

    def get_system_commands(self, screen):
        """The run's controls in the command palette (ctrl+p), beside Textual's own."""
        from textual.app import SystemCommand

        yield from super().get_system_commands(screen)
        for binding in self.BINDINGS:
            if binding.show and binding.description:
                yield SystemCommand(binding.description, f"key {binding.key.split(',')[0]}",
                                    getattr(self, f"action_{binding.action}"))

    # ---- layout ----
    def compose(self) -> ComposeResult:
        yield RunHeader(id="header")
        with Grid(id="curves"):
            for title, keys in PANELS.items():
                yield Curve(title, keys)
        with Horizontal(id="bottom"):
            yield RolloutsTable(id="rollouts")
            yield RichLog(id="log", wrap=True, markup=True, max_lines=500, min_width=1)
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#rollouts").border_title = "latest rollouts (enter: full text)"
        self.query_one("#log").border_title = "events"
        self.refresh_header()
        self.set_interval(1.0, self.refresh_header)
        if self.engine is not None:
            self.run_worker(self._run_engine, thread=True, name="engine", exit_on_error=False)
        if self.follower is not None:
            self._poll_follower()
            self.set_interval(0.5, self._poll_follower)

    # ---- events in ----
    def _run_engine(self) -> None:
        """The thread worker: the engine never touches a widget, it only posts events."""
        try:
            self.result = self.engine(self.post_event, DashboardRater(self))
        except BaseException as e:  # shown in the log; the CLI reports it after the app exits
            self.error = e
            self.post_event(Event("error", self.view.step, {"message": f"{type(e).__name__}: {e}"}))
        finally:
            self.engine_done.set()

    def post_event(self, event: Event) -> None:
        self.post_message(EngineEvent(event))

    def _poll_follower(self) -> None:
        for event in self.follower.poll():
            self.handle(event)

    def on_engine_event(self, message: EngineEvent) -> None:
        self.handle(message.event)

    def handle(self, event: Event) -> None:
        self.view.apply(event)
        if event.kind == "metrics":
            for curve in self.query(Curve):
                curve.show(self.view)
        elif event.kind == "rollouts":
            self.query_one(RolloutsTable).show(self.view.rollouts)
        if event.kind in LOGGED:
            self.log_event(event)
        self.refresh_header()
        if event.kind == "end" and self.stopping and not self.watch:
            self.exit()

    def log_event(self, event: Event) -> None:
        d, log = event.data, self.query_one("#log", RichLog)
        stamp = time.strftime("%H:%M:%S", time.localtime(event.time))
        if event.kind == "control" and d["command"] == "set_kl_coef":
            how = "schedule keeps running" if d.get("keep_schedule", True) else "schedule fixed"
            text = f"[cyan]kl_coef[/] -> {d['value']:.4g} ({how}) from step {d.get('effective_step', event.step + 1)}"
        elif event.kind == "control":
            text = f"[cyan]{d['command']}[/] applied after step {event.step}"
        elif event.kind == "checkpoint":
            text = f"[green]checkpoint[/] {d['path']} ({d['reason']})"
        elif event.kind == "warning":
            text = f"[yellow]warning[/] {d['message']}"
        elif event.kind == "error":
            text = f"[bold red]error[/] {d['message']}"
        elif event.kind == "start":
            text = f"model {d.get('model')} on {d.get('device')}, {d.get('trainable_params', 0):,} trainable parameters"
        else:
            text = f"run {d.get('status')} after {d.get('steps_done')} steps"
        log.write(f"[dim]{stamp}[/] step {event.step}: {text}")

    def refresh_header(self) -> None:
        self.query_one(RunHeader).show(self.view)

    # ---- controls out ----
    def _can_control(self) -> bool:
        if self.controller is None or self.view.status != "running":
            self.notify("read-only: this run is not running", severity="warning")
            return False
        return True

    def action_toggle_pause(self) -> None:
        if not self._can_control():
            return
        if self.view.phase == "paused" or self.view.pending == "pausing...":
            self.controller.resume()
            self.view.pending = "resuming..."
        else:
            self.controller.pause()
            self.view.pending = "pausing..."
        self.refresh_header()

    def _set_kl(self, value: float, keep: bool) -> None:
        self.controller.set_kl_coef(value, keep_schedule=keep)
        self.view.kl_coef, self.view.keep_schedule = value, keep
        self.query_one("#log", RichLog).write(
            f"kl_coef -> {value:.4g} from step {self.view.step + 1}{'' if keep else ' (schedule fixed)'}")
        self.refresh_header()

    def _scale_kl(self, factor: float) -> None:
        if not self._can_control():
            return
        if self.view.kl_coef is None:
            self.notify("kl_coef is not known yet", severity="warning")
            return
        self._set_kl(self.view.kl_coef * factor, self.view.keep_schedule)

    def action_kl_up(self) -> None:
        self._scale_kl(self.kl_factor)

    def action_kl_down(self) -> None:
        self._scale_kl(1 / self.kl_factor)

    def action_kl_set(self) -> None:
        if not self._can_control():
            return

        def done(answer: tuple[float, bool] | None) -> None:
            if answer is not None:
                self._set_kl(*answer)

        self.push_screen(KLInputScreen(self.view.kl_coef, self.view.keep_schedule), done)

    def action_toggle_schedule(self) -> None:
        """Whether KL changes keep the schedule running from the new value or fix kl_coef there."""
        self.view.keep_schedule = not self.view.keep_schedule
        self.notify("KL changes now " + ("keep the schedule running" if self.view.keep_schedule else "fix kl_coef"))
        self.refresh_header()

    def action_save(self) -> None:
        if self._can_control():
            self.controller.save()
            self.query_one("#log", RichLog).write(f"save requested after step {self.view.step}")

    def action_stop(self) -> None:
        if not self._can_control():
            if not self.watch:
                self.exit()
            return

        def done(yes: bool | None) -> None:
            if yes:
                self.controller.stop()
                self.stopping = True
                self.view.pending = "stopping..."
                self.refresh_header()

        self.push_screen(ConfirmScreen("Stop the run? It saves a checkpoint first."), done)

    def action_open_sample(self) -> None:
        table = self.query_one(RolloutsTable)
        if table.samples and 0 <= table.cursor_row < len(table.samples):
            self.push_screen(SampleScreen(table.samples[table.cursor_row]))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_open_sample()

    def ask_rating(self, sample, index: int, total: int, scale: int, timeout: float, answer) -> None:
        self.push_screen(RatingScreen(sample, index, total, scale, timeout, answer))

    async def action_quit(self) -> None:
        """Quitting the live dashboard stops the run cleanly (it saves first); a viewer just leaves."""
        if self.engine is not None and not self.engine_done.is_set():
            self.controller.stop()
        self.exit()


class WatchApp(DashboardApp):
    """The dashboard on a run another process runs: `q` leaves the viewer, `x` stops the run."""

    BINDINGS = [b for b in DashboardApp.BINDINGS if b.action != "stop"] + [
        Binding("x", "stop", "Stop run"),
        Binding("q", "quit", "Quit viewer"),
    ]

    def __init__(self, view: RunView, controller: Any = None, follower: Any = None, kl_factor: float = 1.5):
        super().__init__(view, controller=controller, follower=follower, kl_factor=kl_factor, watch=True)
