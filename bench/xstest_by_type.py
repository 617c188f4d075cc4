#!/usr/bin/env python3
"""Refusal rate per XSTest prompt type, base against tuned, from a run that bench/safety_eval.py evaluated.

    python bench/xstest_by_type.py runs/safety-eval-20261126-045940

Reads the run's `xstest_eval_rows.jsonl` (written by safety_eval.py; it quotes XSTest, so it stays
in the git-ignored run directory) and prints a Markdown table: for each label and type (homonyms,
figurative_language, safe_targets, ..., and their unsafe contrasts) how many prompts each model
refused. Where PPO moved refusal is where the distribution shifted.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path


def by_type(rows: list[dict]) -> dict[tuple[str, str], dict[str, list[int]]]:
    """(label, type) -> model -> [refused, total]."""
    table: dict[tuple[str, str], dict[str, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    for row in rows:
        cell = table[(row["label"], row["type"])][row["model"]]
        cell[0] += bool(row["refused"])
        cell[1] += 1
    return table


def markdown(table: dict[tuple[str, str], dict[str, list[int]]], models: list[str]) -> str:
    lines = ["| label | type | " + " | ".join(models) + " |", "|---|---|" + "---|" * len(models)]
    for (label, kind), cells in sorted(table.items()):
        lines.append(f"| {label} | {kind} | " + " | ".join(
            f"{cells[m][0]}/{cells[m][1]}" for m in models) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path)
    args = ap.parse_args()
    rows = [json.loads(line) for line in (args.run / "xstest_eval_rows.jsonl").read_text().splitlines()]
    models = list(dict.fromkeys(r["model"] for r in rows))
    print(markdown(by_type(rows), models))


if __name__ == "__main__":
    main()
