"""AdamW's step inside the backward pass, for full fine-tuning without gradient clipping."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class StepInBackward:
    """Steps AdamW on each weight as soon as the backward pass has finished its gradient, then frees it.

    A plain step needs every weight's gradient alive at once (4 bytes a weight: 540 MB for the
    default model's full fine-tuning); here only the few the backward pass is working on are.
    It needs no gradient clipping, whose global norm waits for every gradient. Each weight gets
    its own AdamW that shares `optimizer`'s state and learning rate, so the update is the same
    and checkpoints save and resume `optimizer` as before (the PyTorch tutorial "How to save
    memory by fusing the optimizer step into the backward pass").
    """

    def __init__(self, optimizer: torch.optim.AdamW):
        self.optimizer = optimizer
        self.per_param: dict[nn.Parameter, torch.optim.AdamW] = {}
        self._sq_norms: list[Tensor] = []
        for group in optimizer.param_groups:
            for p in group["params"]:
                self.per_param[p] = torch.optim.AdamW(
                    [p], lr=group["lr"], betas=group["betas"], eps=group["eps"],
                    weight_decay=group["weight_decay"], fused=bool(group.get("fused")))
                p.register_post_accumulate_grad_hook(self._step)

    def sync(self) -> None:
        """Share the optimizer's current state and learning rate (loading a checkpoint replaces them)."""
        for group in self.optimizer.param_groups:
            for p in group["params"]:
                own = self.per_param[p]
                own.state[p] = self.optimizer.state[p]  # one dict: AdamW fills it in place
                own.param_groups[0]["lr"] = group["lr"]

    def _step(self, p: nn.Parameter) -> None:
        self._sq_norms.append(torch.linalg.vector_norm(p.grad.detach(), dtype=torch.float32) ** 2)
        self.per_param[p].step()
        p.grad = None

    def grad_norm(self) -> Tensor:
        """The norm of the gradients of the last backward pass, all weights together."""
        norm = torch.stack(self._sq_norms).sum().sqrt() if self._sq_norms else torch.tensor(0.0)
        self._sq_norms = []
        return norm
