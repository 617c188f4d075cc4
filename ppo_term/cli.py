"""The `ppo-term` command line. Thin: parses, loads the recipe, calls the engine.

Heavy imports (torch, transformers) happen inside the commands so `--help` answers at once.
"""

from __future__ import annotations

import signal
import warnings
import sys
from enum import Enum
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
        rows = lambda items: [{"prompt": it.prompt, **it.metadata} for it in items]  # noqa: E731
        rd.create(recipe_to_toml(recipe, prompts_file="prompts.jsonl",
                                 eval_file="eval_prompts.jsonl" if trainer.eval_items else None),
                  rows(trainer.items), recipe.steps, recipe.model, eval_prompts=rows(trainer.eval_items))
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
    _say_result(result, rd.path)
    return 0


def _say_result(result, run_path) -> None:
    typer.echo(f"{result.status} after {result.steps_done} steps; "
               f"last checkpoint: {result.last_checkpoint}; run directory: {run_path}")
    if result.average is not None:
        typer.echo(f"the run hands over {result.average} (the average of its last checkpoints, [average]); "
                   f"`ppo-term eval {run_path}` evaluates it")


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
    _say_result(result, rd.path)
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


# ---- evaluation ----

class EvalPrecision(str, Enum):
    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"


PrecisionOption = Annotated[EvalPrecision, typer.Option(
    "--precision", help="auto: bf16 on CUDA and on CPUs that run it fast, else fp32 (as in a recipe)")]


def _eval_setup(target_spec: str, recipe_path: Path | None, precision: EvalPrecision = EvalPrecision.auto):
    from ppo_term.evaluate import LoadedTarget, TargetError, resolve_target
    from ppo_term.models import ModelError, pick_device

    try:
        target = resolve_target(target_spec)
        recipe_file = recipe_path or target.recipe
        rewards = _eval_rewards(recipe_file) if recipe_file else None
        loaded = LoadedTarget(target, pick_device("auto"), precision=precision.value)
    except (TargetError, ModelError) as e:
        _fail(str(e))
    typer.echo(f"{target.label}: precision {loaded.precision.name} ({loaded.precision.reason})", err=True)
    return target, loaded, rewards


def _eval_rewards(recipe_file: Path):
    """The recipe's rewards, set up for scoring (the run's own recipe by default)."""
    from ppo_term.engine.rollout import bind_rewards
    from ppo_term.plugins.manager import build_plugins
    from ppo_term.recipe import load_recipe

    recipe = load_recipe(recipe_file)
    bound = bind_rewards(recipe, build_plugins())
    for b in bound:
        if not b.reward.interactive:
            b.reward.setup()
    return [b for b in bound if not b.reward.interactive]


def _eval_prompts(prompts: Path, samples: int, temperature: float):
    from ppo_term.evaluate import load_prompts
    from ppo_term.recipe import RecipeError

    if samples > 1 and temperature <= 0:
        _fail("--samples > 1 needs sampling: give --temperature > 0 (0 is greedy, one answer a prompt)")
    try:
        return load_prompts(prompts)
    except RecipeError as e:
        _fail(str(e))


def _rows_for(loaded, items, samples, max_new_tokens, temperature, rewards, seed, label):
    from rich.console import Console
    from rich.progress import Progress

    from ppo_term.evaluate import evaluate

    with Progress(transient=True, console=Console(stderr=True)) as bar:
        task = bar.add_task(f"eval {label}", total=len(items))
        return evaluate(loaded, items, samples, max_new_tokens, temperature, rewards, seed,
                        progress=lambda n: bar.advance(task, n))


def _summary_table(title: str, summaries: dict[str, dict[str, dict[str, float]]]):
    """Rows: group and metric; columns: one per target."""
    from rich.table import Table

    table = Table(title=title)
    table.add_column("group")
    table.add_column("metric")
    for name in summaries:
        table.add_column(name, justify="right")
    first = next(iter(summaries.values()))
    for group, stats in first.items():
        for metric in stats:
            cells = []
            for s in summaries.values():
                v = s.get(group, {}).get(metric)
                cells.append("-" if v is None else (f"{v:.0f}" if metric == "n" else f"{v:.3f}"))
            table.add_row(group, metric, *cells)
        table.add_section()
    return table


@app.command("eval")
def eval_(
    target: Annotated[str, typer.Argument(help="a model name or directory, a run directory or a checkpoint")],
    prompts: Annotated[Path, typer.Option("--prompts", help="JSONL (prompt field), CSV (prompt column) or TXT")],
    samples: Annotated[int, typer.Option("--samples", help="responses per prompt")] = 1,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens")] = 48,
    temperature: Annotated[float, typer.Option("--temperature", help="0 = greedy")] = 0.0,
    recipe: Annotated[Optional[Path], typer.Option("--recipe", help="score with this recipe's rewards")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="write one JSONL row per sample")] = None,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    precision: PrecisionOption = EvalPrecision.auto,
) -> None:
    """Run a prompt set through TARGET: responses, reward components, refusal and KL to the base."""
    import json

    from rich.console import Console

    from ppo_term.evaluate import summarize

    items = _eval_prompts(prompts, samples, temperature)
    t, loaded, rewards = _eval_setup(target, recipe, precision)
    rows = _rows_for(loaded, items, samples, max_new_tokens, temperature, rewards, seed, t.label)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    Console().print(_summary_table(f"{t.label} on {prompts.name}", {t.label: summarize(rows)}))


@app.command()
def compare(
    targets: Annotated[list[str], typer.Argument(help="two or more targets (models, runs, checkpoints)")],
    prompts: Annotated[Path, typer.Option("--prompts")],
    samples: Annotated[int, typer.Option("--samples")] = 1,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens")] = 48,
    temperature: Annotated[float, typer.Option("--temperature", help="0 = greedy")] = 0.0,
    recipe: Annotated[Optional[Path], typer.Option("--recipe")] = None,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    html: Annotated[Optional[Path], typer.Option("--html", help="write a self-contained HTML page")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of tables")] = False,
    precision: PrecisionOption = EvalPrecision.auto,
) -> None:
    """The same prompts and seed through several targets: summaries and responses side by side."""
    import json

    from rich.console import Console
    from rich.table import Table

    from ppo_term.evaluate import summarize

    if len(targets) < 2:
        _fail("compare needs at least two targets")
    items = _eval_prompts(prompts, samples, temperature)
    results: dict[str, list[dict]] = {}
    for spec in targets:
        t, loaded, rewards = _eval_setup(spec, recipe, precision)
        name = t.label if t.label not in results else spec
        results[name] = _rows_for(loaded, items, samples, max_new_tokens, temperature, rewards, seed, name)
    summaries = {name: summarize(rows) for name, rows in results.items()}
    if as_json:
        typer.echo(json.dumps({"summaries": summaries, "rows": results}, indent=2, ensure_ascii=False))
    else:
        console = Console()
        console.print(_summary_table(f"{prompts.name}: {samples} sample(s) a prompt, seed {seed}", summaries))
        side = Table(title="responses", show_lines=True)
        side.add_column("prompt", max_width=30)
        for name in results:
            side.add_column(name)
        n = len(next(iter(results.values())))
        for i in range(n):
            first = next(iter(results.values()))[i]
            side.add_row(first["prompt"], *[f"{'[red]refuses[/] ' if r[i]['refused'] else ''}{escape_markup(r[i]['response'])}"
                                            for r in results.values()])
        console.print(side)
    if html:
        from ppo_term.report import compare_html

        html.write_text(compare_html(prompts.name, summaries, results))
        typer.echo(f"wrote {html}")


def escape_markup(text: str) -> str:
    from rich.markup import escape

    return escape(text)


@app.command()
def shift(
    target: Annotated[str, typer.Argument(help="a tuned run or checkpoint")],
    prompt: Annotated[Optional[str], typer.Option("--prompt", help="one prompt to follow token by token")] = None,
    prompts: Annotated[Optional[Path], typer.Option("--prompts", help="a prompt file: mean shift per label")] = None,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens")] = 48,
    top: Annotated[int, typer.Option("--top", help="top tokens shown per position")] = 3,
    png: Annotated[Optional[Path], typer.Option("--png", help="also save a plot (needs matplotlib)")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    precision: PrecisionOption = EvalPrecision.auto,
) -> None:
    """How PPO moved the next-token distribution against the base, along the tuned model's response."""
    import json

    from rich.console import Console
    from rich.table import Table

    from ppo_term.evaluate import load_prompts, shift as shift_one, shift_by_group

    if not prompt and not prompts:
        _fail("give --prompt TEXT and/or --prompts FILE")
    t, loaded, _ = _eval_setup(target, None, precision)
    console = Console()
    out: dict = {}
    if prompt:
        out["prompt"] = res = shift_one(loaded, prompt, max_new_tokens, top)
        if not as_json:
            table = Table(title=f"{t.label}: next-token distributions along the tuned response")
            for col in ("pos", "token", "KL", "H tuned", "H base", "top tokens: p tuned / p base"):
                table.add_column(col)
            for p in res["positions"]:
                mark = "[bold red]" if p["position"] in res["largest_shift"] else ""
                tops = "  ".join(f"{x['token']!r} {x['p_tuned']:.2f}/{x['p_base']:.2f}" for x in p["top"])
                table.add_row(str(p["position"]), f"{mark}{escape_markup(repr(p['token']))}", f"{mark}{p['kl']:.3f}",
                              f"{p['entropy_tuned']:.2f}", f"{p['entropy_base']:.2f}", escape_markup(tops))
            console.print(table)
            _terminal_plot([p["kl"] for p in res["positions"]], [p["token"] for p in res["positions"]])
        if png:
            from ppo_term.report import shift_png

            shift_png(res, png)
            typer.echo(f"wrote {png}")
    if prompts:
        out["groups"] = groups = shift_by_group(loaded, load_prompts(prompts), max_new_tokens)
        if not as_json:
            table = Table(title=f"{t.label}: mean shift against the base per group ({prompts.name})")
            for col in ("group", "n", "KL per token", "entropy change"):
                table.add_column(col)
            for name, g in groups.items():
                table.add_row(name, str(g["n"]), f"{g['kl_per_token']:.4f}", f"{g['entropy_change']:+.4f}")
            console.print(table)
    if as_json:
        typer.echo(json.dumps(out, indent=2, ensure_ascii=False))


def _terminal_plot(values: list[float], tokens: list[str]) -> None:
    import plotext as plt

    plt.clear_figure()
    plt.bar(list(range(len(values))), values)
    plt.title("KL(tuned || base) per response position")
    plt.xlabel("position")
    plt.plotsize(min(120, 10 + 2 * len(values)), 15)
    plt.show()


@app.command()
def export(
    checkpoint: Annotated[str, typer.Argument(help="a checkpoint directory or a run directory (what it hands over: checkpoints/average, else its latest)")],
    out: Annotated[Path, typer.Option("--out", help="folder for the merged Hugging Face model")],
) -> None:
    """Merge the adapter into its base: a plain model directory transformers loads without ppo-term."""
    from ppo_term.evaluate import TargetError, export_merged, resolve_target
    from ppo_term.models import ModelError

    try:
        path = export_merged(resolve_target(checkpoint), out)
    except (TargetError, ModelError) as e:
        _fail(str(e))
    typer.echo(f"wrote {path} (load it with AutoModelForCausalLM.from_pretrained)")


@app.command()
def soup(
    checkpoints: Annotated[list[str], typer.Argument(help="checkpoint or run directories (a run: checkpoints/average, else its latest)")],
    out: Annotated[Path, typer.Option("--out", help="folder for the averaged checkpoint")],
    weights: Annotated[Optional[str], typer.Option(
        "--weights", help="comma-separated, one per checkpoint (default: equal, summing to 1); "
                          "a sum below 1 moves the soup towards the base")] = None,
) -> None:
    """Average the weights of several runs' checkpoints into one ("model soup"), as a checkpoint."""
    from ppo_term.evaluate import TargetError
    from ppo_term.models import ModelError
    from ppo_term.soup import make_soup

    parsed = None
    if weights is not None:
        try:
            parsed = [float(w) for w in weights.split(",")]
        except ValueError:
            _fail(f"--weights: expected numbers separated by commas, got {weights!r}")
    try:
        path = make_soup(checkpoints, out, parsed)
    except (TargetError, ModelError) as e:
        _fail(str(e))
    typer.echo(f"wrote {path} ({len(checkpoints)} checkpoints averaged; "
               f"evaluate it with: ppo-term eval {path} --prompts FILE)")


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
