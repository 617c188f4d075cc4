#!/usr/bin/env python3
"""The proof: train recipes/safety.toml on the default model, then compare base and tuned on XSTest.

    python bench/safety_eval.py                       # train (timed), then evaluate both
    python bench/safety_eval.py --run runs/safety-X   # evaluate an existing run only
    python bench/safety_eval.py --run SOUP_DIR        # or a checkpoint, e.g. `ppo-term soup` output
    python bench/safety_eval.py --base-from runs/safety-Y   # the base's rows of an earlier evaluation
    python bench/safety_eval.py --seeds 0-5           # a run per seed, their soup evaluated (`ppo-term soup`)
    python bench/safety_eval.py --seeds 0-5 --parallel 2 --each   # two at a time; each member evaluated too

XSTest (`../shared/data/xstest/xstest_prompts.csv`, evaluation only) has 250 safe prompts (many
sound dangerous) and 200 unsafe ones. Both models answer each greedily; the built-in refusal
detector (precision 0.93 / recall 0.90 on XSTest's labelled completions) says which responses
refuse. Where the recipe keeps its best checkpoint by held-out evaluation (`[eval] keep_best`), that
checkpoint is the tuned model and the last step's is evaluated beside it. Writes bench/results/safety_eval.{md,json}; the per-prompt rows go to the run directory.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def soup_line(path: Path) -> str | None:
    """For a `ppo-term soup` checkpoint: its members and weights."""
    if not (path / "soup.json").is_file():
        return None
    members = json.loads((path / "soup.json").read_text())["members"]
    return "Soup (`ppo-term soup`) of: " + ", ".join(
        f"`{Path(m['checkpoint']).parent.parent.name}/{Path(m['checkpoint']).name}` x {m['weight']:g}" for m in members) + "."


def claim_run_dir(path: Path) -> Path:
    """An empty directory of its own for the run (`ppo-term run` takes an empty one): evaluations
    started in the same second, seeds side by side, get `NAME-2`, `NAME-3`, ..."""
    path.parent.mkdir(parents=True, exist_ok=True)
    candidate, i = path, 1
    while True:
        try:
            candidate.mkdir()  # atomic: of two processes only one creates it
            return candidate
        except FileExistsError:
            i += 1
            candidate = path.with_name(f"{path.name}-{i}")


def parse_seeds(text: str) -> list[int]:
    """`0-5` or `0,2,7` (or both: `0-2,7`) as a list of seeds."""
    seeds: list[int] = []
    for part in text.split(","):
        lo, sep, hi = part.strip().partition("-")
        try:
            seeds += list(range(int(lo), int(hi) + 1)) if sep else [int(lo)]
        except ValueError:
            raise SystemExit(f"--seeds {text!r}: expected seeds like 0-5 or 0,2,7") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise SystemExit(f"--seeds {text!r}: expected distinct seeds like 0-5 or 0,2,7")
    return seeds


def train_command(recipe: str, overrides: list[str], run: Path) -> list[str]:
    cmd = ["ppo-term", "run", recipe, "--headless", "--run-dir", str(run)]
    for o in overrides:
        cmd += ["--set", o]
    return cmd


def stop(proc: subprocess.Popen) -> None:
    """A `ppo-term run` still going is asked to stop (it saves what it has) and waited for."""
    if proc.poll() is None:
        proc.terminate()
        proc.wait()


def train(cmd: list[str]) -> None:
    proc = subprocess.Popen(cmd)
    try:
        if proc.wait() != 0:
            raise SystemExit(f"`ppo-term run` exited {proc.returncode}")
    finally:
        stop(proc)


def train_seeds(recipe: str, overrides: list[str], seeds: list[int], parallel: int, runs_dir: Path,
                stamp: str) -> list[dict]:
    """One run of the recipe per seed, `parallel` at a time (each on its share of the CPU's threads);
    returns each run's directory and training time. A member that fails stops the whole (its run
    directory, with what it wrote, stays)."""
    threads = max(1, (os.cpu_count() or 1) // parallel)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)} if parallel > 1 else None
    pending = list(seeds)
    running: list[tuple[dict, subprocess.Popen]] = []
    done: list[dict] = []
    try:
        while pending or running:
            while pending and len(running) < parallel:
                seed = pending.pop(0)
                run = claim_run_dir(runs_dir / f"safety-eval-{stamp}-seed{seed}")
                cmd = train_command(recipe, overrides + [f"seed={seed}"], run)
                print(f"training seed {seed}:", " ".join(cmd), flush=True)
                running.append(({"seed": seed, "run": run, "start": time.time()}, subprocess.Popen(cmd, env=env)))
            time.sleep(0.2)
            for member, proc in list(running):
                if proc.poll() is None:
                    continue
                running.remove((member, proc))
                if proc.returncode != 0:
                    raise SystemExit(f"seed {member['seed']}: `ppo-term run` exited {proc.returncode} "
                                     f"(its run directory: {member['run']})")
                member["train_seconds"] = time.time() - member.pop("start")
                print(f"seed {member['seed']}: trained in {member['train_seconds'] / 60:.1f} min", flush=True)
                done.append(member)
    finally:  # stopped (Ctrl-C, SIGTERM) or a member failed: the runs still training stop too
        for _, proc in running:
            stop(proc)
    return sorted(done, key=lambda m: seeds.index(m["seed"]))


def best_checkpoint(run: Path) -> Path | None:
    """A recipe with [eval] keep_best hands over checkpoints/best (the step its held-out prompts
    scored best at): that is the run's tuned model."""
    best = run / "checkpoints" / "best"
    return best if best.is_dir() else None


def tuned_spec(run: Path) -> str:
    """What a run hands over as its tuned model: checkpoints/best if it kept one, else checkpoints/average
    if its recipe's [average] made one, else its latest."""
    return str(best_checkpoint(run) or run)


def base_rows(run: Path, items: list) -> list[dict]:
    """The base model's rows of an earlier evaluation (`run`/xstest_eval_rows.jsonl), which must
    cover the same prompts in the same order."""
    path = run / "xstest_eval_rows.jsonl"
    if not path.is_file():
        raise SystemExit(f"--base-from {run}: no xstest_eval_rows.jsonl there (evaluate that run first)")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rows = [{k: v for k, v in r.items() if k != "model"} for r in rows if r.get("model") == "base"]
    prompts = [it.prompt for it in items]
    if [r["prompt"] for r in rows] != prompts:
        raise SystemExit(f"--base-from {path}: its base rows are for other prompts ({len(rows)} rows, "
                         f"{len(prompts)} prompts asked for)")
    return rows


def main() -> None:
    # SIGTERM unwinds like Ctrl-C, so the `ppo-term run` being waited on is stopped, not orphaned
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", default="recipes/safety.toml")
    ap.add_argument("--run", type=Path, help="evaluate this run (or checkpoint) instead of training a new one")
    ap.add_argument("--xstest", type=Path, default=ROOT.parent / "shared/data/xstest/xstest_prompts.csv")
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--limit", type=int, default=0, help="evaluate only the first N prompts of each label (0 = all)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench/results")
    ap.add_argument("--runs-dir", type=Path, default=ROOT / "runs", help="where the training runs go")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--base-from", type=Path,
                    help="take the base model's rows from this earlier evaluated run (its xstest_eval_rows.jsonl) "
                         "instead of answering XSTest with the base again (~6 min saved; the prompts are checked, "
                         "--max-new-tokens and --precision are not: use the ones that run was evaluated with)")
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                    help="of the evaluation passes (auto: bf16 where this CPU runs it fast)")
    ap.add_argument("--seeds", type=parse_seeds,
                    help="train the recipe once per seed (e.g. 0-5) and evaluate the soup of the runs "
                         "(equal weights, `ppo-term soup`) as the tuned model")
    ap.add_argument("--parallel", type=int, default=1, help="with --seeds: runs trained side by side")
    ap.add_argument("--each", action="store_true", help="with --seeds: evaluate every member beside the soup")
    args = ap.parse_args()
    if args.seeds and args.run:
        raise SystemExit("--seeds trains new runs; --run evaluates an existing one: give one of them")
    if args.parallel < 1:
        raise SystemExit(f"--parallel {args.parallel}: expected 1 or more")
    if (args.each or args.parallel > 1) and not args.seeds:
        raise SystemExit("--each and --parallel go with --seeds")

    train_s = None
    members: list[dict] = []
    run = args.run
    stamp = time.strftime('%Y%m%d-%H%M%S')
    if args.seeds:
        from ppo_term.soup import make_soup

        t0 = time.time()
        members = train_seeds(args.recipe, args.overrides, args.seeds, args.parallel, args.runs_dir, stamp)
        train_s = time.time() - t0
        run = claim_run_dir(args.runs_dir / f"soup-{stamp}")
        make_soup([tuned_spec(m["run"]) for m in members], run)
        print(f"trained {len(members)} runs in {train_s / 60:.1f} min; their soup: {run}", flush=True)
    elif run is None:
        run = claim_run_dir(args.runs_dir / f"safety-eval-{stamp}")
        cmd = train_command(args.recipe, args.overrides, run)
        print("training:", " ".join(cmd), flush=True)
        t0 = time.time()
        train(cmd)
        train_s = time.time() - t0
        print(f"trained in {train_s / 60:.1f} min", flush=True)

    import torch

    from ppo_term.evaluate import LoadedTarget, evaluate, load_prompts, resolve_target, summarize

    items = load_prompts(args.xstest)
    if args.limit:
        by_label: dict[str, list] = {}
        for it in items:
            by_label.setdefault(it.metadata["label"], []).append(it)
        items = [it for group in by_label.values() for it in group[: args.limit]]
    final = resolve_target(str(run))
    # with [eval] keep_best the best step is the tuned model; the last step's checkpoint is shown beside it
    best = best_checkpoint(run)
    tuned = resolve_target(str(best)) if best else final
    results = {}
    targets = [("base", final.base), ("tuned", str(best or run))] + ([("final", str(run))] if best else [])
    targets += [(f"seed {m['seed']}", tuned_spec(m["run"])) for m in members] if args.each else []
    for name, spec in targets:
        t0 = time.time()
        if name == "base" and args.base_from:
            rows = base_rows(args.base_from, items)
            results[name] = {"rows": rows, "summary": summarize(rows), "seconds": 0.0, "from": str(args.base_from)}
            print(f"base: {len(rows)} rows from {args.base_from}", flush=True)
            continue
        loaded = LoadedTarget(resolve_target(spec), torch.device("cpu"), precision=args.precision)
        rows = evaluate(loaded, items, samples=1, max_new_tokens=args.max_new_tokens, temperature=0.0)
        results[name] = {"rows": rows, "summary": summarize(rows), "seconds": time.time() - t0}
        print(f"{name}: evaluated {len(rows)} prompts in {results[name]['seconds']:.0f}s", flush=True)
        loaded_precision = loaded.precision.name
        del loaded

    def cell(name: str, group: str, key: str) -> float:
        return results[name]["summary"][group][key]

    def row(title: str, group: str, key: str, fmt: str) -> str:
        return f"| {title} | " + " | ".join(format(cell(name, group, key), fmt) for name in results) + " |"

    def step_of(target) -> int | None:
        state = Path(target.adapter or target.full) / "trainer_state.json"
        return json.loads(state.read_text())["step"] if state.is_file() else None  # a soup has no step

    # with [average] the run hands over checkpoints/average: the steps it averaged
    tuned_dir = tuned.adapter or tuned.full
    average_of = ([step_of(resolve_target(m["checkpoint"]))
                   for m in json.loads((tuned_dir / "soup.json").read_text())["members"]]
                  if tuned_dir.name == "average" else None)
    columns = ["base", f"tuned (best on the held-out prompts: step {step_of(tuned)})" if best
               else f"tuned (the average of steps {', '.join(map(str, average_of))})" if average_of
               else f"soup of seeds {', '.join(str(m['seed']) for m in members)}" if members else "tuned"]
    columns += [f"final (step {step_of(final)})"] if best else []
    columns += [name for name in results if name.startswith("seed ")]
    if members:
        times = [m["train_seconds"] / 60 for m in members]
        trained = (f", {len(members)} runs trained in {train_s / 60:.1f} min on this machine (each "
                   f"{min(times):.1f}-{max(times):.1f} min, {args.parallel} at a time)")
    else:
        trained = f", trained in {train_s / 60:.1f} min on this machine" if train_s else ""

    recipe_line = (f"Recipe: `{args.recipe}`" + "".join(f" `--set {o}`" for o in args.overrides) + "."
                   if train_s else None)
    lines = [
        f"# Safety recipe on XSTest ({time.strftime('%Y-%m-%d')})",
        "",
        f"Run: `{run.relative_to(ROOT) if run.is_relative_to(ROOT) else run}`" + trained,
        " ".join(filter(None, [recipe_line, soup_line(run)])) or "Recipe: the run's own `recipe.toml`.",
        f"Checkpoint: `{(tuned.adapter or tuned.full).name}`; greedy decoding, "
        f"{args.max_new_tokens} new tokens; refusal by the built-in detector; evaluation in "
        f"{loaded_precision} ({time.strftime('%H:%M UTC', time.gmtime())})"
        + (f"; base rows from `{args.base_from}`." if args.base_from else "."),
        "",
        "| | " + " | ".join(columns) + " |",
        "|---" * (len(columns) + 1) + "|",
        row(f"refusal rate, unsafe prompts (n={cell('base', 'label=unsafe', 'n'):.0f})", "label=unsafe",
            "refusal_rate", ".1%"),
        row(f"refusal rate, safe prompts (n={cell('base', 'label=safe', 'n'):.0f})", "label=safe", "refusal_rate", ".1%"),
        # counted as refusals above, as the detector reads them: an apology for "any confusion" that declines nothing
        row("of the unsafe: evasive apologies (no decline)", "label=unsafe", "evasive_rate", ".1%"),
        row("of the safe: evasive apologies (no decline)", "label=safe", "evasive_rate", ".1%"),
        row("mean KL to the base (nats per response)", "all", "kl", ".2f"),
        row("mean length (tokens)", "all", "length", ".1f"),
        "",
        "## Samples (first of each kind where the two differ)",
        "",
    ]
    shown = {"safe": 0, "unsafe": 0}
    for b, t in zip(results["base"]["rows"], results["tuned"]["rows"]):
        label = b["label"]
        if b["refused"] != t["refused"] and shown[label] < 3:
            shown[label] += 1
            lines += [f"- **{label}**: {b['prompt']}", f"  - base: {b['response'][:200]!r}",
                      f"  - tuned: {t['response'][:200]!r}"]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "safety_eval.md").write_text("\n".join(lines) + "\n")
    (args.out / "safety_eval.json").write_text(json.dumps(
        {"run": str(run), "recipe": args.recipe, "overrides": args.overrides, "train_seconds": train_s,
         "precision": loaded_precision, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
         "checkpoints": {"tuned": step_of(tuned), **({"final": step_of(final)} if best else {}),
                         **({"average_of": average_of} if average_of else {})},
         "members": [{**m, "run": str(m["run"])} for m in members],
         "summaries": {k: v["summary"] for k, v in results.items()}}, indent=2))
    # the rows quote XSTest in full: they stay in the (git-ignored) run directory
    with (run / "xstest_eval_rows.jsonl").open("w") as f:
        for name, r in results.items():
            for row in r["rows"]:
                f.write(json.dumps({"model": name, **row}, ensure_ascii=False) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
