"""Headless output: a rich progress bar with the latest reward, KL and kl_coef, a line per step."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ppo_term.engine.events import Event


class HeadlessReporter:
    """Listener for `ppo-term run --headless` (and when stdout is not a terminal)."""

    def __init__(self, total_steps: int, console: Console | None = None):
        self.console = console or Console()
        self.progress = Progress(
            TextColumn("[bold]{task.fields[phase]:<14}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("reward {task.fields[reward]}  kl {task.fields[kl]}  kl_coef {task.fields[kl_coef]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self.task = self.progress.add_task("ppo", total=total_steps, phase="setup", reward="-", kl="-", kl_coef="-")

    def __enter__(self) -> "HeadlessReporter":
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def __call__(self, event: Event) -> None:
        d = event.data
        if event.kind == "phase":
            label = f"{d['phase']}:{d['reward']}" if "reward" in d else d["phase"]
            if d["phase"] == "rating":
                # a person answers in this terminal: stop redrawing the bar until the next phase
                self.progress.stop()
                self._stopped = True
            elif getattr(self, "_stopped", False):
                self.progress.start()
                self._stopped = False
            self.progress.update(self.task, phase=label)
        elif event.kind == "metrics":
            self.progress.update(self.task, completed=event.step, reward=f"{d['reward']:+.3f}",
                                 kl=f"{d['kl']:.3f}", kl_coef=f"{d['kl_coef_next']:.4f}")
            self.console.print(
                f"step {event.step:>4} reward {d['reward']:+.3f} kl {d['kl']:.3f} kl_coef {d['kl_coef']:.4f} "
                f"len {d['response_length']:.0f} gen {d['time/generate']:.1f}s train {d['time/train']:.1f}s "
                f"{d['tokens_per_s']:.0f} tok/s", highlight=False
            )
            if "eval/reward" in d:  # [eval]: the held-out prompts' greedy answers
                refused = " ".join(f"{k.split('/')[1]} {v:.0%}" for k, v in d.items()
                                   if k.startswith("eval/") and k.endswith("/refusal_rate") and k.count("/") == 2)
                self.console.print(f"      eval reward {d['eval/reward']:+.3f} refused {d['eval/refusal_rate']:.0%}"
                                   + (f" ({refused})" if refused else "") + f" {d['time/eval']:.1f}s", highlight=False)
        elif event.kind == "start":
            self.console.print(f"model {d['model']} on {d['device']}, {d['trainable_params']:,} trainable parameters")
            if "precision" in d:
                self.console.print(f"precision {d['precision']} ({d['precision_reason']})", highlight=False)
            if "master_weights" in d and d["master_weights"] != "fp32":
                self.console.print(f"trained weights {d['master_weights']} ({d['master_weights_reason']})",
                                   highlight=False)
        elif event.kind == "checkpoint":
            self.console.print(f"[green]checkpoint[/] {d['path']} ({d['reason']})")
        elif event.kind == "control":
            args = {k: v for k, v in d.items() if k != "command"}
            self.console.print(f"[yellow]control[/] {d['command']} {args or ''} at step {event.step}")
        elif event.kind == "warning":
            self.console.print(f"[yellow]warning[/] {d['message']}")
