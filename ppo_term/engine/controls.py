"""Thread-safe controls that the engine honours between phases: pause, kl_coef, save, stop."""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Command:
    name: str  # "pause" | "resume" | "set_kl_coef" | "save" | "stop"
    args: dict[str, Any]


class Controls:
    """Call these from any thread; the trainer applies them at the next phase boundary."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: deque[Command] = deque()
        self._running = threading.Event()
        self._running.set()
        self._stop = threading.Event()

    # ---- the API a dashboard or a control channel calls ----
    def pause(self) -> None:
        self._running.clear()
        self._push("pause")

    def resume(self) -> None:
        self._push("resume")
        self._running.set()

    def set_kl_coef(self, value: float, keep_schedule: bool = True) -> None:
        if not value >= 0:
            raise ValueError(f"kl_coef must be >= 0, got {value}")
        self._push("set_kl_coef", value=float(value), keep_schedule=keep_schedule)

    def save(self) -> None:
        self._push("save")

    def stop(self) -> None:
        self._push("stop")
        self._stop.set()
        self._running.set()  # a paused run must wake up to stop

    # ---- what the trainer reads ----
    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    def drain(self) -> list[Command]:
        with self._lock:
            commands = list(self._pending)
            self._pending.clear()
        return commands

    def wait_while_paused(self, timeout: float | None = None) -> bool:
        """Block until resumed or stopped; True when running again."""
        return self._running.wait(timeout)

    def _push(self, name: str, **args: Any) -> None:
        with self._lock:
            self._pending.append(Command(name, args))
