"""Evaluate checkpoints on a fixed prompt set: responses, reward components, refusal, KL to the base.

A target is a model name or directory (the base model), a run directory (what the run hands over:
checkpoints/average where its recipe's [average] made one, else its latest checkpoint) or a
checkpoint directory. Used by `ppo-term eval`, `compare`, `shift` and `export`.
"""

from __future__ import annotations

import contextlib

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ppo_term.builtin.refusal import judge
from ppo_term.engine import ppo
from ppo_term.engine.decode import decode_weights
from ppo_term.engine.rollout import (Batch, candidates_cache, chat_text, eos_ids, prompt_cache, sampling_kwargs,
                                     to_batch)
from ppo_term.recipe import PromptItem, RecipeError


class TargetError(Exception):
    """The target is neither a model, a run directory nor a checkpoint."""


@dataclass
class Target:
    spec: str
    base: str  # the base model name or directory
    adapter: Path | None = None  # a PEFT adapter directory
    full: Path | None = None  # a fully fine-tuned model directory
    recipe: Path | None = None  # the run's recipe, when the target came from a run

    @property
    def label(self) -> str:
        """A short name for tables: the folder's name, with the run's name for a checkpoint."""
        p = Path(self.spec)
        return f"{p.parent.parent.name}/{p.name}" if p.name.startswith("step-") else p.name


def resolve_target(spec: str) -> Target:
    path = Path(spec).expanduser()
    if (path / "state.json").is_file() and (path / "checkpoints").is_dir():
        from ppo_term.runs import RunDir

        average = path / "checkpoints" / "average"
        ckpt = average if (average / "soup.json").is_file() else RunDir(path).latest_checkpoint()
        if ckpt is None:
            raise TargetError(f"run {path} has no checkpoint yet")
        target = resolve_target(str(ckpt))
        target.spec = spec
        return target
    if (path / "trainer_state.json").is_file():
        state = json.loads((path / "trainer_state.json").read_text())
        recipe = path.parent.parent / "recipe.toml"
        recipe = recipe if recipe.is_file() else None
        if (path / "adapter_config.json").is_file():
            return Target(spec, state["model_path"], adapter=path, recipe=recipe)
        return Target(spec, state["model_path"], full=path, recipe=recipe)
    if (path / "soup.json").is_file():  # `ppo-term soup` output: an adapter or a full model, and its base
        base = json.loads((path / "soup.json").read_text())["base"]
        if (path / "adapter_config.json").is_file():
            return Target(spec, base, adapter=path)
        return Target(spec, base, full=path)
    if (path / "adapter_config.json").is_file():
        config = json.loads((path / "adapter_config.json").read_text())
        return Target(spec, config["base_model_name_or_path"], adapter=path)
    if path.exists() and not (path / "config.json").is_file():
        raise TargetError(f"{spec} is not a model directory, a run directory or a checkpoint")
    return Target(spec, spec)


class LoadedTarget:
    """The tuned model and a way to its base, for generation and per-token comparisons."""

    def __init__(self, target: Target, device: torch.device, precision: str = "fp32"):
        """`precision` as in a recipe (auto, fp32, bf16); fp32 by default, for exact comparisons."""
        from ppo_term.engine.policy import cast_frozen_linears
        from ppo_term.engine.precision import choose
        from ppo_term.models import load_causal_lm, load_tokenizer, resolve_model

        self.target, self.device = target, device
        self.precision = choose(precision, device)
        base_path = resolve_model(target.base)
        self.tokenizer = load_tokenizer(base_path)
        self.base_ref = None
        if target.full is not None:
            self.model = load_causal_lm(str(target.full), device)
            self.base_ref = load_causal_lm(base_path, device)
            cast_frozen_linears(self.model, self.precision.dtype)
            cast_frozen_linears(self.base_ref, self.precision.dtype)
        else:
            lm = load_causal_lm(base_path, device)
            cast_frozen_linears(lm, self.precision.dtype)
            if target.adapter is not None:
                from peft import PeftModel

                self.model = PeftModel.from_pretrained(lm, str(target.adapter)).eval()
            else:
                self.model = lm

    @property
    def lm(self):
        return self.model.get_base_model() if hasattr(self.model, "disable_adapter") else self.model

    def base(self):
        """Context manager yielding the base model (adapter off, or the separate base copy)."""
        if self.base_ref is not None:
            return contextlib.nullcontext(self.base_ref)
        if hasattr(self.model, "disable_adapter"):

            @contextlib.contextmanager
            def off():
                with self.model.disable_adapter():
                    yield self.lm

            return off()
        return contextlib.nullcontext(self.model)

    @torch.no_grad()
    def generate(self, items: list[PromptItem], samples: int, max_new_tokens: int, temperature: float,
                 system_prompt: str | None = None) -> Batch:
        texts = [chat_text(self.tokenizer, it.prompt, system_prompt) for it in items]
        enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        eos = eos_ids(self.tokenizer, self.lm)
        kwargs = sampling_kwargs(temperature, n=samples, enc=enc)
        with self.autocast(), decode_weights(self.model, self.precision.dtype, len(kwargs["input_ids"])):
            # several samples a prompt start from the prompt's cache, computed once
            cache = prompt_cache(self, enc) if samples > 1 else None
            out = self.model.generate(**kwargs, **candidates_cache(cache, self.lm, samples),
                                      max_new_tokens=max_new_tokens, eos_token_id=eos,
                                      pad_token_id=self.tokenizer.pad_token_id)
        return to_batch(self.tokenizer, items, enc, out, eos, samples, temperature if temperature > 0 else 1.0)

    @torch.no_grad()
    def token_logits(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits of the tuned and the base model at each response position ([B, T, V] each)."""
        ids, att = batch.input_ids, batch.attention_mask
        pos = (att.cumsum(-1) - 1).clamp(min=0)
        # only the states before each response token go through the output head
        keep = batch.response_ids.shape[1] + 1
        with self.autocast():
            tuned = self.model(input_ids=ids, attention_mask=att, position_ids=pos,
                               logits_to_keep=keep).logits[:, :-1].float()
            with self.base() as base:
                ref = base(input_ids=ids, attention_mask=att, position_ids=pos, logits_to_keep=keep).logits[:, :-1].float()
        return tuned, ref

    def autocast(self):
        if self.precision.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.precision.dtype)


def load_prompts(path: Path) -> list[PromptItem]:
    """JSONL (a `prompt` field), CSV (a `prompt` column) or TXT (a prompt a line); other fields kept."""
    if not path.is_file():
        raise RecipeError(path, "", "prompt file not found")
    if path.suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if "prompt" not in (reader.fieldnames or []):
                raise RecipeError(path, "prompt", f"the CSV needs a 'prompt' column (has {reader.fieldnames})")
            return [PromptItem(prompt=row.pop("prompt"), metadata=row) for row in reader if row.get("prompt")]
    from ppo_term.recipe import load_prompt_file

    return load_prompt_file(path)


def evaluate(loaded: LoadedTarget, items: list[PromptItem], samples: int = 1, max_new_tokens: int = 48,
             temperature: float = 0.0, rewards: list | None = None, seed: int = 0, batch_size: int = 16,
             progress=None) -> list[dict[str, Any]]:
    """One row per sample: the prompt's fields, response, reward components, refusal, KL to the base."""
    from ppo_term.engine.rollout import score

    torch.manual_seed(seed)
    rows: list[dict[str, Any]] = []
    for i in range(0, len(items), batch_size):
        chunk = items[i : i + batch_size]
        batch = loaded.generate(chunk, samples, max_new_tokens, temperature)
        if rewards:
            score(rewards, batch)
        tuned, ref = loaded.token_logits(batch)
        t = temperature if temperature > 0 else 1.0
        lp = ppo.logprobs_from_logits(tuned, batch.response_ids, t)
        ref_lp = ppo.logprobs_from_logits(ref, batch.response_ids, t)
        kl = ((lp - ref_lp) * batch.mask).sum(-1)
        for j, (item, response) in enumerate(zip(batch.items, batch.responses)):
            row = {"prompt": item.prompt, **item.metadata, "response": response,
                   **judge(response), "kl": float(kl[j]),
                   "length": int(batch.mask[j].sum()), "finished": bool(batch.finished[j])}
            if rewards:
                row["reward"] = float(batch.scores[j])
                row.update({f"reward/{k}": v[j] for k, v in batch.components.items()})
            rows.append(row)
        if progress is not None:
            progress(len(chunk))
    return rows


def summarize(rows: list[dict[str, Any]], group_by: str = "label") -> dict[str, dict[str, float]]:
    """Mean reward and components, refusal rate, KL and length: overall and per `group_by` value."""
    groups: dict[str, list[dict[str, Any]]] = {"all": rows}
    for row in rows:
        if group_by in row:
            groups.setdefault(f"{group_by}={row[group_by]}", []).append(row)
    out = {}
    for name, rs in groups.items():
        keys = [k for k in rs[0] if k == "reward" or k.startswith("reward/")]
        out[name] = {"n": len(rs), "refusal_rate": sum(r["refused"] for r in rs) / len(rs),
                     "evasive_rate": sum(r.get("evasive", False) for r in rs) / len(rs),
                     "kl": sum(r["kl"] for r in rs) / len(rs), "length": sum(r["length"] for r in rs) / len(rs),
                     **{k: sum(r[k] for r in rs) / len(rs) for k in keys}}
    return out


# ---- shift: how the next-token distribution moved along a response ----

def distribution_stats(tuned_logits: torch.Tensor, base_logits: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Per position: KL(tuned || base), the tuned entropy and the base entropy (nats), from [..., V] logits."""
    lt, lb = tuned_logits.float().log_softmax(-1), base_logits.float().log_softmax(-1)
    pt, pb = lt.exp(), lb.exp()
    return (pt * (lt - lb)).sum(-1), -(pt * lt).sum(-1), -(pb * lb).sum(-1)


def shift(loaded: LoadedTarget, prompt: str, max_new_tokens: int = 48, top: int = 3) -> dict[str, Any]:
    """For one prompt: the tuned model's greedy response, and at each position the top tokens under
    both models with their probabilities, each model's entropy and KL(tuned || base)."""
    batch = loaded.generate([PromptItem(prompt=prompt)], 1, max_new_tokens, 0.0)
    tuned, ref = loaded.token_logits(batch)
    n = int(batch.mask[0].sum())
    kl, h_tuned, h_base = distribution_stats(tuned[0, :n], ref[0, :n])
    positions = []
    for t in range(n):
        p_tuned, p_base = tuned[0, t].softmax(-1), ref[0, t].softmax(-1)
        topk = torch.topk(torch.maximum(p_tuned, p_base), top).indices.tolist()
        positions.append({
            "position": t,
            "token": loaded.tokenizer.decode([int(batch.response_ids[0, t])]),
            "kl": float(kl[t]),
            "entropy_tuned": float(h_tuned[t]),
            "entropy_base": float(h_base[t]),
            "top": [{"token": loaded.tokenizer.decode([i]), "p_tuned": float(p_tuned[i]), "p_base": float(p_base[i])}
                    for i in topk],
        })
    biggest = sorted(range(n), key=lambda i: positions[i]["kl"], reverse=True)[:5]
    return {"prompt": prompt, "response": batch.responses[0], "positions": positions, "largest_shift": biggest}


def shift_by_group(loaded: LoadedTarget, items: list[PromptItem], max_new_tokens: int = 48,
                   group_by: str = "label", batch_size: int = 16) -> dict[str, dict[str, float]]:
    """Mean per-token KL(tuned || base) and entropy change along the tuned model's greedy responses."""
    sums: dict[str, list[float]] = {}
    for i in range(0, len(items), batch_size):
        batch = loaded.generate(items[i : i + batch_size], 1, max_new_tokens, 0.0)
        tuned, ref = loaded.token_logits(batch)
        kl, h_tuned, h_base = distribution_stats(tuned, ref)
        d_ent = h_tuned - h_base
        for j, item in enumerate(batch.items):
            m = batch.mask[j]
            for name in ("all", f"{group_by}={item.metadata.get(group_by, '-')}"):
                acc = sums.setdefault(name, [0, 0.0, 0.0])
                acc[0] += 1
                acc[1] += float((kl[j] * m).sum() / m.sum())
                acc[2] += float((d_ent[j] * m).sum() / m.sum())
    return {k: {"n": n, "kl_per_token": s_kl / n, "entropy_change": s_ent / n} for k, (n, s_kl, s_ent) in sums.items()}


# ---- export ----

def export_merged(target: Target, out: Path) -> Path:
    """The adapter merged into its base: a plain Hugging Face model directory (safetensors + tokenizer)."""
    from ppo_term.models import load_causal_lm, load_tokenizer, resolve_model

    device = torch.device("cpu")
    base_path = resolve_model(target.base)
    if target.full is not None:
        model = load_causal_lm(str(target.full), device)
    elif target.adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(load_causal_lm(base_path, device), str(target.adapter)).merge_and_unload()
    else:
        raise TargetError(f"{target.spec} is a base model, not a checkpoint: nothing to export")
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    load_tokenizer(base_path).save_pretrained(out)
    return out
