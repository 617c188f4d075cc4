"""Base classes that plugins subclass: `Sample`, `Reward` and `KLSchedule`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Sequence

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from ppo_term.recipe import GenerationConfig, PromptItem


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


@dataclass
class RunContext:
    """What the engine tells plugins about the run; `rater` asks a person for a score."""

    run_dir: Any = None  # pathlib.Path of the run directory, or None when nothing is written
    rater: Any = None  # ppo_term.builtin.human.Rater, or None (then the terminal is used)
    step: int = 0
    emit: Any = None  # callable(kind, **data) that sends an event to the run's listeners


class Reward:
    """A reward function: one float per sample, higher is better."""

    name: ClassVar[str]
    Params: ClassVar[type[BaseModel] | None] = None
    interactive: ClassVar[bool] = False  # asks a person (the dashboard shows a rating screen)

    def __init__(self, params: Any = None):
        self.params = params
        self.context = RunContext()

    def setup(self) -> None:
        """Called once before the first step (load a model here, not in __init__); `self.context` is set."""

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


class Sampler:
    """Decides how each step generates: the settings and candidates per prompt, then which to keep."""

    name: ClassVar[str]
    Params: ClassVar[type[BaseModel] | None] = None

    def __init__(self, params: Any = None):
        self.params = params

    def plan(self, prompts: Sequence["PromptItem"], generation: "GenerationConfig") -> "GenerationConfig":
        """The generation settings for this batch of prompts (the recipe's [generation], adjusted)."""
        return generation

    def select(self, groups: list[list[int]], scores: list[float], n: int) -> list[int] | None:
        """Indices of the samples to train on; `groups` lists each prompt's samples, `n` is the
        recipe's candidates per prompt (generation.n). None keeps all."""
        return None
