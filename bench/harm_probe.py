#!/usr/bin/env python3
"""Can the base model tell harmful from benign prompts at all? A linear probe on its hidden states.

    python bench/harm_probe.py                              # recipe prompts -> XSTest
    python bench/harm_probe.py --train recipes/prompts/safety.jsonl --layers 15 18 21

PPO re-weights what the model already does; it can make refusal depend on the prompt only as far
as the model's own representation of the prompt separates the two kinds. This fits a logistic
regression (torch, L2) on the last prompt position's hidden state of each training prompt (label
harmful / benign), then scores XSTest's prompts (`../shared/data/xstest`, evaluation only; unsafe
vs safe): accuracy, ROC AUC and the share of unsafe prompts caught while at most 10% of the safe
ones are flagged. It is a rough gauge (one layer, one position, a linear read-out), not a bound.
Writes bench/results/harm_probe.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402


def hidden_states(lm, tok, prompts: list[str], system: str | None = None) -> torch.Tensor:
    """[prompts, layers + 1, hidden]: each layer's state at the position that starts the answer."""
    rows = []
    for prompt in prompts:
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
        ids = tok.apply_chat_template(messages, add_generation_prompt=True,
                                      return_tensors="pt", return_dict=True)["input_ids"]
        with torch.inference_mode():
            states = lm(ids, output_hidden_states=True).hidden_states
        rows.append(torch.stack([h[0, -1] for h in states]))
    return torch.stack(rows).float()


def fit_logistic(x: torch.Tensor, y: torch.Tensor, l2: float = 1e-2) -> tuple[torch.Tensor, torch.Tensor]:
    """Standardised inputs; weights by L-BFGS on the mean log-loss plus l2 * |w|^2."""
    mu, sd = x.mean(0), x.std(0) + 1e-6
    z = (x - mu) / sd
    w = torch.zeros(x.shape[1], requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=500, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(z @ w + b, y) + l2 * w.square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach() / sd, b.detach() - (mu / sd) @ w.detach()


def roc_auc(scores: torch.Tensor, y: torch.Tensor) -> float:
    """P(score of a random positive > score of a random negative), ties counting half."""
    pos, neg = scores[y == 1], scores[y == 0]
    diff = pos[:, None] - neg[None, :]
    return float((diff > 0).float().mean() + 0.5 * (diff == 0).float().mean())


def recall_at_fpr(scores: torch.Tensor, y: torch.Tensor, fpr: float = 0.10) -> float:
    """Share of positives above the threshold that flags at most `fpr` of the negatives."""
    neg = scores[y == 0].sort(descending=True).values
    k = int(fpr * len(neg))  # this many negatives may lie above the threshold
    threshold = neg[k] if k < len(neg) else neg[-1] - 1
    return float((scores[y == 1] > threshold).float().mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", type=Path, default=ROOT / "recipes/prompts/safety.jsonl")
    ap.add_argument("--xstest", type=Path, default=ROOT.parent / "shared/data/xstest/xstest_prompts.csv")
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--layers", type=int, nargs="+", default=[12, 15, 18, 21, 24, 30])
    ap.add_argument("--system", default=None, help="system prompt (default: the chat template's own)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench/results/harm_probe.json")
    args = ap.parse_args()

    from ppo_term.models import load_causal_lm, load_tokenizer, resolve_model

    path = resolve_model(args.model, progress=False)
    tok, lm = load_tokenizer(path), load_causal_lm(path, torch.device("cpu")).eval()
    train = [json.loads(line) for line in args.train.read_text().splitlines() if line.strip()]
    test = list(csv.DictReader(args.xstest.open()))
    t0 = time.time()
    x_train = hidden_states(lm, tok, [r["prompt"] for r in train], args.system)
    y_train = torch.tensor([float(r["label"] == "harmful") for r in train])
    x_test = hidden_states(lm, tok, [r["prompt"] for r in test], args.system)
    y_test = torch.tensor([float(r["label"] == "unsafe") for r in test])
    print(f"hidden states of {len(train)} + {len(test)} prompts in {time.time() - t0:.0f}s")

    results = []
    print("| layer | accuracy | ROC AUC | unsafe caught at 10% of safe flagged |\n|---|---|---|---|")
    for layer in args.layers:
        w, b = fit_logistic(x_train[:, layer], y_train)
        scores = x_test[:, layer] @ w + b
        row = {"layer": layer, "accuracy": float(((scores > 0).float() == y_test).float().mean()),
               "auc": roc_auc(scores, y_test), "recall_at_fpr10": recall_at_fpr(scores, y_test)}
        results.append(row)
        print(f"| {layer} | {row['accuracy']:.3f} | {row['auc']:.3f} | {row['recall_at_fpr10']:.3f} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "date": time.strftime("%Y-%m-%d %H:%M"), "model": args.model, "train": str(args.train.relative_to(ROOT))
        if args.train.is_relative_to(ROOT) else str(args.train), "n_train": len(train), "n_test": len(test),
        "system": args.system,
        "layers": results}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
