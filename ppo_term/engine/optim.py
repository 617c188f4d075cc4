"""Optimizers of full fine-tuning: AdamW on bf16 weights with stochastic rounding, and any
AdamW's step inside the backward pass."""

from __future__ import annotations

import logging
import math
from typing import Callable

import torch
from torch import Tensor, nn

log = logging.getLogger(__name__)

# ---- AdamW with bf16 weights and moments, rounded stochastically ----


def _mix32(h: Tensor) -> Tensor:
    """MurmurHash3's 32-bit finalizer on int32 (wrapping products; logical shifts by masking)."""
    h = h ^ ((h >> 16) & 0xFFFF)
    h = h * -2048144789  # 0x85EBCA6B
    h = h ^ ((h >> 13) & 0x7FFFF)
    h = h * -1028477387  # 0xC2B2AE35
    return h ^ ((h >> 16) & 0xFFFF)


def _round_stochastic(x: Tensor, noise: Tensor) -> Tensor:
    """fp32 -> bf16, rounding away from zero with probability (the 16 dropped bits) / 2^16.

    `noise` holds uniform integers in [0, 2^16): adding them to the dropped bits carries into the
    kept ones exactly that often, so the rounded value equals x in expectation.
    """
    bits = x.view(torch.int32) + noise
    return (bits & -65536).view(torch.float32).to(torch.bfloat16)  # -65536 = 0xFFFF0000


def adamw_update(p: Tensor, grad: Tensor, exp_avg: Tensor, exp_avg_sq: Tensor, key: Tensor,
                 lr: Tensor, bias_correction1: Tensor, bias_correction2_sqrt: Tensor,
                 beta1: float, beta2: float, eps: float, weight_decay: float) -> Tensor:
    """One AdamW step on flat tensors, in place, as torch's AdamW computes it. The arithmetic is
    fp32; bf16 tensors get the weight and the second moment rounded stochastically, the first
    moment to nearest. Returns the gradient's squared norm.

    At lr 1e-5 an update is ~1e-3 of a weight or less, below half a bf16 step (2^-9 of it): rounding to
    nearest would drop it every time, stochastic rounding keeps it on average. The second moment's
    0.1% moves (beta2 = 0.999) would vanish the same way; the first moment's 10% ones do not.
    """
    param, g = p.float(), grad.float()
    sq_norm = (g * g).sum()  # the gradient's squared norm, for the step's grad_norm
    param = param * (1 - lr * weight_decay)  # decoupled weight decay
    m = exp_avg.float().lerp(g, 1 - beta1)  # first moment
    v = exp_avg_sq.float() * beta2 + (1 - beta2) * g * g  # second moment
    param = param - (lr / bias_correction1) * m / (v.sqrt() / bias_correction2_sqrt + eps)
    if p.dtype == torch.float32:
        p.copy_(param), exp_avg.copy_(m), exp_avg_sq.copy_(v)
        return sq_norm
    # one hash of (element, key) gives the 16 random bits of each of the two rounded values
    h = _mix32(torch.arange(p.numel(), dtype=torch.int32, device=p.device) + key)
    p.copy_(_round_stochastic(param, h & 0xFFFF))
    exp_avg.copy_(m)
    exp_avg_sq.copy_(_round_stochastic(v, (h >> 16) & 0xFFFF))
    return sq_norm


_compiled: dict[str, Callable] = {}


def compiled_update() -> Callable | None:
    """`adamw_update` compiled into one loop (a few seconds, once a process), or None where
    torch.compile cannot build it here (no C++ compiler, say). Uncompiled it makes ~25 passes over
    the weights: ~3 s a step for the default model's 135M against ~0.2 s compiled."""
    if "fn" not in _compiled:
        # 256-bit vectors: at 512 this inductor turns the float<->int bit casts into scalar loops
        # (0.22 s against 0.05 s for one rounding pass over 134M values on an AVX-512 CPU)
        fn = torch.compile(adamw_update, dynamic=True, fullgraph=True, options={"cpp.simdlen": 256})
        try:
            _check(fn)
        except Exception as e:  # the compiler's own errors have no common type
            log.warning("bf16 AdamW kernel did not compile (%s: %s)", type(e).__name__, str(e)[:200])
            fn = None
        _compiled["fn"] = fn
    return _compiled["fn"]


@torch.no_grad()  # as the optimizer calls it: grad mode is part of what dynamo compiled for
def _check(fn: Callable) -> None:
    """The compiled kernel gives the eager one's bits on a small case (a few sizes: one compile)."""
    for n in (7, 1000):
        gen = torch.Generator().manual_seed(n)
        tensors = [torch.randn(n, generator=gen).bfloat16() for _ in range(3)]
        tensors[2] = tensors[2].abs()
        scalars = [torch.tensor(x) for x in (1e-3, 0.1, 0.03)]
        key = torch.tensor(12345, dtype=torch.int32)
        eager = [t.clone() for t in tensors]
        adamw_update(eager[0], torch.ones(n).bfloat16(), eager[1], eager[2], key, *scalars, 0.9, 0.999, 1e-8, 0.01)
        fn(tensors[0], torch.ones(n).bfloat16(), tensors[1], tensors[2], key, *scalars, 0.9, 0.999, 1e-8, 0.01)
        if not all(torch.equal(a, b) for a, b in zip(eager, tensors)):
            raise RuntimeError("the compiled kernel's result differs from the eager one's")


def _noise_key(seed: int, index: int, step: int) -> Tensor:
    """A well-mixed int32 for (run seed, weight, step): each step rounds with fresh noise."""
    x = (seed * 0x9E3779B97F4A7C15 + index * 0xBF58476D1CE4E5B9 + step * 0x94D049BB133111EB) % 2**64
    x = ((x ^ (x >> 31)) * 0xBF58476D1CE4E5B9) % 2**64  # splitmix64's mixing
    x = (x ^ (x >> 29)) & 0xFFFFFFFF
    return torch.tensor(x - 2**32 if x >= 2**31 else x, dtype=torch.int32)


class AdamWBF16(torch.optim.Optimizer):
    """AdamW for bf16 weights that keeps bf16 moments: 2 + 4 bytes a weight where fp32 weights
    with torch's AdamW take 4 + 8, and no bf16 copy of the weights for each pass.

    The update is `adamw_update` (stochastic rounding), compiled where it can be. fp32 weights
    (the value head) get the same AdamW without rounding. The noise is a function of (seed,
    weight, step), so a run is reproducible and its checkpoints need no RNG state.
    """

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, seed: int = 0, compile: bool = True):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))
        self.seed = seed
        self.compiled = compiled_update() if compile else None
        self._where = {p: (i, group) for i, (p, group) in
                       enumerate((p, g) for g in self.param_groups for p in g["params"])}
        # the moments now: allocated during the first backward pass instead, between its
        # activations, they fragment the heap (~20 MB more peak RSS measured)
        for p in self._where:
            self.state[p].update(step=torch.tensor(0.0), exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    self.step_param(p)

    @torch.no_grad()
    def step_param(self, p: nn.Parameter) -> Tensor:
        """Update one weight from its gradient; returns the gradient's squared norm."""
        index, group = self._where[p]
        state = self.state[p]
        state["step"] += 1
        step = int(state["step"])
        beta1, beta2 = group["betas"]
        update = self.compiled if (self.compiled is not None and p.dtype == torch.bfloat16) else adamw_update
        return update(p.detach().view(-1), p.grad.view(-1), state["exp_avg"].view(-1), state["exp_avg_sq"].view(-1),
               _noise_key(self.seed, index, step), torch.tensor(float(group["lr"])),
               torch.tensor(1 - beta1**step), torch.tensor(math.sqrt(1 - beta2**step)),
               beta1, beta2, group["eps"], group["weight_decay"])


# ---- the step inside the backward pass ----


class StepInBackward:
    """Steps the optimizer on each weight as soon as the backward pass has finished its gradient,
    then frees it.

    A plain step needs every weight's gradient alive at once (4 bytes a weight: 540 MB for the
    default model's full fine-tuning); here only the few the backward pass is working on are.
    It needs no gradient clipping, whose global norm waits for every gradient. `AdamWBF16` steps
    one weight itself; for torch's AdamW each weight gets its own that shares `optimizer`'s state
    and learning rate. Either way the update is the same and checkpoints save `optimizer` as
    before (the PyTorch tutorial "How to save memory by fusing the optimizer step into the
    backward pass").
    """

    def __init__(self, optimizer: torch.optim.Optimizer):
        self.optimizer = optimizer
        self.per_param: dict[nn.Parameter, torch.optim.AdamW] = {}
        self._sq_norms: list[Tensor] = []
        for group in optimizer.param_groups:
            for p in group["params"]:
                p.register_post_accumulate_grad_hook(self._step)
                if isinstance(optimizer, AdamWBF16):
                    continue
                self.per_param[p] = torch.optim.AdamW(
                    [p], lr=group["lr"], betas=group["betas"], eps=group["eps"],
                    weight_decay=group["weight_decay"], fused=bool(group.get("fused")))

    def sync(self) -> None:
        """Share the optimizer's current state and learning rate (loading a checkpoint replaces them)."""
        for group in self.optimizer.param_groups:
            for p in group["params"]:
                if p not in self.per_param:
                    continue
                own = self.per_param[p]
                own.state[p] = self.optimizer.state[p]  # one dict: AdamW fills it in place
                own.param_groups[0]["lr"] = group["lr"]

    def _step(self, p: nn.Parameter) -> None:
        if p in self.per_param:
            self._sq_norms.append(torch.linalg.vector_norm(p.grad.detach(), dtype=torch.float32) ** 2)
            self.per_param[p].step()
        else:  # AdamWBF16 sums the squares in its own pass over the gradient
            self._sq_norms.append(self.optimizer.step_param(p))
        p.grad = None

    def grad_norm(self) -> Tensor:
        """The norm of the gradients of the last backward pass, all weights together."""
        norm = torch.stack(self._sq_norms).sum().sqrt() if self._sq_norms else torch.tensor(0.0)
        self._sq_norms = []
        return norm
