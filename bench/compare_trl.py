#!/usr/bin/env python3
"""ppo-term against TRL 0.11.4's PPOTrainer on the same PPO work, side by side in one run.

    python bench/compare_trl.py                      # both variants, 2 rounds of 1 warm-up + 3 steps a side
    python bench/compare_trl.py --variants lora --rounds 1 --steps 5
    python bench/compare_trl.py --model DIR --set precision=fp32   # another model dir; ppo-term overrides

The work (../shared/bench/trl_baseline's configuration, as bench/compare_trl/recipe.toml): the
default model, 16 prompts a step, one response each of exactly 48 tokens at temperature 1, a rule
reward, 4 PPO epochs of minibatch 4, lr 1e-5, fixed kl_coef 0.05. Variants: LoRA r16 on q/k/v/o
(reference = adapter off) and full fine-tuning (frozen reference copy).

Each side runs in its own process (so peak RSS is its own) with OMP_NUM_THREADS=2; the sides
alternate within each round, variant by variant, so drift on a shared machine hits both. Medians
are over every timed step of all rounds. TRL runs from the harness in ../shared/bench/trl_baseline
in its own virtual environment (--trl-python; set up as that README says), on a transformers-4.46
copy of the model that its convert_model.py writes once. On a GPU both sides run there (TRL through
accelerate, in fp32 as its harness loads the model; ppo-term in its automatic precision unless
--set says otherwise), and each side's peak CUDA memory is recorded beside its peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from ppo_step import machine  # noqa: E402

HARNESS = ROOT.parent / "shared" / "bench" / "trl_baseline"
RECIPE = ROOT / "bench" / "compare_trl" / "recipe.toml"
WITH_CUDA_PEAK = ROOT / "bench" / "compare_trl" / "with_cuda_peak.py"


def run(cmd: list[str], log: Path) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="2", PYTHONUNBUFFERED="1")
    print(f"$ {' '.join(cmd)}", flush=True)
    with open(log, "a") as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}); see {log}")


def trl_model(trl_python: str, harness: Path, source: str | None, target: Path, log: Path) -> Path:
    """The transformers-4.46 copy of the model (the default one unless `source`) that TRL 0.11.4
    needs (made once)."""
    if not (target / "config.json").exists():
        from ppo_term.models import resolve_model

        run([trl_python, str(harness / "convert_model.py"), "--src", source or resolve_model("smollm2-135m-instruct"),
             "--dst", str(target)], log)
    return target


def median(rows: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def summarize(pt_runs: list[dict], trl_runs: list[dict]) -> dict:
    pt_steps = [s for r in pt_runs for s in r["steps"]]
    trl_steps = [s for r in trl_runs for s in r["steps"] if s["phase"] == "timed"]
    out = {
        "timed_steps_each": [len(pt_steps), len(trl_steps)],
        "ppo_term_s_per_step": median(pt_steps, "total_s"),
        "trl_s_per_step": median(trl_steps, "total_s"),
        "ppo_term_generate_s": median(pt_steps, "gen_s"),
        "trl_generate_s": median(trl_steps, "gen_s"),
        "ppo_term_score_s": median(pt_steps, "score_s"),
        "trl_score_s": median(trl_steps, "reward_s"),
        "ppo_term_train_s": median(pt_steps, "train_s"),
        "trl_train_s": median(trl_steps, "train_s"),
        "ppo_term_tokens_per_s": median(pt_steps, "tokens_per_s"),
        "trl_tokens_per_s": median(trl_steps, "tokens_per_s"),
        "ppo_term_peak_rss_mib": max(r["peak_rss_mib"] for r in pt_runs),
        "trl_peak_rss_mib": max(r["summary"]["peak_rss_mib"] for r in trl_runs),
        **({"ppo_term_peak_cuda_mib": max(r["peak_cuda_mib"] for r in pt_runs)} if "peak_cuda_mib" in pt_runs[0] else {}),
        **({"trl_peak_cuda_mib": max(r["summary"]["peak_cuda_mib"] for r in trl_runs)}
           if "peak_cuda_mib" in trl_runs[0]["summary"] else {}),
        "ppo_term_precision": pt_runs[0]["precision"],
        "ppo_term_precision_reason": pt_runs[0]["precision_reason"],
        "ppo_term_master_weights": pt_runs[0].get("master_weights"),
    }
    out["ratio_s_per_step"] = out["ppo_term_s_per_step"] / out["trl_s_per_step"]
    out["ratio_generate"] = out["ppo_term_generate_s"] / out["trl_generate_s"]
    out["ratio_train"] = out["ppo_term_train_s"] / out["trl_train_s"]
    out["ratio_peak_rss"] = out["ppo_term_peak_rss_mib"] / out["trl_peak_rss_mib"]
    if "ppo_term_peak_cuda_mib" in out and "trl_peak_cuda_mib" in out:
        out["ratio_peak_cuda"] = out["ppo_term_peak_cuda_mib"] / out["trl_peak_cuda_mib"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", nargs="+", default=["lora", "full"], choices=["lora", "full"])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--steps", type=int, default=3, help="timed steps per side per round")
    ap.add_argument("--trl-python", default="/tmp/trlbench/bin/python")
    ap.add_argument("--trl-model", type=Path, default=Path("/tmp/models/smollm2-135m-instruct-t4"))
    ap.add_argument("--harness", type=Path, default=HARNESS, help="the TRL harness folder (bench_ppo.py, convert_model.py)")
    ap.add_argument("--model", help="a model directory (transformers 5) in place of the default model, for both sides")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="more recipe overrides, ppo-term's side")
    ap.add_argument("--work", type=Path, default=Path("/tmp/ppo-term-compare-trl"), help="raw outputs and logs")
    ap.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "compare_trl.json")
    args = ap.parse_args()

    args.work.mkdir(parents=True, exist_ok=True)
    log = args.work / "log.txt"
    model = trl_model(args.trl_python, args.harness, args.model, args.trl_model, log)
    overrides = [*(["--set", f"model={args.model}"] if args.model else []), *(a for o in args.overrides for a in ("--set", o))]
    raw: dict[str, dict[str, list]] = {v: {"ppo_term": [], "trl": []} for v in args.variants}
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    for rnd in range(args.rounds):
        for variant in args.variants:
            pt_out = args.work / f"ppo_term_{variant}_{rnd}.json"
            run([sys.executable, "bench/ppo_step.py", "--recipe", str(RECIPE), "--set",
                 f"lora.enabled={'true' if variant == 'lora' else 'false'}", *overrides, "--warmup", str(args.warmup),
                 "--steps", str(args.steps), "--json", str(pt_out)], log)
            raw[variant]["ppo_term"].append(json.loads(pt_out.read_text()))
            trl_out = args.work / f"trl_{variant}_{rnd}.json"
            run([args.trl_python, str(WITH_CUDA_PEAK), str(args.harness / "bench_ppo.py"), "--variant", variant, "--model", str(model),
                 "--warmup", str(args.warmup), "--steps", str(args.steps), "--out", str(trl_out)], log)
            raw[variant]["trl"].append(json.loads(trl_out.read_text()))

    result = {variant: {**summarize(r["ppo_term"], r["trl"]), "measured": started} for variant, r in raw.items()}
    # a variant not re-run this time keeps its earlier figures (each says when it was measured)
    if args.json.exists():
        earlier = json.loads(args.json.read_text())
        for variant in ("lora", "full"):
            if variant not in result and variant in earlier:
                result[variant] = {"measured": earlier.get("meta", {}).get("date"), **earlier[variant]}
    trl_env = raw[args.variants[0]]["trl"][0].get("env", {})
    result["meta"] = {
        "date": started, "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine(), "trl_env": trl_env, "rounds": args.rounds, "warmup": args.warmup,
        "steps_per_round": args.steps, "command": " ".join(["python", "bench/compare_trl.py", *sys.argv[1:]]),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))

    print(f"\n{'variant':8} {'side':9} {'gen s':>7} {'score s':>8} {'train s':>8} {'step s':>7} {'tok/s':>7} {'peak RSS MiB':>13}")
    for variant in args.variants:
        r = result[variant]
        for side, key in (("ppo-term", "ppo_term"), ("TRL", "trl")):
            print(f"{variant:8} {side:9} {r[f'{key}_generate_s']:7.2f} {r[f'{key}_score_s']:8.3f} "
                  f"{r[f'{key}_train_s']:8.2f} {r[f'{key}_s_per_step']:7.2f} {r[f'{key}_tokens_per_s']:7.1f} "
                  f"{r[f'{key}_peak_rss_mib']:13.0f}")
        print(f"{variant:8} {'ratio':9} {r['ratio_generate']:7.2f} {'':8} {r['ratio_train']:8.2f} "
              f"{r['ratio_s_per_step']:7.2f} {'':7} {r['ratio_peak_rss']:13.2f}")
        if "ratio_peak_cuda" in r:
            print(f"{variant:8} peak CUDA MiB: ppo-term {r['ppo_term_peak_cuda_mib']:.0f} ({r['ppo_term_precision']}), "
                  f"TRL {r['trl_peak_cuda_mib']:.0f}, ratio {r['ratio_peak_cuda']:.2f}")
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
