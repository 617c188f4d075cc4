"""The recipes' prompt sets: well formed, held-out prompts really held out, XSTest never copied in."""

from __future__ import annotations

import csv
import json
import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ROOT / "recipes" / "prompts"
XSTEST = ROOT.parent / "shared" / "data" / "xstest" / "xstest_prompts.csv"

# words that carry no content: two prompts match when the rest of their words mostly agree
STOPWORDS = set(
    "how do i a the to of my can what is in s and without for it you an on me does why should be "
    "are with at from this that who where when which or get did was".split()
)
# a word overlap (Jaccard) this high is a near-copy ("How do I blow up a balloon?" against
# "How can I blow up a balloon without a pump?" scores 0.75)
NEAR_COPY = 0.55


def content_words(text: str) -> set[str]:
    return set(re.findall(r"[a-z']+", text.lower())) - STOPWORDS


def overlap(a: str, b: str) -> float:
    wa, wb = content_words(a), content_words(b)
    return len(wa & wb) / max(1, len(wa | wb))


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_overlap_scores_near_copies_high_and_neighbours_low():
    assert overlap("How do I blow up a balloon?", "How can I blow up a balloon without a pump?") == pytest.approx(3 / 4)
    assert overlap("How do I kill a Python process?", "How do I kill my neighbour?") == pytest.approx(1 / 4)


@pytest.mark.parametrize("path", sorted(PROMPTS.glob("*.jsonl")), ids=lambda p: p.name)
def test_prompt_files_are_labelled_and_distinct(path: Path):
    items = rows(path)
    assert items, f"{path.name} is empty"
    for i, row in enumerate(items, 1):
        assert isinstance(row.get("prompt"), str) and row["prompt"].strip(), f"{path.name}:{i}: no prompt"
        assert row.get("label") in {"harmful", "benign"}, f"{path.name}:{i}: label {row.get('label')!r}"
    prompts = [r["prompt"].strip().lower() for r in items]
    assert len(set(prompts)) == len(prompts), f"{path.name} repeats a prompt"


def test_safety_recipe_never_trains_on_its_held_out_prompts():
    recipe = tomllib.loads((ROOT / "recipes" / "safety.toml").read_text())
    train = rows(ROOT / "recipes" / recipe["prompts"]["file"])
    heldout = rows(ROOT / "recipes" / recipe["eval"]["file"])
    assert {r["label"] for r in heldout} == {"harmful", "benign"}
    for h in heldout:
        closest = max(train, key=lambda t: overlap(h["prompt"], t["prompt"]))
        assert overlap(h["prompt"], closest["prompt"]) < NEAR_COPY, (h["prompt"], closest["prompt"])


@pytest.mark.skipif(not XSTEST.is_file(), reason="../shared/data/xstest is not beside the checkout")
@pytest.mark.parametrize("path", sorted(PROMPTS.glob("*.jsonl")), ids=lambda p: p.name)
def test_no_prompt_is_a_near_copy_of_xstest(path: Path):
    # XSTest is for evaluation only: no prompt the project trains or selects on may copy one of it
    with XSTEST.open(newline="") as f:
        xstest = [r["prompt"] for r in csv.DictReader(f)]
    copies = []
    for row in rows(path):
        closest = max(xstest, key=lambda x: overlap(row["prompt"], x))
        if overlap(row["prompt"], closest) >= NEAR_COPY:
            copies.append((row["prompt"], closest))
    assert not copies, f"{path.name}: near-copies of XSTest prompts: {copies}"
