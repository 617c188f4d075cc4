"""A local control channel: viewers append commands to the run directory's control.jsonl
(created readable and writable by its owner only); the running engine polls it and applies them."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from ppo_term.engine.controls import Controls

CONTROL_FILE = "control.jsonl"
COMMANDS = {"pause", "resume", "set_kl_coef", "save", "stop"}


def send(run_dir: Path | str, command: str, **args: Any) -> None:
    """Ask the engine running in `run_dir` to apply a command at its next phase boundary."""
    if command not in COMMANDS:
        raise ValueError(f"unknown command {command!r}; expected one of {sorted(COMMANDS)}")
    path = Path(run_dir) / CONTROL_FILE
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "a") as f:
        f.write(json.dumps({"command": command, "time": time.time(), **args}) + "\n")


class ControlFileWatcher:
    """Polls control.jsonl in a daemon thread and forwards new commands to `controls`."""

    def __init__(self, run_dir: Path | str, controls: Controls, interval: float = 0.2):
        self.path = Path(run_dir) / CONTROL_FILE
        self.controls, self.interval = controls, interval
        self.offset = 0
        self._stop = threading.Event()
        # created now, owner-only, so nobody else can steer the run
        os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))
        os.chmod(self.path, 0o600)
        self.offset = self.path.stat().st_size
        self.thread = threading.Thread(target=self._loop, name="ppo-term-control", daemon=True)

    def start(self) -> "ControlFileWatcher":
        self.thread.start()
        return self

    def close(self) -> None:
        self._stop.set()

    def poll(self) -> int:
        """Apply the commands appended since the last poll; returns how many."""
        with self.path.open() as f:
            f.seek(self.offset)
            data = f.read()
        complete = data[: data.rfind("\n") + 1]  # leave a half-written line for the next poll
        self.offset += len(complete.encode())
        n = 0
        for line in complete.splitlines():
            try:
                cmd = json.loads(line)
            except json.JSONDecodeError:
                continue
            n += self._apply(cmd)
        return n

    def _apply(self, cmd: dict[str, Any]) -> int:
        name = cmd.get("command")
        if name == "set_kl_coef":
            self.controls.set_kl_coef(float(cmd["value"]), keep_schedule=bool(cmd.get("keep_schedule", True)))
        elif name in ("pause", "resume", "save", "stop"):
            getattr(self.controls, name)()
        else:
            return 0
        return 1

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.poll()
            except (OSError, ValueError):
                continue


class FileController:
    """The `Controls` API for a run in another process: each call appends to its control file."""

    def __init__(self, run_dir: Path | str):
        self.run_dir = Path(run_dir)

    def pause(self) -> None:
        send(self.run_dir, "pause")

    def resume(self) -> None:
        send(self.run_dir, "resume")

    def set_kl_coef(self, value: float, keep_schedule: bool = True) -> None:
        send(self.run_dir, "set_kl_coef", value=float(value), keep_schedule=keep_schedule)

    def save(self) -> None:
        send(self.run_dir, "save")

    def stop(self) -> None:
        send(self.run_dir, "stop")
