"""The run header: name, model, device, step / total, phase, elapsed and ETA."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from ppo_term.tui.state import RunView, fmt_seconds

PHASE_STYLE = {"paused": "bold black on yellow", "done": "bold black on green", "rating": "bold black on magenta"}


def header_text(view: RunView, now: float | None = None) -> Text:
    phase = view.pending or (view.status if view.phase == "done" else view.phase)
    return Text.assemble(
        (f" {view.name} ", "bold"), "  ",
        (view.model, "cyan"), f"/{view.device}  ",
        ("step ", "dim"), (f"{view.step}/{view.total_steps or '?'}", "bold"), "  ",
        (f" {phase} ", PHASE_STYLE.get(view.phase if not view.pending else "paused", "bold reverse")), "  ",
        ("kl_coef ", "dim"), f"{view.kl_coef:.4f}" if view.kl_coef is not None else "-",
        ("" if view.keep_schedule else " (fixed)", "yellow"), "  ",
        fmt_seconds(view.elapsed(now)), "  ",
        ("ETA ", "dim"), fmt_seconds(view.eta()),
        ("  read-only" if view.read_only else "", "yellow"),
    )


class RunHeader(Static):
    def show(self, view: RunView, now: float | None = None) -> None:
        self.update(header_text(view, now))
