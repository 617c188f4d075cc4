"""What the dashboard shows, folded from engine events (no widgets here, easy to test)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from ppo_term.engine.events import Event


@dataclass
class RunView:
    name: str
    model: str = "?"
    device: str = "?"
    total_steps: int = 0
    step: int = 0
    phase: str = "starting"
    pending: str | None = None  # "pausing..." / "stopping..." until the engine confirms
    started: float = field(default_factory=time.time)
    ended: float | None = None
    status: str = "running"
    metrics: list[dict[str, Any]] = field(default_factory=list)
    rollouts: list[dict[str, Any]] = field(default_factory=list)
    kl_coef: float | None = None
    keep_schedule: bool = True
    read_only: bool = False

    def apply(self, event: Event) -> None:
        d = event.data
        if event.kind == "start":
            self.model, self.device = d.get("model", self.model), d.get("device", self.device)
            if d.get("precision"):
                self.device = f"{self.device} {d['precision']}"
        elif event.kind == "phase":
            self.phase = d["phase"]
            if self.pending == "pausing..." and self.phase == "paused":
                self.pending = None
            if self.pending == "resuming..." and self.phase != "paused":
                self.pending = None
        elif event.kind == "metrics":
            self.metrics.append(d)
            self.step = event.step
            self.kl_coef = d.get("kl_coef_next", d.get("kl_coef"))
        elif event.kind == "rollouts":
            self.rollouts = list(d["samples"])
        elif event.kind == "control" and d.get("command") == "set_kl_coef":
            self.kl_coef = d["value"]
        elif event.kind == "end":
            self.phase, self.status, self.ended = "done", d.get("status", "finished"), event.time
            self.pending = None
        elif event.kind == "state":
            self.total_steps = d.get("total_steps", self.total_steps)
            self.started = d.get("started", self.started)
            self.step = max(self.step, d.get("steps_done", 0))
            self.model = d.get("model", self.model)
            if d.get("phase"):
                self.phase = d["phase"]
            if d.get("status") and d["status"] != "running":
                self.status, self.phase = d["status"], "done"
                self.ended = d.get("updated", self.ended)

    def elapsed(self, now: float | None = None) -> float:
        return (self.ended or now or time.time()) - self.started

    def eta(self) -> float | None:
        """Seconds left at the median step time so far."""
        times = sorted(m["time/step"] for m in self.metrics if "time/step" in m)
        if not times or self.status != "running":
            return None
        return times[len(times) // 2] * max(self.total_steps - self.step, 0)

    def series(self, key: str) -> tuple[list[int], list[float]]:
        rows = [m for m in self.metrics if key in m]
        return [m["step"] for m in rows], [float(m[key]) for m in rows]

    def reward_components(self) -> list[str]:
        keys = []
        for m in self.metrics:
            keys += [k for k in m if k.startswith("reward/") and k not in keys]
        return keys


def fmt_seconds(s: float | None) -> str:
    if s is None:
        return "-"
    s = int(s)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"
