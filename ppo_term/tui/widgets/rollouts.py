"""The latest rollouts: prompt, response start (an opening it was given in italics, a greedy
answer marked), reward, KL."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.widgets import DataTable


def _short(text: str, n: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def response_text(sample: dict[str, Any], n: int = 60) -> Text:
    """The response's start; an opening the sampler gave it (generation.openings) in italics, and
    a prompt's greedy answer (generation.greedy) marked "=" in front."""
    if sample.get("greedy"):
        return Text("= ", style="bold magenta") + Text(_short(sample["response"], n - 2))
    text = Text(_short(sample["response"], n))
    opening = sample.get("opening")
    if opening and text.plain.startswith(" ".join(opening.split())):
        text.stylize("italic cyan", 0, len(" ".join(opening.split())))
    return text


class RolloutsTable(DataTable):
    def on_mount(self) -> None:
        self.cursor_type = "row"
        self.zebra_stripes = True
        self.add_columns("reward", "KL", "prompt", "response")
        self.samples: list[dict[str, Any]] = []

    def show(self, samples: list[dict[str, Any]]) -> None:
        self.samples = samples
        row = self.cursor_row
        self.clear()
        for i, s in enumerate(samples):
            reward = Text(f"{s['reward']:+.2f}", style="green" if s["reward"] > 0 else "red")
            self.add_row(reward, f"{s['kl']:.2f}", _short(s["prompt"], 30), response_text(s), key=str(i))
        if samples:
            self.move_cursor(row=min(row, len(samples) - 1))
