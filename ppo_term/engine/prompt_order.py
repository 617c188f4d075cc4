"""The order the training prompts come in: a seeded shuffle per epoch, stratified or in contrast pairs."""

from __future__ import annotations

import random
import re


def epoch_order(items: list, rng: random.Random, stratify: str | None = None,
                pairs: list[tuple[int, ...]] | None = None) -> list[int]:
    """A shuffle of the item indices, consumed from the end (`list.pop()`).

    With `stratify` (a metadata field), each value's items are shuffled apart and then spread
    evenly through the epoch, so any run of consecutive prompts holds each value in proportion
    (to about one prompt): a batch of 6 from 140 harmful and 155 benign has 2 or 3 harmful ones
    where a plain shuffle gives 0 to 6, and the policy is not pushed one way for steps at a time.

    With `pairs` (from `contrast_pairs`), the pairs are shuffled and each pair's prompts follow
    each other, so a batch of an even number of prompts holds whole pairs.
    """
    if pairs is not None:
        units = list(pairs)
        rng.shuffle(units)
        return [i for unit in reversed(units) for i in reversed(unit)]
    order = list(range(len(items)))
    if stratify is None:
        rng.shuffle(order)
        return order
    groups: dict[str, list[int]] = {}
    for i in order:
        groups.setdefault(str(items[i].metadata[stratify]), []).append(i)
    keyed: list[tuple[float, int]] = []
    for value in sorted(groups):
        members = groups[value]
        rng.shuffle(members)
        # the k-th of n members sits at (k + offset) / n of the way through the epoch
        offset = rng.random()
        keyed += [((k + offset) / len(members), i) for k, i in enumerate(members)]
    keyed.sort(reverse=True)  # pop() takes the smallest position first
    return [i for _, i in keyed]


def word_features(text: str) -> set[str]:
    """The words of a prompt and its pairs of adjacent words, lower-cased."""
    words = re.findall(r"[a-z0-9']+", text.lower())
    return set(words) | {f"{a} {b}" for a, b in zip(words, words[1:])}


def similarity(a: set[str], b: set[str]) -> float:
    """Jaccard overlap of two prompts' word features."""
    return len(a & b) / len(a | b) if a or b else 0.0


def contrast_pairs(items: list, field: str) -> list[tuple[int, ...]]:
    """Each prompt matched with the prompt of another `field` value that shares the most words
    with it ("Why should [a real group] not vote?" with "Why should [garden gnomes] not vote?",
    "How do I kill my neighbour?" with "How do I kill a stuck process?").

    In one batch, what the two have in common is rewarded one way on one and the other way on
    the other, so the shared words cannot decide the answer; only what tells them apart can.
    Matching is greedy, most similar pair first, each prompt in one pair. Prompts left over
    (a value with more prompts than the others) are paired among themselves the same way, and
    an odd one out is a unit of one. Returns the units in the order of `items`' first member.
    """
    features = [word_features(item.prompt) for item in items]
    values = [str(item.metadata[field]) for item in items]

    def match(candidates: list[tuple[float, int, int]], free: set[int]) -> list[tuple[int, int]]:
        out = []
        for _, i, j in sorted(candidates, key=lambda c: (-c[0], c[1], c[2])):
            if i in free and j in free:
                free -= {i, j}
                out.append((i, j))
        return out

    n = len(items)
    free = set(range(n))
    across = [(similarity(features[i], features[j]), i, j)
              for i in range(n) for j in range(i + 1, n) if values[i] != values[j]]
    units: list[tuple[int, ...]] = match(across, free)
    rest = sorted(free)
    units += match([(similarity(features[i], features[j]), i, j)
                    for k, i in enumerate(rest) for j in rest[k + 1:]], free)
    units += [(i,) for i in sorted(free)]
    return sorted(units, key=min)
