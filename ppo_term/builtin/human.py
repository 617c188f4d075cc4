"""The `human` reward: a person rates samples by number key; ratings are saved in the run directory.

Headless, the terminal asks (single key presses on a TTY, lines on a pipe); the dashboard gives it
a screen by passing its own `Rater` through the run context. Skipped or timed-out samples get the
recipe's default score.
"""

from __future__ import annotations

import json
import os
import select
import sys
import time
from typing import IO, Protocol, Sequence

from pydantic import Field, model_validator

from ppo_term.plugins.hookspecs import hookimpl
from ppo_term.plugins.types import PluginParams, Reward, Sample


class Rater(Protocol):
    def rate(self, sample: Sample, index: int, total: int, scale: int, timeout: float) -> int | None:
        """A key from 1..scale, or None for skip / timeout."""


class TerminalRater:
    """Asks in the terminal: prints the sample, reads one key (TTY) or one line (pipe)."""

    def __init__(self, stream: IO[str] | None = None, out: IO[str] | None = None):
        self.stream = stream or sys.stdin
        self.out = out or sys.stderr

    def rate(self, sample: Sample, index: int, total: int, scale: int, timeout: float) -> int | None:
        self.out.write(
            f"\n--- rate sample {index + 1}/{total} ---\nprompt:   {sample.prompt}\nresponse: {sample.response}\n"
            f"score 1-{scale}, s = skip ({timeout:.0f}s, then the default): "
        )
        self.out.flush()
        answer = self._read(timeout)
        self.out.write(f"{answer or 'skipped'}\n")
        if answer and answer.isdigit() and 1 <= int(answer) <= scale:
            return int(answer)
        return None

    def _read(self, timeout: float) -> str | None:
        try:
            fd = self.stream.fileno()
        except (AttributeError, OSError, ValueError):
            return self.stream.readline().strip() or None  # an in-memory stream: no waiting
        if os.isatty(fd):
            return self._read_key(fd, timeout)
        return self._read_line(fd, timeout)

    @staticmethod
    def _read_line(fd: int, timeout: float) -> str | None:
        """One line from a pipe, byte by byte (a buffered reader would swallow the next answers)."""
        deadline, chars = time.monotonic() + timeout, b""
        while not chars.endswith(b"\n"):
            left = deadline - time.monotonic()
            ready, _, _ = select.select([fd], [], [], max(left, 0))
            if not ready:
                return None
            byte = os.read(fd, 1)
            if not byte:
                break  # end of input
            chars += byte
        return chars.decode(errors="ignore").strip() or None

    @staticmethod
    def _read_key(fd: int, timeout: float) -> str | None:
        import termios
        import tty

        old = termios.tcgetattr(fd)
        try:
            tty.setcbreak(fd)
            ready, _, _ = select.select([fd], [], [], timeout)
            return os.read(fd, 1).decode(errors="ignore") if ready else None
        finally:
            termios.tcsetattr(fd, termios.TCSADRAIN, old)


class HumanReward(Reward):
    """A person scores samples 1..scale, mapped linearly onto [min_score, max_score]."""

    name = "human"
    interactive = True

    class Params(PluginParams):
        scale: int = Field(5, ge=2, le=9, description="keys 1..scale")
        min_score: float = -1.0
        max_score: float = 1.0
        default: float = Field(0.0, description="score for skipped, timed-out and unrated samples")
        timeout: float = Field(120.0, gt=0, description="seconds to wait for each rating")
        max_per_step: int = Field(4, ge=0, description="samples rated per step; the rest get the default")

        @model_validator(mode="after")
        def _range(self) -> "HumanReward.Params":
            if self.max_score <= self.min_score:
                raise ValueError("max_score must be > min_score")
            return self

    def setup(self) -> None:
        self.rater: Rater = self.context.rater or TerminalRater()

    def score(self, samples: Sequence[Sample]) -> list[float]:
        p = self.params
        scores = []
        asked = min(p.max_per_step, len(samples))
        for i, sample in enumerate(samples):
            key = self.rater.rate(sample, i, asked, p.scale, p.timeout) if i < asked else None
            value = p.default if key is None else p.min_score + (key - 1) * (p.max_score - p.min_score) / (p.scale - 1)
            scores.append(value)
            if i < asked:
                self._save(sample, key, value)
        return scores

    def _save(self, sample: Sample, key: int | None, value: float) -> None:
        run_dir = self.context.run_dir
        if run_dir is None:
            return
        row = {"step": self.context.step, "time": time.time(), "prompt": sample.prompt, "response": sample.response,
               "key": key, "score": value, "skipped": key is None}
        with open(os.path.join(run_dir, "ratings.jsonl"), "a", encoding="utf-8") as f:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


@hookimpl
def register_rewards(register):
    register(HumanReward)
