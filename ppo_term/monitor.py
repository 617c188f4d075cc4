"""Health checks over a run's metric history: the warnings a person watching PPO wants to see."""

from __future__ import annotations

from typing import Any


def check(history: list[dict[str, Any]], kl_target: float | None = None) -> dict[str, str]:
    """Warnings for the newest step, by kind, given every step's metrics so far (oldest first)."""
    if not history:
        return {}
    now, first = history[-1], history[0]
    out: dict[str, str] = {}
    if kl_target is not None and now.get("kl", 0.0) > 2 * kl_target:
        out["kl"] = f"KL {now['kl']:.2f} is above twice its target ({kl_target:g})"
    ent0, ent = first.get("entropy"), now.get("entropy")
    if len(history) >= 3 and ent0 and ent is not None and ent < 0.25 * ent0:
        out["entropy"] = f"entropy collapsed: {ent:.3f} from {ent0:.3f} at step {first['step']}"
    len0, length = first.get("response_length"), now.get("response_length")
    if (len(history) >= 3 and len0 and length is not None and length < 0.5 * len0
            and now.get("reward", 0.0) > first.get("reward", 0.0)):
        out["length"] = f"responses are collapsing ({length:.0f} tokens from {len0:.0f}) while reward rises: reward hacking?"
    return out


class Monitor:
    """Raises each kind of warning once when it starts, not again every step while it lasts."""

    def __init__(self, kl_target: float | None = None):
        self.kl_target = kl_target
        self.active: set[str] = set()

    def new_warnings(self, history: list[dict[str, Any]]) -> list[str]:
        now = check(history, self.kl_target)
        fresh = [msg for kind, msg in now.items() if kind not in self.active]
        self.active = set(now)
        return fresh
