"""The rating screen for the `human` reward: a number key scores the sample, s skips."""

from __future__ import annotations

from typing import Any, Callable

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Footer, Static


class RatingScreen(ModalScreen[None]):
    BINDINGS = [Binding("s", "skip", "Skip")]

    def __init__(self, sample: Any, index: int, total: int, scale: int, timeout: float,
                 answer: Callable[[int | None], None]):
        super().__init__()
        self.sample, self.index, self.total, self.scale = sample, index, total, scale
        self.left, self.answer = int(timeout), answer
        self.answered = False

    def compose(self) -> ComposeResult:
        with Vertical(id="rating-box"):
            yield Static(Text(f"Rate sample {self.index + 1} of {self.total}", style="bold"), id="rating-title")
            yield Static(Text.assemble(("prompt  ", "dim"), self.sample.prompt))
            yield Static(Text.assemble(("response  ", "dim"), self.sample.response), id="rating-response")
            yield Static(f"keys 1-{self.scale} score it (1 worst, {self.scale} best), s skips", id="rating-help")
            yield Static(id="rating-timer")
        yield Footer()

    def on_mount(self) -> None:
        self._tick()
        self.set_interval(1.0, self._tick)

    def _tick(self) -> None:
        if self.left <= 0:
            self._finish(None)
            return
        self.query_one("#rating-timer", Static).update(f"{self.left}s left, then the recipe's default score")
        self.left -= 1

    def on_key(self, event) -> None:
        if event.character and event.character.isdigit() and 1 <= int(event.character) <= self.scale:
            event.stop()
            self._finish(int(event.character))

    def action_skip(self) -> None:
        self._finish(None)

    def _finish(self, key: int | None) -> None:
        if not self.answered:
            self.answered = True
            self.answer(key)
            self.dismiss()
