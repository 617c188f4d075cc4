"""`classifier`: a reward from any local Hugging Face sequence-classification model directory.

The score is the probability (or the logit) of one label, read from the response alone or from the
prompt and response as a text pair. Nothing is downloaded: `model` must be a local directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Sequence

from pydantic import Field, field_validator

from ppo_term import hookimpl
from ppo_term.plugins.types import PluginParams, Reward, Sample


class ClassifierReward(Reward):
    """Probability (or logit) of `label` under a local sequence classifier."""

    name = "classifier"

    class Params(PluginParams):
        model: str = Field(description="local Hugging Face sequence-classification model directory")
        label: str | int = Field(description="label name (from config.id2label) or index to reward")
        output: Literal["prob", "logit"] = "prob"
        input: Literal["response", "prompt+response"] = "response"
        batch_size: int = Field(16, gt=0)
        max_length: int = Field(512, gt=0)
        device: str = "cpu"

        @field_validator("model")
        @classmethod
        def _local(cls, v: str) -> str:
            if not (Path(v).expanduser() / "config.json").is_file():
                raise ValueError(f"{v} is not a local model directory with a config.json")
            return str(Path(v).expanduser())

    def setup(self) -> None:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        p = self.params
        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(p.model)
        self.model = AutoModelForSequenceClassification.from_pretrained(p.model).to(p.device).eval()
        labels = {str(v): int(k) for k, v in self.model.config.id2label.items()}
        if isinstance(p.label, int) or str(p.label).isdigit():
            self.index = int(p.label)
        elif p.label in labels:
            self.index = labels[p.label]
        else:
            raise ValueError(f"label {p.label!r} is not one of the model's labels {sorted(labels)}")
        if not 0 <= self.index < self.model.config.num_labels:
            raise ValueError(f"label index {self.index} is out of range (the model has {self.model.config.num_labels})")

    def score(self, samples: Sequence[Sample]) -> list[float]:
        if not hasattr(self, "model"):
            self.setup()
        p, torch = self.params, self.torch
        out: list[float] = []
        for i in range(0, len(samples), p.batch_size):
            chunk = samples[i : i + p.batch_size]
            texts = [s.response for s in chunk]
            pairs = [s.prompt for s in chunk] if p.input == "prompt+response" else None
            enc = self.tokenizer(*([pairs, texts] if pairs else [texts]), padding=True, truncation=True,
                                 max_length=p.max_length, return_tensors="pt").to(p.device)
            with torch.inference_mode():
                logits = self.model(**enc).logits.float()
            values = logits.softmax(-1)[:, self.index] if p.output == "prob" else logits[:, self.index]
            out += values.tolist()
        return out


@hookimpl
def register_rewards(register):
    register(ClassifierReward)
