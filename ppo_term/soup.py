"""Weight averaging ("model soups", WARP): one model from the checkpoints of several runs.

Each member's change to the base, delta_i, is weighted: soup = base + sum_i w_i delta_i. Weights
that sum to 1 average the runs; a smaller sum also moves the soup back towards the base.

LoRA: delta_i = s_i B_i A_i (s_i = alpha / r, or alpha / sqrt(r) with rsLoRA), and
sum_i w_i s_i B_i A_i = [w_1 s_1 B_1, ..., w_k s_k B_k] @ [A_1; ...; A_k]: the soup is exactly one
LoRA adapter of rank sum r_i with scale 1, in PEFT's own format, loaded like any other.
Fully fine-tuned checkpoints are averaged weight by weight.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from ppo_term.evaluate import Target, TargetError, resolve_target

# what a soup of plain LoRA adapters may differ in (everything else must agree; the base is checked by name)
_LORA_FREE_FIELDS = {"r", "lora_alpha", "use_rslora", "rank_pattern", "alpha_pattern", "revision",
                     "base_model_name_or_path"}


def _lora_scale(config: dict) -> float:
    r, alpha = config["r"], config["lora_alpha"]
    return alpha / math.sqrt(r) if config.get("use_rslora") else alpha / r


def _check_weights(targets: list[Target], weights: list[float] | None) -> list[float]:
    if weights is None:
        return [1.0 / len(targets)] * len(targets)
    if len(weights) != len(targets):
        raise TargetError(f"--weights has {len(weights)} values for {len(targets)} checkpoints")
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise TargetError(f"--weights must be non-negative with a positive sum, got {weights}")
    return list(weights)


def _soup_adapters(targets: list[Target], weights: list[float], out: Path) -> None:
    from safetensors.torch import load_file, save_file

    configs = [json.loads((t.adapter / "adapter_config.json").read_text()) for t in targets]
    first = configs[0]
    for t, c in zip(targets, configs):
        if c.get("peft_type") != "LORA":
            raise TargetError(f"{t.spec}: only LoRA adapters can be souped (peft_type {c.get('peft_type')!r})")
        if c.get("rank_pattern") or c.get("alpha_pattern") or c.get("use_dora") or c.get("modules_to_save"):
            raise TargetError(f"{t.spec}: per-module ranks, DoRA and modules_to_save are not supported in a soup")
    for t, c in zip(targets[1:], configs[1:]):
        for key in sorted((set(c) | set(first)) - _LORA_FREE_FIELDS):
            if _norm(c.get(key)) != _norm(first.get(key)):
                raise TargetError(f"{t.spec}: adapter_config.json field {key!r} is {c.get(key)!r}, "
                                  f"but {targets[0].spec} has {first.get(key)!r}; soup members must match")
    tensors = [load_file(str(t.adapter / "adapter_model.safetensors")) for t in targets]
    keys = set(tensors[0])
    for t, d in zip(targets[1:], tensors[1:]):
        if set(d) != keys:
            raise TargetError(f"{t.spec}: its adapter holds other weights than {targets[0].spec}'s")
    other = sorted(k for k in keys if ".lora_A." not in k and ".lora_B." not in k)
    if other:
        raise TargetError(f"{targets[0].spec}: only lora_A / lora_B weights can be souped, found {other[0]!r}")
    soup: dict[str, torch.Tensor] = {}
    for key in sorted(keys):
        if ".lora_A." in key:
            # stacked down-projections: the soup's rank is the sum of the members'
            soup[key] = torch.cat([d[key].float() for d in tensors], dim=0).contiguous()
        else:
            # each up-projection carries its member's weight and LoRA scale
            soup[key] = torch.cat([w * _lora_scale(c) * d[key].float()
                                   for d, w, c in zip(tensors, weights, configs)], dim=1).contiguous()
    rank = sum(c["r"] for c in configs)
    config = {**first, "r": rank, "lora_alpha": rank, "use_rslora": False}  # scale alpha / r = 1
    out.mkdir(parents=True, exist_ok=True)
    save_file(soup, str(out / "adapter_model.safetensors"), metadata={"format": "pt"})
    (out / "adapter_config.json").write_text(json.dumps(config, indent=2))


def _norm(value):
    # PEFT writes target_modules as a list in any order
    return sorted(value) if isinstance(value, list) else value


def _soup_full(targets: list[Target], weights: list[float], out: Path) -> None:
    from ppo_term.models import load_causal_lm, load_tokenizer, resolve_model

    device = torch.device("cpu")
    model = load_causal_lm(str(targets[0].full), device)
    soup = {k: torch.zeros_like(v, dtype=torch.float32) for k, v in model.state_dict().items()}
    rest = 1.0 - sum(weights)
    members = [(t.full, w) for t, w in zip(targets, weights)]
    if abs(rest) > 1e-9:  # the weights' shortfall (or excess) goes to the base
        members.append((resolve_model(targets[0].base), rest))
    for i, (path, w) in enumerate(members):
        state = model.state_dict() if i == 0 else load_causal_lm(str(path), device).state_dict()
        if set(state) != set(soup):
            raise TargetError(f"{path}: its weights do not match {targets[0].spec}'s")
        for k, v in state.items():
            soup[k] += w * v.float()
    model.load_state_dict({k: v.to(model.state_dict()[k].dtype) for k, v in soup.items()})
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    load_tokenizer(resolve_model(targets[0].base)).save_pretrained(out)


def make_soup(specs: list[str], out: Path, weights: list[float] | None = None) -> Path:
    """Average the checkpoints `specs` (run directories mean their latest) into `out`."""
    if len(specs) < 1:
        raise TargetError("a soup needs at least one checkpoint")
    targets = [resolve_target(s) for s in specs]
    weights = _check_weights(targets, weights)
    for t in targets:
        if t.adapter is None and t.full is None:
            raise TargetError(f"{t.spec} is a base model, not a checkpoint: nothing to average")
    kinds = {"adapter" if t.adapter is not None else "full" for t in targets}
    if len(kinds) > 1:
        raise TargetError("a soup takes LoRA checkpoints or fully fine-tuned ones, not both")
    bases = {Path(t.base).name for t in targets}
    if len(bases) > 1:
        raise TargetError(f"the checkpoints come from different base models: {sorted(bases)}")
    if kinds == {"adapter"}:
        _soup_adapters(targets, weights, out)
    else:
        _soup_full(targets, weights, out)
    (out / "soup.json").write_text(json.dumps(
        {"members": [{"checkpoint": str((t.adapter or t.full).resolve()), "weight": w}
                     for t, w in zip(targets, weights)],
         "base": targets[0].base, "base_weight": 1.0 - sum(weights)}, indent=2))
    return out
