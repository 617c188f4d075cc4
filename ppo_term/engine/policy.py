"""The policy (LoRA adapter or full weights, plus a value head) and its frozen reference."""

from __future__ import annotations

import contextlib
import copy
from typing import Iterator

import torch
from torch import Tensor, nn

from ppo_term.recipe import LoraConfig


class ValueHead(nn.Module):
    """A scalar value per position from the last hidden state; starts at 0."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.summary = nn.Linear(hidden_size, 1)
        nn.init.zeros_(self.summary.weight)
        nn.init.zeros_(self.summary.bias)

    def forward(self, hidden: Tensor) -> Tensor:
        return self.summary(hidden.float()).squeeze(-1)


class Policy:
    """Only the adapter (or, for full fine-tuning, the LM's weights) and the value head train.

    With LoRA the reference is the same base with the adapter disabled (one copy of the weights);
    with full fine-tuning it is a frozen copy made before training.
    """

    def __init__(self, lm: nn.Module, lora: LoraConfig, device: torch.device):
        self.device = device
        self.lora = lora.enabled
        lm.requires_grad_(not self.lora)
        if self.lora:
            from peft import LoraConfig as PeftLoraConfig, get_peft_model

            config = PeftLoraConfig(
                r=lora.r,
                lora_alpha=lora.alpha,
                lora_dropout=lora.dropout,
                target_modules=list(lora.target_modules),
                bias="none",
                task_type="CAUSAL_LM",
            )
            self.model = get_peft_model(lm, config)
            self.ref_model = None
        else:
            self.ref_model = copy.deepcopy(lm).requires_grad_(False).eval()
            self.model = lm
        self.model.eval()  # no dropout: PPO's ratio must be exactly 1 before the first update
        self.value_head = ValueHead(lm.config.hidden_size).to(device)
        self.autocast = device.type == "cuda"

    @property
    def lm(self) -> nn.Module:
        """The causal LM with the adapter layers inside (for PEFT, the wrapped base model)."""
        return self.model.get_base_model() if self.lora else self.model

    def trainable_parameters(self) -> list[nn.Parameter]:
        params = [p for p in self.model.parameters() if p.requires_grad]
        return params + list(self.value_head.parameters())

    def named_trainable_parameters(self) -> list[tuple[str, nn.Parameter]]:
        named = [(f"model.{n}", p) for n, p in self.model.named_parameters() if p.requires_grad]
        return named + [(f"value_head.{n}", p) for n, p in self.value_head.named_parameters()]

    @contextlib.contextmanager
    def reference(self) -> Iterator[nn.Module]:
        """The reference model: the adapter switched off, or the frozen copy."""
        if self.lora:
            with self.model.disable_adapter():
                yield self.lm
        else:
            yield self.ref_model

    def _autocast(self):
        return torch.autocast("cuda", dtype=torch.bfloat16) if self.autocast else contextlib.nullcontext()

    def forward(
        self,
        lm: nn.Module,
        input_ids: Tensor,
        attention_mask: Tensor,
        prompt_len: int,
        temperature: float = 1.0,
        with_values: bool = True,
    ) -> tuple[Tensor, Tensor | None]:
        """Logits for each response token (and values of the states before them) in one pass."""
        backbone = getattr(lm, lm.base_model_prefix)
        head = lm.get_output_embeddings()
        # positions as generate() counted them: left padding does not advance the position
        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        with self._autocast():
            hidden = backbone(
                input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
            ).last_hidden_state
            # the state before each response token predicts it
            hidden = hidden[:, prompt_len - 1 : -1]
            logits = head(hidden).float() / temperature
        values = self.value_head(hidden) if with_values else None
        return logits, values

    def generate(self, **kwargs) -> Tensor:
        with self._autocast():
            return self.model.generate(**kwargs)
