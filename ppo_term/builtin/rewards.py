"""Built-in rewards: refusal, keywords, length."""

from __future__ import annotations

import re
from typing import Literal, Sequence

from pydantic import Field, model_validator

from ppo_term.builtin.refusal import caution_score, is_evasive, refusal_score
from ppo_term.plugins.hookspecs import hookimpl
from ppo_term.plugins.types import PluginParams, Reward, Sample


class RewardInputError(ValueError):
    """A sample lacks what the reward needs (e.g. a label in its metadata)."""


class RefusalReward(Reward):
    """+1 for declining a harmful prompt or answering a benign one, -1 for the opposite.

    The prompt's label comes from its metadata (`label = "harmful"` or `"benign"`). A refusal
    found only late in the response counts half, so the reward is graded, not just +-1. The four
    outcome scores are params, so a recipe can weigh refusing harm against over-refusing. An
    evasive apology ("I'm sorry for any confusion. I'm here to help ...", declining nothing) scores
    as the wrong outcome for either label unless `evasive = "refusal"`.
    """

    name = "refusal"

    class Params(PluginParams):
        label_key: str = "label"
        harmful_labels: list[str] = ["harmful", "unsafe"]
        benign_labels: list[str] = ["benign", "safe"]
        window: int = Field(200, gt=0, description="characters within which a refusal counts fully")
        refuse_harmful: float = Field(1.0, description="score for declining a harmful prompt")
        comply_harmful: float = Field(-1.0, description="score for answering a harmful prompt")
        answer_benign: float = Field(1.0, description="score for answering a benign prompt")
        refuse_benign: float = Field(-1.0, description="score for declining a benign prompt")
        caution_credit: float = Field(0.0, ge=0, le=1, description="share of the way from complying to "
                                      "refusing given to a harmful-prompt answer that opens with a warning")
        evasive: Literal["wrong", "refusal"] = Field(
            "wrong", description="an apology for something that declines nothing: 'wrong' scores it as complying "
            "on a harmful prompt and as refusing on a benign one; 'refusal' as the detector reads it")

    def score(self, samples: Sequence[Sample]) -> list[float]:
        p = self.params
        scores = []
        for i, s in enumerate(samples):
            label = str(s.metadata.get(p.label_key, "")).lower()
            refused = refusal_score(s.response, p.window)
            harmful = label in p.harmful_labels
            if p.evasive == "wrong" and is_evasive(s.response, p.window):
                refused = 0.0 if harmful else 1.0  # neither declines nor answers: wrong either way
            # between the two outcome scores by how clearly (and how early) the response declines
            if harmful:
                if p.caution_credit:
                    refused = max(refused, p.caution_credit * caution_score(s.response, p.window))
                scores.append(p.comply_harmful + refused * (p.refuse_harmful - p.comply_harmful))
            elif label in p.benign_labels:
                scores.append(p.answer_benign + refused * (p.refuse_benign - p.answer_benign))
            else:
                expected = p.harmful_labels + p.benign_labels
                raise RewardInputError(
                    f"sample {i} (prompt {s.prompt[:60]!r}) has {p.label_key}={label!r}; expected one of {expected}"
                )
        return scores


class KeywordsReward(Reward):
    """+bonus for each keyword or regex found in the response, -penalty for each banned one."""

    name = "keywords"

    class Params(PluginParams):
        include: list[str] = []
        exclude: list[str] = []
        bonus: float = 1.0
        penalty: float = 1.0
        regex: bool = False
        case_sensitive: bool = False

        @model_validator(mode="after")
        def _some(self) -> "KeywordsReward.Params":
            if not self.include and not self.exclude:
                raise ValueError("give 'include' and/or 'exclude' keywords")
            return self

    def setup(self) -> None:
        flags = 0 if self.params.case_sensitive else re.IGNORECASE
        make = (lambda k: re.compile(k, flags)) if self.params.regex else (lambda k: re.compile(re.escape(k), flags))
        self._include = [make(k) for k in self.params.include]
        self._exclude = [make(k) for k in self.params.exclude]

    def score(self, samples: Sequence[Sample]) -> list[float]:
        if not hasattr(self, "_include"):
            self.setup()
        p = self.params
        return [
            p.bonus * sum(bool(r.search(s.response)) for r in self._include)
            - p.penalty * sum(bool(r.search(s.response)) for r in self._exclude)
            for s in samples
        ]


class LengthReward(Reward):
    """0 inside a target band of words, falling linearly by `slope` per word outside it."""

    name = "length"

    class Params(PluginParams):
        min_words: int = Field(5, ge=0)
        max_words: int = Field(60, ge=1)
        slope: float = Field(0.05, gt=0)

    def score(self, samples: Sequence[Sample]) -> list[float]:
        p = self.params
        out = []
        for s in samples:
            n = len(s.response.split())
            gap = max(p.min_words - n, n - p.max_words, 0)
            out.append(-p.slope * gap)
        return out


@hookimpl
def register_rewards(register):
    register(RefusalReward)
    register(KeywordsReward)
    register(LengthReward)
