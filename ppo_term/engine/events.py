"""Events the engine emits; the run directory, the progress bar and the dashboard listen."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

# kinds: "start", "phase", "metrics", "rollouts", "checkpoint", "control", "warning", "error", "end"


@dataclass(frozen=True)
class Event:
    kind: str
    step: int
    data: dict[str, Any] = field(default_factory=dict)
    time: float = field(default_factory=time.time)


Listener = Callable[[Event], None]
