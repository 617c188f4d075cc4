"""The `ppo-term` command line. Thin: parses, loads the recipe, calls the engine.

Heavy imports (torch, transformers) happen inside the commands so `--help` answers at once.
"""

from __future__ import annotations

import signal
import warnings
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

app = typer.Typer(
    name="ppo-term",
    help="PPO fine-tuning of language models, from a TOML recipe, in the terminal.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _fail(message: str, code: int = 2) -> None:
    from rich.console import Console

    Console(stderr=True).print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


@app.command()
def run(
    recipe: Annotated[Path, typer.Argument(help="TOML recipe, e.g. recipes/safety.toml")],
    steps: Annotated[Optional[int], typer.Option("--steps", help="override the recipe's step count")] = None,
    headless: Annotated[bool, typer.Option("--headless", help="plain progress output, no dashboard")] = False,
    run_dir: Annotated[Optional[Path], typer.Option("--run-dir", help="write the run here (default runs/<name>-<time>)")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="override a recipe field: path.to.field=value")] = None,
) -> None:
    """Fine-tune a model with PPO from RECIPE."""
    from ppo_term.recipe import RecipeError, load_recipe

    overrides = list(set_ or [])
    if steps is not None:
        overrides.append(f"steps={steps}")
    try:
        r = load_recipe(recipe, overrides)
        code = _run(r, run_dir, headless or not sys.stdout.isatty())
    except RecipeError as e:
        _fail(str(e))
    raise typer.Exit(code)


def _run(recipe, run_dir: Path | None, headless: bool) -> int:
    from ppo_term.engine.rollout import RewardError
    from ppo_term.engine.trainer import Trainer
    from ppo_term.models import ModelError
    from ppo_term.plugins.manager import PluginError, build_plugins
    from ppo_term.control_channel import ControlFileWatcher
    from ppo_term.progress import HeadlessReporter
    from ppo_term.recipe import recipe_to_toml
    from ppo_term.runs import RunDir, new_run_dir

    warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")
    plugins = build_plugins()
    for failure in plugins.failures:
        typer.secho(f"warning: plugin {failure.name} ({failure.package}) failed to load: {failure.error}",
                    fg="yellow", err=True)
    trainer = Trainer(recipe, plugins=plugins)  # validates prompts, rewards and KL schedule first
    rd = RunDir(run_dir or new_run_dir(recipe.name))
    try:
        rd.create(recipe_to_toml(recipe, prompts_file="prompts.jsonl"),
                  [{"prompt": it.prompt, **it.metadata} for it in trainer.items], recipe.steps, recipe.model)
    except FileExistsError as e:
        _fail(str(e))
    trainer.run_dir = rd
    watcher = ControlFileWatcher(rd.path, trainer.controls).start()  # `ppo-term watch` can steer it
    signal.signal(signal.SIGTERM, _raise_interrupt)
    if not headless:
        try:
            return _run_dashboard(trainer, rd)
        finally:
            watcher.close()
            rd.close()
    reporter = HeadlessReporter(recipe.steps)
    trainer.listeners += [rd, reporter]
    reporter.console.print(f"run directory: {rd.path}")
    try:
        with reporter:
            trainer.setup()
            result = trainer.run()
    except (ModelError, PluginError, RewardError) as e:
        rd.write_state(status="failed", error=str(e))
        _fail(f"{e}\n(run directory kept: {rd.path})", code=1)
    except KeyboardInterrupt:
        rd.write_state(status="interrupted")
        typer.secho(f"interrupted; run directory kept: {rd.path}", err=True, fg="yellow")
        return 130
    except BaseException as e:
        rd.write_state(status="failed", error=f"{type(e).__name__}: {e}")
        raise
    finally:
        watcher.close()
        rd.close()
    rd.write_state(status=result.status, steps_done=result.steps_done)
    typer.echo(f"{result.status} after {result.steps_done} steps; "
               f"last checkpoint: {result.last_checkpoint}; run directory: {rd.path}")
    return 0


def _run_dashboard(trainer, rd) -> int:
    """The live dashboard; the engine runs in its thread worker and ends when the app does."""
    from ppo_term.engine.rollout import RewardError
    from ppo_term.models import ModelError
    from ppo_term.plugins.manager import PluginError
    from ppo_term.tui.app import DashboardApp
    from ppo_term.tui.state import RunView

    recipe = trainer.recipe

    def engine(listener, rater):
        trainer.listeners += [rd, listener]
        trainer.rater = rater
        trainer.setup()
        return trainer.run()

    view = RunView(name=rd.path.name, model=recipe.model, total_steps=recipe.steps, kl_coef=recipe.kl.coef)
    app = DashboardApp(view, controller=trainer.controls, engine=engine)
    try:
        app.run()
    except KeyboardInterrupt:
        pass
    if not app.engine_done.is_set():
        typer.echo("stopping the run (it saves a checkpoint first)...")
        trainer.controls.stop()
        app.engine_done.wait()
    if app.error is not None:
        e = app.error
        rd.write_state(status="failed", error=f"{type(e).__name__}: {e}")
        if isinstance(e, (ModelError, PluginError, RewardError)):
            _fail(f"{e}\n(run directory kept: {rd.path})", code=1)
        raise e
    result = app.result
    rd.write_state(status=result.status, steps_done=result.steps_done)
    typer.echo(f"{result.status} after {result.steps_done} steps; "
               f"last checkpoint: {result.last_checkpoint}; run directory: {rd.path}")
    return 0


@app.command()
def watch(run_dir: Annotated[Path, typer.Argument(help="a run directory, e.g. runs/safety-20261125-120000")]) -> None:
    """Open the dashboard on a run another process is running (or a finished one, read-only).

    Controls reach the running engine through the run directory's control channel; quitting the
    viewer never stops the run.
    """
    from ppo_term.control_channel import FileController
    from ppo_term.runs import RunDir, RunFollower, list_runs
    from ppo_term.tui.app import WatchApp
    from ppo_term.tui.state import RunView

    state = RunDir(run_dir).read_state()
    if not state:
        _fail(f"{run_dir} is not a run directory (no state.json)")
    status = next((i.status for i in list_runs(run_dir.parent) if i.path.resolve() == run_dir.resolve()),
                  state.get("status"))
    running = status == "running"
    view = RunView(name=run_dir.name, model=state.get("model", "?"), total_steps=state.get("total_steps", 0),
                   read_only=not running, status="running" if running else status)
    WatchApp(view, controller=FileController(run_dir) if running else None, follower=RunFollower(run_dir)).run()


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


@app.command()
def runs(root: Annotated[Path, typer.Option("--root", help="folder that holds the runs")] = Path("runs")) -> None:
    """List runs with their status, steps done, last reward and KL."""
    from datetime import datetime

    from rich.console import Console
    from rich.table import Table

    from ppo_term.runs import list_runs

    infos = list_runs(root)
    if not infos:
        typer.echo(f"no runs under {root}/")
        return
    table = Table("run", "status", "steps", "reward", "kl", "started")
    for info in infos:
        fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
        started = datetime.fromtimestamp(info.started).strftime("%Y-%m-%d %H:%M") if info.started else "-"
        table.add_row(info.name, info.status, f"{info.steps_done}/{info.total_steps or '?'}",
                      fmt(info.reward, "+.3f"), fmt(info.kl, ".3f"), started)
    Console().print(table)


@app.command()
def plugins(as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False) -> None:
    """List installed rewards, KL schedules and samplers, and where each came from."""
    import json

    from ppo_term.plugins.manager import build_plugins

    from ppo_term import __version__

    found = build_plugins()
    rows = [{"name": p.name, "kind": p.kind, "package": "ppo-term" if p.source == "builtin" else p.source,
             "version": __version__ if p.source == "builtin" else p.version, "builtin": p.source == "builtin", "doc": (p.cls.__doc__ or "").strip().split("\n")[0]}
            for p in found.all()]
    failures = [{"name": f.name, "package": f.package, "error": f.error} for f in found.failures]
    if as_json:
        typer.echo(json.dumps({"plugins": rows, "failures": failures}, indent=2))
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    wide = console.width >= 110
    table = Table("name", "kind", "package", "origin", *(["what"] if wide else []))
    for row in rows:
        package = f"{row['package']} {row['version'] or ''}".strip()
        table.add_row(row["name"], row["kind"], package, "built-in" if row["builtin"] else "external",
                      *([escape(row["doc"])] if wide else []))
    console.print(table)
    for f in failures:
        console.print(f"[red]failed to load[/] {f['name']} ({f['package']}): {f['error']}", highlight=False)


@app.command("new-plugin")
def new_plugin(
    name: Annotated[str, typer.Argument(help="plugin name, e.g. politeness")],
    kind: Annotated[str, typer.Option("--kind", help="reward, kl or sampler")] = "reward",
    dir_: Annotated[Path, typer.Option("--dir", help="folder to create the package in")] = Path("."),
) -> None:
    """Write a ready plugin package: pyproject with the entry point, module, a test, README."""
    from ppo_term.scaffold import new_plugin as scaffold

    try:
        root = scaffold(name, kind, dir_)
    except (ValueError, FileExistsError) as e:
        _fail(str(e))
    typer.echo(f"wrote {root}\nnext: pip install -e {root} && ppo-term plugins")


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
