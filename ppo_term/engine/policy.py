"""The policy (LoRA adapter or full weights, plus a value head) and its frozen reference."""

from __future__ import annotations

import contextlib
import copy
import inspect
from typing import Iterator

import torch
from torch import Tensor, nn

from ppo_term.engine import storage
from ppo_term.engine.decode import decode_weights
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


def contiguous_head_input(lm: nn.Module) -> None:
    """The output head gets its states contiguous, whatever slice of positions they are.

    Strided states (the response positions of a pass, or transformers' `logits_to_keep`) make
    torch's matmul fall back to a bmm that copies the whole vocabulary matrix once per sequence:
    in fp32 on a 2-core AVX2 CPU, 175-200 ms a PPO minibatch's head against ~100 ms for one 2-D matmul.
    """
    head = lm.get_output_embeddings()
    if head is not None and not getattr(head, "_contiguous_input", False):
        head.register_forward_pre_hook(lambda _module, args: (args[0].contiguous(), *args[1:]))
        head._contiguous_input = True


def cast_frozen_linears(lm: nn.Module, dtype: torch.dtype) -> None:
    """Frozen matmul weights (and an untied copy of the output head) in `dtype`, the head with
    contiguous input.

    Embeddings and norms stay fp32, so the residual stream between layers stays fp32 under autocast.
    """
    contiguous_head_input(lm)
    if dtype == torch.float32:
        return
    head = lm.get_output_embeddings()
    embedding = lm.get_input_embeddings().weight
    if head is not None and head.weight is embedding and embedding.dtype != dtype:
        head.weight = nn.Parameter(head.weight.detach().clone(), requires_grad=False)  # untie
    for module in lm.modules():
        if isinstance(module, nn.Linear):
            module.to(dtype)


class Policy:
    """Only the adapter (or, for full fine-tuning, the LM's weights) and the value head train.

    With LoRA the reference is the same base with the adapter disabled (one copy of the weights);
    with full fine-tuning it is a frozen copy made before training.
    """

    def __init__(self, lm: nn.Module, lora: LoraConfig, device: torch.device,
                 dtype: torch.dtype = torch.float32):
        self.device = device
        self.dtype = dtype  # the compute dtype; trained weights are fp32 or (full fine-tuning) bf16
        self.lora = lora.enabled
        lm.requires_grad_(not self.lora)
        if self.lora:
            # the frozen base is only ever read: its matmul weights live in the compute dtype (half
            # the bytes in bf16, no cast per pass); PEFT keeps the adapter itself in fp32
            cast_frozen_linears(lm, dtype)
            from peft import LoraConfig as PeftLoraConfig, get_peft_model

            # from `first_layer` up only: below it no weight trains, so backward() stops there
            layers = list(range(lora.first_layer, lm.config.num_hidden_layers)) if lora.first_layer else None
            config = PeftLoraConfig(
                layers_to_transform=layers,
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
            cast_frozen_linears(self.ref_model, dtype)
            contiguous_head_input(lm)
            self.model = lm
        self.model.eval()  # no dropout: PPO's ratio must be exactly 1 before the first update
        self.value_head = ValueHead(lm.config.hidden_size).to(device)
        self.mixed = dtype != torch.float32
        # full-sequence passes on a CPU: eager attention measured ~17% faster per PPO minibatch than
        # SDPA's flash kernel (whose backward is slow there); generation keeps the loaded kernel
        self.train_attention = "eager" if device.type == "cpu" else None
        # training passes run each distinct prompt once and share its KV cache among its candidates
        self.share_prompts = True
        # bf16 weights with fp32 arithmetic (`storage`): the training passes keep their saved
        # activations in bf16 too
        self.bf16_activations = (not self.lora and dtype == torch.float32
                                 and any(p.dtype == torch.bfloat16 for p in lm.parameters()))

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

    @contextlib.contextmanager
    def _attention(self, lm: nn.Module) -> Iterator[None]:
        loaded = lm.config._attn_implementation
        if self.train_attention is None or loaded == self.train_attention:
            yield
            return
        lm.set_attn_implementation(self.train_attention)
        try:
            yield
        finally:
            lm.set_attn_implementation(loaded)

    def autocast(self):
        """The compute dtype for a pass through the LM (its frozen matmul weights may be bf16)."""
        return torch.autocast(self.device.type, dtype=self.dtype) if self.mixed else contextlib.nullcontext()

    def forward(
        self,
        lm: nn.Module,
        input_ids: Tensor,
        attention_mask: Tensor,
        prompt_len: int,
        with_values: bool = True,
    ) -> tuple[Tensor, Tensor | None]:
        """Logits for each response token (and values of the states before them) in one pass.

        The logits come in the output head's dtype, not divided by the sampling temperature:
        `ppo.logprobs_from_logits` takes both and works in fp32 a chunk at a time.

        Rows that share a prompt (a prompt's candidates) run it through the model once: its KV
        cache goes to each of them (gradients flow back through it), and only the responses run
        per row. Same numbers as a pass over every full row, with far fewer tokens when a prompt
        has several candidates.
        """
        backbone = getattr(lm, lm.base_model_prefix)
        head = lm.get_output_embeddings()
        # positions as generate() counted them: left padding does not advance the position
        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        bf16_saved = self.bf16_activations and torch.is_grad_enabled()
        saved = storage.saved_in_bf16() if bf16_saved else contextlib.nullcontext()
        with self.autocast(), self._attention(lm), saved:
            prompts = shared_prompts(input_ids, attention_mask, prompt_len) if self.share_prompts else None
            if prompts is None:
                hidden = backbone(
                    input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
                ).last_hidden_state
                # the state before each response token predicts it
                hidden = hidden[:, prompt_len - 1 : -1]
            else:
                first, inverse = prompts
                key = cache_kwarg(backbone)
                # each distinct prompt but its last token once, its cache then given to every row of it
                cache = backbone(
                    input_ids=input_ids[first, : prompt_len - 1], attention_mask=attention_mask[first, : prompt_len - 1],
                    position_ids=position_ids[first, : prompt_len - 1], use_cache=True,
                )[key]
                cache.batch_select_indices(inverse)
                # the prompt's last token and the response but its last: the states that predict it
                hidden = backbone(
                    input_ids=input_ids[:, prompt_len - 1 : -1], attention_mask=attention_mask[:, :-1],
                    position_ids=position_ids[:, prompt_len - 1 : -1], use_cache=True, **{key: cache},
                ).last_hidden_state
            logits = head(hidden)
        values = self.value_head(hidden) if with_values else None
        return logits, values

    def generate(self, **kwargs) -> Tensor:
        """generate() with the adapter merged into the weights (and them packed on a bf16 CPU)."""
        with self.autocast(), self.decode_weights(len(kwargs["input_ids"])):
            return self.model.generate(**kwargs)

    def decode_weights(self, rows: int):
        """The weights decoding runs with: see `ppo_term.engine.decode`."""
        return decode_weights(self.model, self.dtype, rows)


def shared_prompts(input_ids: Tensor, attention_mask: Tensor, prompt_len: int) -> tuple[Tensor, Tensor] | None:
    """(first row of each distinct prompt, each row's index into those), or None where no two rows
    share a prompt (nothing to gain) or the prompt is a single token (no cache to share)."""
    if prompt_len < 2:
        return None
    prompts = torch.cat([input_ids[:, :prompt_len], attention_mask[:, :prompt_len]], dim=1)
    unique, inverse = torch.unique(prompts, dim=0, return_inverse=True)
    if len(unique) == len(prompts):
        return None
    first = torch.full((len(unique),), len(prompts), dtype=torch.long, device=input_ids.device)
    first.scatter_reduce_(0, inverse, torch.arange(len(prompts), device=input_ids.device), reduce="amin")
    return first, inverse


def cache_kwarg(lm: nn.Module) -> str:
    """The name of a model's KV cache argument (and output): `cache` from transformers 5.x on."""
    return "cache" if "cache" in inspect.signature(type(lm).forward).parameters else "past_key_values"
