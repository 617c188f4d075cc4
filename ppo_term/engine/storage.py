"""Weights stored in bf16, arithmetic in fp32: full fine-tuning's memory where bf16 matmuls are slow.

On a CPU without fast bf16 (AVX2 only) the compute dtype is fp32, and full fine-tuning's fp32
weights, their frozen reference copy and AdamW's two moments hold 2.1 GB for the default model.
With `master_weights = "bf16"` there, `store_bf16` keeps every parameter in bf16 (the reference
copy and the moments follow) and runs each module in fp32: a matmul casts its weight to fp32 for
that one call, and saves the bf16 weight, not the cast, for the backward pass, which casts again.
A weight of more than `CHUNK_VALUES` (the output head) goes a block of rows at a time, forward
and backward. So no pass ever holds an fp32 copy of the model, nor of its head; the logits and
log-probs are fp32 as with fp32 weights, and the weight gradients are rounded to bf16 like the
weights. Training passes keep the activations they save for backward in bf16 (`saved_in_bf16`).

Buffers (the rotary frequencies) stay fp32. The module types it knows are below; a model with any
other parametrised module is refused with the recipe field to change, not run in bf16 silently.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


# A weight larger than this (the vocabulary-wide output head: 28M values) is cast and multiplied
# a block of rows at a time, so no pass holds its fp32 cast or fp32 gradient whole (113 MB each
# for the default model's head); the smaller ones are cast whole
CHUNK_VALUES = 1 << 22


def _row_blocks(weight: Tensor) -> list[slice]:
    rows = max(1, CHUNK_VALUES // weight.shape[1])
    return [slice(s, s + rows) for s in range(0, weight.shape[0], rows)]


class _Fp32Linear(torch.autograd.Function):
    """y = x W^T + b with W (and b) cast to fp32 for the call; the backward casts W again."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.bias_dtype = None if bias is None else bias.dtype
        bias32 = None if bias is None else bias.float()
        if weight.numel() <= CHUNK_VALUES:
            return F.linear(x, weight.float(), bias32)
        # the output's columns a block of weight rows at a time
        return torch.cat([F.linear(x, weight[b].float(), None if bias32 is None else bias32[b])
                          for b in _row_blocks(weight)], dim=-1)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        x, weight = ctx.saved_tensors
        grad_x = grad_w = grad_b = None
        rows = grad_out.reshape(-1, grad_out.shape[-1])
        x_rows = x.reshape(-1, x.shape[-1])
        blocks = [slice(None)] if weight.numel() <= CHUNK_VALUES else _row_blocks(weight)
        if ctx.needs_input_grad[1]:
            grad_w = torch.empty_like(weight)
        for b in blocks:
            w = weight[b].float()
            if ctx.needs_input_grad[0]:
                part = rows[:, b] @ w  # dL/dx = dL/dy W, summed over the blocks
                grad_x = part if grad_x is None else grad_x.add_(part)
            if ctx.needs_input_grad[1]:
                grad_w[b] = rows[:, b].t() @ x_rows  # dL/dW = dL/dy^T x, rounded to the weight's dtype
        if grad_x is not None:
            grad_x = grad_x.reshape(*grad_out.shape[:-1], weight.shape[1])
        if ctx.bias_dtype is not None and ctx.needs_input_grad[2]:
            grad_b = rows.sum(0).to(ctx.bias_dtype)
        return grad_x, grad_w, grad_b


class Fp32Linear(nn.Linear):
    """nn.Linear whose (bf16) weight is multiplied in fp32."""

    def forward(self, x: Tensor) -> Tensor:
        if self.weight.dtype == x.dtype:
            return F.linear(x, self.weight, self.bias)
        return _Fp32Linear.apply(x.float(), self.weight, self.bias)


class Fp32Embedding(nn.Embedding):
    """nn.Embedding whose (bf16) rows come out in fp32: the residual stream stays fp32."""

    def forward(self, ids: Tensor) -> Tensor:
        return super().forward(ids).float()


class Fp32LayerNorm(nn.LayerNorm):
    def forward(self, x: Tensor) -> Tensor:
        weight = None if self.weight is None else self.weight.float()
        bias = None if self.bias is None else self.bias.float()
        return F.layer_norm(x.float(), self.normalized_shape, weight, bias, self.eps)


_SWAP = {nn.Linear: Fp32Linear, nn.Embedding: Fp32Embedding, nn.LayerNorm: Fp32LayerNorm}


def _computes_in_fp32(module: nn.Module) -> bool:
    """Modules that already compute in fp32 from a bf16 weight: transformers' RMSNorms upcast
    the states and multiply by the weight, which type promotion makes fp32."""
    return type(module).__name__.endswith("RMSNorm")


def store_bf16(lm: nn.Module) -> None:
    """Parameters of `lm` to bf16 in place, its modules computing in fp32 (see the module doc).

    Raises ValueError naming the first module it cannot run so (a model of an architecture whose
    layers are not plain Linear / Embedding / LayerNorm / RMSNorm).
    """
    for name, module in lm.named_modules():
        own = list(module.parameters(recurse=False))
        if not own or type(module) in _SWAP.values() or _computes_in_fp32(module):
            continue
        if type(module) not in _SWAP:
            raise ValueError(f"bf16 weights with fp32 arithmetic do not know the module {name!r} "
                             f"({type(module).__name__}); use master_weights = \"fp32\"")
    for module in lm.modules():
        if type(module) in _SWAP:
            module.__class__ = _SWAP[type(module)]
    for param in lm.parameters():  # tied weights are one parameter: cast once
        param.data = param.data.to(torch.bfloat16)


# Activations a training pass saves for its backward, at or above this many values, are kept in
# bf16 (a layer's MLP states: 4 x 93 x 1536 in a minibatch of the default work); smaller ones,
# and every tensor that is not fp32, are kept as they are
SAVED_MIN_VALUES = 1 << 16


def _pack(t: Tensor):
    if t.dtype != torch.float32 or t.numel() < SAVED_MIN_VALUES or isinstance(t, nn.Parameter):
        return t
    return (t.to(torch.bfloat16),)  # a tuple marks what unpack casts back


def _unpack(packed) -> Tensor:
    return packed[0].float() if isinstance(packed, tuple) else packed


def saved_in_bf16():
    """Within this context, the fp32 activations autograd saves are rounded to bf16 and cast back
    for the backward pass: half their memory (the largest part of a minibatch's, ~545 of ~800 MB
    saved for the default model's full fine-tuning work). The forward values are untouched; the
    backward's products see each saved activation rounded like the weights it meets there."""
    return torch.autograd.graph.saved_tensors_hooks(_pack, _unpack)
