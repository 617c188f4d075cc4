"""Built-in samplers: `default` (the recipe's [generation] as is) and `best-of-n` (contrast)."""

from __future__ import annotations

from pydantic import Field

from ppo_term.plugins.hookspecs import hookimpl
from ppo_term.plugins.types import PluginParams, Sampler


class DefaultSampler(Sampler):
    """Generates `n` candidates per prompt with the recipe's [generation] settings; keeps all."""

    name = "default"


class BestOfNSampler(Sampler):
    """Generates `k` candidates per prompt and trains on the `n` the reward ranks highest and lowest.

    Keeping both ends gives PPO the sharpest contrast from the same prompt; `n` is [generation].n.
    """

    name = "best-of-n"

    class Params(PluginParams):
        k: int = Field(8, gt=1, description="candidates generated per prompt")

    def plan(self, prompts, generation):
        if generation.n > self.params.k:
            raise ValueError(f"best-of-n keeps generation.n={generation.n} of k={self.params.k}: k must be >= n")
        return generation.model_copy(update={"n": self.params.k})

    def select(self, groups, scores, n):
        keep: list[int] = []
        for group in groups:
            ranked = sorted(group, key=lambda i: scores[i], reverse=True)
            # the best ceil(n/2) and the worst floor(n/2)
            top, bottom = ranked[: (n + 1) // 2], ranked[len(ranked) - n // 2 :] if n // 2 else []
            keep += sorted(set(top) | set(bottom))
        return keep


@hookimpl
def register_samplers(register):
    register(DefaultSampler)
    register(BestOfNSampler)
