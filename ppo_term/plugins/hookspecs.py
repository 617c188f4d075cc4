"""The whole plugin contract of ppo-term.

A plugin is a module (or object) with functions marked `@ppo_term.hookimpl`, found through the
entry-point group `ppo_term`. Built-in rewards and KL schedules are registered through these same
hooks. Each hook receives a `register` callable and calls it once per class it provides.
"""

from __future__ import annotations

from typing import Callable

import pluggy

hookspec = pluggy.HookspecMarker("ppo_term")
hookimpl = pluggy.HookimplMarker("ppo_term")


@hookspec
def register_rewards(register: Callable[[type], None]) -> None:
    """Register reward classes: `register(MyReward)`.

    A reward is a subclass of `ppo_term.plugins.types.Reward` with a unique `name`. A recipe
    selects it with `[[rewards]] name = "..."  weight = 1.0` plus its params, which are checked
    against the class's `Params` pydantic model. `score(samples)` gets a batch of `Sample`
    (prompt, response, metadata) and returns one finite float per sample.
    """


@hookspec
def register_kl_schedules(register: Callable[[type], None]) -> None:
    """Register KL schedule classes: `register(MySchedule)`.

    A KL schedule is a subclass of `ppo_term.plugins.types.KLSchedule` with a unique `name`.
    A recipe selects it with `[kl] schedule = "..."`; after every step `update(step, kl,
    n_samples)` gets the measured KL and returns the next kl_coef. Its `state_dict()` is saved in
    checkpoints.
    """


@hookspec
def register_samplers(register: Callable[[type], None]) -> None:
    """Register sampler classes: `register(MySampler)`.

    A sampler is a subclass of `ppo_term.plugins.types.Sampler` with a unique `name`. A recipe
    selects it with `[sampler] name = "..."` plus its params. Each step `plan(prompts,
    generation)` returns the generation settings (temperature, top_k, top_p, n candidates per
    prompt, min/max new tokens, stop strings), and after scoring `select(groups, scores, n)` may
    keep a subset of the candidates to train on.
    """
