"""The run directory: the recipe as run, metrics/rollouts/events JSONL, state and checkpoints.

Every line is flushed as it is written and checkpoints appear atomically (temp dir + rename), so
nothing a run wrote is lost when it fails or is killed.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterator

from ppo_term.engine.events import Event

METRICS, ROLLOUTS, EVENTS, STATE = "metrics.jsonl", "rollouts.jsonl", "events.jsonl", "state.json"


def new_run_dir(recipe_name: str, root: Path | str = "runs") -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    path = Path(root) / f"{recipe_name}-{stamp}"
    n = 1
    while path.exists():
        n += 1
        path = Path(root) / f"{recipe_name}-{stamp}-{n}"
    return path


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """Rows of a JSONL file; a torn last line (a killed writer) is skipped."""
    if not path.is_file():
        return
    with path.open(encoding="utf-8") as f:
        for line in f:
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue


class RunDir:
    """Writes one run's files; also an event listener for the engine."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.checkpoints = self.path / "checkpoints"
        self._files: dict[str, Any] = {}

    def create(self, recipe_toml: str, prompts: list[dict[str, Any]], total_steps: int, model: str,
               eval_prompts: list[dict[str, Any]] | None = None) -> None:
        if (self.path / STATE).exists():
            raise FileExistsError(f"{self.path} already holds a run; choose another --run-dir")
        self.path.mkdir(parents=True, exist_ok=True)
        self.checkpoints.mkdir(exist_ok=True)
        (self.path / "recipe.toml").write_text(recipe_toml)
        for name, rows in (("prompts.jsonl", prompts), ("eval_prompts.jsonl", eval_prompts)):
            if rows:
                with (self.path / name).open("w") as f:
                    for row in rows:
                        f.write(json.dumps(row) + "\n")
        self.write_state(status="running", pid=os.getpid(), started=time.time(), steps_done=0,
                         total_steps=total_steps, model=model)

    # ---- state.json ----
    def read_state(self) -> dict[str, Any]:
        try:
            return json.loads((self.path / STATE).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def write_state(self, **changes: Any) -> None:
        state = self.read_state()
        state.update(changes, updated=time.time())
        write_json_atomic(self.path / STATE, state)

    # ---- JSONL ----
    def append(self, name: str, row: dict[str, Any]) -> None:
        f = self._files.get(name)
        if f is None:
            f = self._files[name] = (self.path / name).open("a", encoding="utf-8")
        f.write(json.dumps(row, ensure_ascii=False) + "\n")
        f.flush()

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()

    def __call__(self, event: Event) -> None:
        """Listener: route engine events into the run's files."""
        if event.kind == "metrics":
            self.append(METRICS, event.data)
            self.write_state(steps_done=event.step, last=_summary(event.data))
        elif event.kind == "rollouts":
            for row in event.data["samples"]:
                self.append(ROLLOUTS, {"step": event.step, **row})
        elif event.kind == "phase":
            self.write_state(phase=event.data["phase"])
        elif event.kind in ("control", "checkpoint", "warning", "error", "start", "end"):
            self.append(EVENTS, {"kind": event.kind, "step": event.step, "time": event.time, **event.data})

    # ---- checkpoints ----
    def write_checkpoint(self, step: int, write: Callable[[Path], None], name: str | None = None) -> Path:
        """`write(tmp_dir)` fills a temp dir that then becomes checkpoints/step-N (or
        checkpoints/<name>) atomically."""
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        name = name or f"step-{step}"
        final = self.checkpoints / name
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=self.checkpoints))
        try:
            write(tmp)
            if final.exists():
                old = final.with_name(f".old-{name}")
                os.replace(final, old)
                os.replace(tmp, final)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return final

    def latest_checkpoint(self) -> Path | None:
        steps = [(int(p.name.split("-")[1]), p) for p in self.checkpoints.glob("step-*") if p.name.split("-")[1].isdigit()]
        return max(steps)[1] if steps else None


class RunFollower:
    """Turns a run directory that another process writes into engine events (for `ppo-term watch`)."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.offsets: dict[str, int] = {}
        self.last_state: dict[str, Any] = {}

    def _new_rows(self, name: str) -> list[dict[str, Any]]:
        path = self.path / name
        if not path.is_file():
            return []
        with path.open("rb") as f:
            f.seek(self.offsets.get(name, 0))
            data = f.read()
        complete = data[: data.rfind(b"\n") + 1]  # a line still being written waits for the next poll
        self.offsets[name] = self.offsets.get(name, 0) + len(complete)
        rows = []
        for line in complete.decode("utf-8", errors="replace").splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return rows

    def poll(self) -> list[Event]:
        events: list[Event] = []
        state = RunDir(self.path).read_state()
        if state and state != self.last_state:
            self.last_state = state
            events.append(Event("state", state.get("steps_done", 0), state, state.get("updated", time.time())))
        for row in self._new_rows(EVENTS):
            kind, step, t = row.pop("kind", "event"), row.pop("step", 0), row.pop("time", time.time())
            events.append(Event(kind, step, row, t))
        for row in self._new_rows(METRICS):
            events.append(Event("metrics", row.get("step", 0), row))
        by_step: dict[int, list[dict[str, Any]]] = {}
        for row in self._new_rows(ROLLOUTS):
            by_step.setdefault(row.get("step", 0), []).append(row)
        for step, rows in sorted(by_step.items()):
            events.append(Event("rollouts", step, {"samples": rows}))
        return events


def _summary(metrics: dict[str, Any]) -> dict[str, Any]:
    keys = ("reward", "kl", "kl_coef", "response_length", "time/step")
    return {k: metrics[k] for k in keys if k in metrics}


@dataclass
class RunInfo:
    path: Path
    name: str
    status: str
    steps_done: int
    total_steps: int | None
    reward: float | None
    kl: float | None
    started: float | None


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def list_runs(root: Path | str = "runs") -> list[RunInfo]:
    """Every run under root, newest first; a 'running' run whose process is gone shows as 'killed'."""
    out = []
    for path in sorted(Path(root).glob("*/"), key=lambda p: p.stat().st_mtime, reverse=True):
        state = RunDir(path).read_state()
        if not state:
            continue
        status = state.get("status", "?")
        if status == "running" and not _pid_alive(state.get("pid")):
            status = "killed"
        last = state.get("last", {})
        out.append(RunInfo(path, path.name, status, state.get("steps_done", 0), state.get("total_steps"),
                           last.get("reward"), last.get("kl"), state.get("started")))
    return out
