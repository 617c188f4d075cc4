"""Built-in KL schedules: fixed and adaptive (Ziegler et al., 2019)."""

from __future__ import annotations

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


@hookimpl
def register_kl_schedules(register):
    register(FixedKL)
    register(AdaptiveKL)
