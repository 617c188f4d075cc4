"""The dashboard's rater for the `human` reward: the engine thread asks, a screen answers."""

from __future__ import annotations

import queue
from typing import Any


class DashboardRater:
    def __init__(self, app: Any):
        self.app = app

    def rate(self, sample, index: int, total: int, scale: int, timeout: float) -> int | None:
        """Called from the engine thread: show the rating screen, wait for a key (or the timeout)."""
        answers: queue.Queue[int | None] = queue.Queue()
        self.app.call_from_thread(self.app.ask_rating, sample, index, total, scale, timeout, answers.put)
        try:
            return answers.get(timeout=timeout + 2)
        except queue.Empty:
            return None
