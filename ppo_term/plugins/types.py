"""Base classes that plugins subclass: `Sample`, `Reward` and `KLSchedule`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Sequence

from pydantic import BaseModel, ConfigDict


class PluginParams(BaseModel):
    """Base for plugin params: unknown keys in the recipe are errors."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class Sample:
    """One (prompt, response) pair to score; `metadata` holds the prompt's extra fields."""

    prompt: str
    response: str
    metadata: dict[str, Any] = field(default_factory=dict)
    finished: bool = True  # the response ended with EOS rather than running out of tokens


class Reward:
    """A reward function: one float per sample, higher is better."""

    name: ClassVar[str]
    Params: ClassVar[type[BaseModel] | None] = None

    def __init__(self, params: Any = None):
        self.params = params

    def setup(self) -> None:
        """Called once before the first step (load a model here, not in __init__)."""

    def teardown(self) -> None:
        """Called once when the run ends, however it ends."""

    def score(self, samples: Sequence[Sample]) -> list[float]:
        raise NotImplementedError


class KLSchedule:
    """Turns the measured KL after each step into the next kl_coef."""

    name: ClassVar[str]
    Params: ClassVar[type[BaseModel] | None] = None

    def __init__(self, coef: float, params: Any = None):
        self.coef = float(coef)
        self.params = params

    def update(self, step: int, kl: float, n_samples: int) -> float:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        return {"coef": self.coef}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.coef = float(state["coef"])
