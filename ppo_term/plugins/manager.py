"""Finds plugins (built-ins, then the `ppo_term` entry-point group) and builds the registries."""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

import pluggy

from ppo_term.plugins import hookspecs
from ppo_term.plugins.types import KLSchedule, Reward, Sampler

ENTRY_POINT_GROUP = "ppo_term"
BUILTIN_MODULES = [
    "ppo_term.builtin.rewards",
    "ppo_term.builtin.human",
    "ppo_term.builtin.kl_schedules",
    "ppo_term.builtin.samplers",
]


class PluginError(Exception):
    """A plugin is missing, misbehaves or was registered twice."""


@dataclass
class PluginInfo:
    name: str
    kind: str  # "reward" | "kl" | "sampler"
    cls: type
    source: str  # "builtin" or the distribution / module it came from
    version: str | None = None


@dataclass
class LoadFailure:
    name: str
    package: str | None
    error: str


@dataclass
class Plugins:
    pm: pluggy.PluginManager
    rewards: dict[str, PluginInfo] = field(default_factory=dict)
    kl_schedules: dict[str, PluginInfo] = field(default_factory=dict)
    samplers: dict[str, PluginInfo] = field(default_factory=dict)
    failures: list[LoadFailure] = field(default_factory=list)

    def reward(self, name: str) -> type[Reward]:
        return self._get(self.rewards, name, "reward").cls

    def kl_schedule(self, name: str) -> type[KLSchedule]:
        return self._get(self.kl_schedules, name, "KL schedule").cls

    def sampler(self, name: str) -> type[Sampler]:
        return self._get(self.samplers, name, "sampler").cls

    def all(self) -> list[PluginInfo]:
        return [*self.rewards.values(), *self.kl_schedules.values(), *self.samplers.values()]

    @staticmethod
    def _get(registry: dict[str, PluginInfo], name: str, kind: str) -> PluginInfo:
        if name not in registry:
            import difflib

            hint = difflib.get_close_matches(name, list(registry), n=1)
            extra = f"; did you mean '{hint[0]}'?" if hint else f"; installed: {', '.join(sorted(registry))}"
            raise PluginError(f"no {kind} named '{name}'{extra}")
        return registry[name]


def _allowed() -> set[str] | None:
    """PPO_TERM_LOAD_PLUGINS: comma-separated entry-point names to load (empty = none)."""
    raw = os.environ.get("PPO_TERM_LOAD_PLUGINS")
    if raw is None:
        return None
    return {p.strip() for p in raw.split(",") if p.strip()}


def build_plugins(extra: list[Any] | None = None, load_entry_points: bool = True) -> Plugins:
    """A fresh plugin manager: built-ins, installed entry points, then `extra` plugin objects."""
    pm = pluggy.PluginManager("ppo_term")
    pm.add_hookspecs(hookspecs)
    plugins = Plugins(pm)
    sources: dict[str, tuple[str, str | None]] = {}
    for mod in BUILTIN_MODULES:
        pm.register(importlib.import_module(mod), name=mod)
        sources[mod] = ("builtin", None)
    if load_entry_points:
        allowed = _allowed()
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if allowed is not None and ep.name not in allowed:
                continue
            dist = getattr(ep, "dist", None)
            package = dist.name if dist else None
            try:
                obj = ep.load()
                pm.register(obj, name=ep.name)
            except Exception as e:  # a broken plugin must not take the others down
                plugins.failures.append(LoadFailure(ep.name, package, f"{type(e).__name__}: {e}"))
                continue
            sources[getattr(obj, "__name__", ep.name)] = (package or ep.name, dist.version if dist else None)
    for obj in extra or []:
        pm.register(obj)
        sources[getattr(obj, "__name__", repr(obj))] = (getattr(obj, "__name__", "extra"), None)
    pm.check_pending()

    def registrar(registry: dict[str, PluginInfo], kind: str, base: type):
        def register(cls: type) -> None:
            if not (isinstance(cls, type) and issubclass(cls, base)) or not getattr(cls, "name", None):
                raise PluginError(f"{cls!r} is not a {base.__name__} subclass with a name")
            if cls.name in registry:
                raise PluginError(f"{kind} '{cls.name}' is registered twice ({registry[cls.name].source})")
            source, version = _source_of(cls, sources)
            registry[cls.name] = PluginInfo(cls.name, kind, cls, source, version)

        return register

    pm.hook.register_rewards(register=registrar(plugins.rewards, "reward", Reward))
    pm.hook.register_kl_schedules(register=registrar(plugins.kl_schedules, "kl", KLSchedule))
    pm.hook.register_samplers(register=registrar(plugins.samplers, "sampler", Sampler))
    return plugins


def _source_of(cls: type, sources: dict[str, tuple[str, str | None]]) -> tuple[str, str | None]:
    module = cls.__module__
    if module.startswith("ppo_term."):
        return "builtin", None
    for mod, src in sources.items():
        if module == mod or module.startswith(mod.split(".")[0] + "."):
            return src
    return module, None
