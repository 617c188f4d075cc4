"""Weights prepared for decoding: the LoRA adapter merged, and on a CPU packed for oneDNN.

A decode step multiplies a few rows (one per sequence) by every weight of the model. Two things
make that cheaper than running the training-time modules as they are:

- merging: W + BA in place of W, with the adapter layers off: the adapter's two extra small
  matmuls per projection cost ~20% of generation on a CPU;
- packing: each weight reordered once per context (a rollout) into oneDNN's blocked layout
  (`torch.ops.mkldnn._reorder_linear_weight`) and multiplied by `mkldnn._linear_pointwise`: 1.15x
  the tokens/s of plain merged weights at 16 sequences in bf16 on an AVX-512 CPU, 1.17x in fp32
  on an AVX2 one.
  `python bench/decode_weights.py` measures both on the default model.

Neither modifies a trained or frozen weight: the merged and packed weights are new tensors that
live only inside the context.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import Tensor, nn


def can_pack(device: torch.device, dtype: torch.dtype) -> bool:
    """oneDNN's packed matmul on a CPU: fp32, or bf16 where the precision choice was bf16 (so the
    CPU runs it fast)."""
    mkldnn = getattr(torch.ops, "mkldnn", None)
    if not (device.type == "cpu" and torch.backends.mkldnn.is_available()
            and hasattr(mkldnn, "_reorder_linear_weight") and hasattr(mkldnn, "_linear_pointwise")):
        return False
    return dtype == torch.float32 or (dtype == torch.bfloat16 and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def _is_peft(model: nn.Module) -> bool:
    return hasattr(model, "disable_adapter") and hasattr(model, "active_adapter")


def _effective_weights(model: nn.Module) -> Iterator[tuple[nn.Linear, Tensor]]:
    """Every matmul the adapter-off model runs, with the weight it should run with (W + BA where
    an adapter layer wraps it; summed in fp32). One at a time: a packed caller keeps no merged copy."""
    wrapped: set[int] = set()
    if _is_peft(model):
        from peft.tuners.lora import LoraLayer

        adapter = model.active_adapter
        for module in model.modules():
            if isinstance(module, LoraLayer) and adapter in module.lora_A:
                base = module.get_base_layer()
                merged = base.weight.detach().float() + module.get_delta_weight(adapter).detach().float()
                wrapped.add(id(base))
                yield base, merged.to(base.weight.dtype)
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and id(module) not in wrapped and "lora_" not in name:
            yield module, module.weight.detach()


def _packed_forward(weight: Tensor, bias: Tensor | None, rows: int, dtype: torch.dtype):
    packed = torch.ops.mkldnn._reorder_linear_weight(weight.to(dtype).contiguous(), rows)
    bias = None if bias is None else bias.detach().to(dtype)
    out_features = weight.shape[0]

    def forward(x: Tensor) -> Tensor:
        # the output (dtype) autocast's linear would give; inputs of any leading shape
        lead = x.shape[:-1]
        x2 = x.reshape(-1, x.shape[-1]).to(dtype).contiguous()
        return torch.ops.mkldnn._linear_pointwise(x2, packed, bias, "none", [], "").reshape(*lead, out_features)

    return forward


@contextlib.contextmanager
def decode_weights(model: nn.Module, dtype: torch.dtype, rows: int) -> Iterator[None]:
    """Inside: the model decodes with merged (and, where `can_pack`, packed) weights.

    `rows` is the number of sequences decoded together: oneDNN picks the packed layout for it.
    Without an adapter and without packing this does nothing; inside another one for the same
    model it does nothing either (the weights are prepared once for several generate() calls).
    """
    device = next(model.parameters()).device
    # fp32 at one sequence: packing, once a context, is not paid back (0.93x measured on AVX2)
    pack = can_pack(device, dtype) and (rows > 1 or dtype == torch.bfloat16)
    peft = _is_peft(model)
    if (not peft and not pack) or getattr(model, "_decode_weights_active", False):
        yield
        return
    model._decode_weights_active = True
    swapped: list[tuple[nn.Linear, Tensor]] = []
    patched: list[nn.Linear] = []
    try:
        with torch.no_grad():
            for linear, weight in _effective_weights(model):
                if pack:
                    linear.forward = _packed_forward(weight, linear.bias, rows, dtype)
                    patched.append(linear)
                elif weight is not linear.weight:
                    swapped.append((linear, linear.weight))
                    linear.weight = nn.Parameter(weight, requires_grad=False)
        with model.disable_adapter() if peft else contextlib.nullcontext():
            yield
    finally:
        model._decode_weights_active = False
        for linear, original in swapped:
            linear.weight = original
        for linear in patched:
            del linear.forward
