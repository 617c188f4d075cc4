"""Built-in KL schedules: fixed, adaptive (Ziegler et al., 2019), linear and cosine decay, warmup."""

from __future__ import annotations

import math

from pydantic import Field

from ppo_term.plugins.hookspecs import hookimpl
from ppo_term.plugins.types import KLSchedule, PluginParams


class FixedKL(KLSchedule):
    """kl_coef stays where the recipe (or the user) put it."""

    name = "fixed"

    def update(self, step: int, kl: float, n_samples: int) -> float:
        return self.coef


class AdaptiveKL(KLSchedule):
    """Ziegler et al.: steer kl_coef so the measured KL tracks `target` (nats per response)."""

    name = "adaptive"

    class Params(PluginParams):
        target: float = Field(6.0, gt=0, description="KL to hold, in nats per response")
        horizon: float = Field(10000, gt=0, description="samples over which the error is corrected")

    def update(self, step: int, kl: float, n_samples: int) -> float:
        # proportional error, clipped to +-20% as in the paper
        error = min(max(kl / self.params.target - 1.0, -0.2), 0.2)
        self.coef *= 1.0 + error * n_samples / self.params.horizon
        return self.coef


class _Timed(KLSchedule):
    """A schedule of the step alone: kl_coef goes from the recipe's `coef` to `end` over `steps`."""

    class Params(PluginParams):
        end: float = Field(0.0, ge=0, description="kl_coef after `steps` steps")
        steps: int = Field(100, gt=0, description="steps over which kl_coef moves")

    def __init__(self, coef: float, params=None):
        super().__init__(coef, params)
        self.start = self.coef

    def fraction(self, step: int) -> float:
        return min(step / self.params.steps, 1.0)

    def update(self, step: int, kl: float, n_samples: int) -> float:
        self.coef = self.at(step)
        return self.coef

    def state_dict(self):
        return {"coef": self.coef, "start": self.start}

    def load_state_dict(self, state):
        self.coef, self.start = float(state["coef"]), float(state.get("start", state["coef"]))


class LinearKL(_Timed):
    """Straight line from `coef` to `end` over `steps` steps, then `end`."""

    name = "linear"

    def at(self, step: int) -> float:
        return self.start + (self.params.end - self.start) * self.fraction(step)


class CosineKL(_Timed):
    """Half a cosine from `coef` down (or up) to `end` over `steps` steps, then `end`."""

    name = "cosine"

    def at(self, step: int) -> float:
        return self.params.end + (self.start - self.params.end) * 0.5 * (1 + math.cos(math.pi * self.fraction(step)))


class WarmupKL(_Timed):
    """From `start_coef` (default 0) up to the recipe's `coef` over `steps` steps, then `coef`.

    Lets the policy move freely at first while the value head learns, then holds it."""

    name = "warmup"

    class Params(PluginParams):
        start_coef: float = Field(0.0, ge=0, description="kl_coef at step 0")
        steps: int = Field(10, gt=0)

    def __init__(self, coef: float, params=None):
        super().__init__(coef, params)
        self.target = self.start
        self.coef = self.start = params.start_coef if params is not None else 0.0

    def at(self, step: int) -> float:
        return self.start + (self.target - self.start) * self.fraction(step)

    def state_dict(self):
        return {"coef": self.coef, "start": self.start, "target": self.target}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.target = float(state.get("target", self.target))


@hookimpl
def register_kl_schedules(register):
    register(FixedKL)
    register(AdaptiveKL)
    register(LinearKL)
    register(CosineKL)
    register(WarmupKL)
