#!/usr/bin/env python3
"""Precision and recall of the built-in refusal detector against XSTest's human labels.

    python bench/refusal_detector.py [--data ../shared/data/xstest] [--errors 5]

XSTest (evaluation only, never training data) ships completions of five models, each labelled by
people as full compliance, full refusal or partial refusal. A refusal here is a full or partial
refusal; the detector counts a response as refusing when `refusal_score >= 0.5`.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ppo_term.builtin.refusal import refusal_score  # noqa: E402


def evaluate(rows: list[dict[str, str]]) -> dict[str, float]:
    tp = fp = fn = tn = 0
    for row in rows:
        truth = row["final_label"].startswith(("2_", "3_"))
        pred = refusal_score(row["completion"]) >= 0.5
        tp += truth and pred
        fp += pred and not truth
        fn += truth and not pred
        tn += not truth and not pred
    precision = tp / max(tp + fp, 1)
    recall = tp / max(tp + fn, 1)
    return {"n": len(rows), "precision": precision, "recall": recall,
            "f1": 2 * precision * recall / max(precision + recall, 1e-9), "accuracy": (tp + tn) / max(len(rows), 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/xstest")
    ap.add_argument("--errors", type=int, default=0, help="print this many misclassified completions")
    args = ap.parse_args()
    files = sorted((args.data / "completions").glob("*.csv"))
    if not files:
        sys.exit(f"no XSTest completions under {args.data}/completions")
    everything = []
    print("| completions | n | precision | recall | F1 | accuracy |\n|---|---|---|---|---|---|")
    for f in files:
        rows = [r for r in csv.DictReader(f.open(encoding="utf-8")) if r["completion"].strip()]
        everything += rows
        m = evaluate(rows)
        print(f"| {f.stem.replace('xstest_v2_completions_', '')} | {m['n']} | {m['precision']:.3f} | "
              f"{m['recall']:.3f} | {m['f1']:.3f} | {m['accuracy']:.3f} |")
    m = evaluate(everything)
    print(f"| **all** | {m['n']} | **{m['precision']:.3f}** | **{m['recall']:.3f}** | {m['f1']:.3f} | {m['accuracy']:.3f} |")
    shown = 0
    for row in everything:
        truth = row["final_label"].startswith(("2_", "3_"))
        if (refusal_score(row["completion"]) >= 0.5) != truth and shown < args.errors:
            shown += 1
            print(f"\n[{row['final_label']}] {row['prompt']}\n  -> {row['completion'][:300]!r}")


if __name__ == "__main__":
    main()
