"""The plugin contract: every hook, external packages, faults, the allow-list, built-in samplers."""

import ast
import io
import os
import textwrap
import time
import types
from pathlib import Path

import pytest
from rich.console import Console

from ppo_term import hookimpl
from ppo_term.builtin.human import HumanReward, TerminalRater
from ppo_term.builtin.samplers import BestOfNSampler
from ppo_term.engine.trainer import Trainer
from ppo_term.plugins import hookspecs
from ppo_term.plugins.manager import PluginError, build_plugins
from ppo_term.plugins.types import KLSchedule, PluginParams, Reward, RunContext, Sample, Sampler
from ppo_term.progress import HeadlessReporter
from ppo_term.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[1]
HOOKS = [name for name in dir(hookspecs) if name.startswith("register_")]


def plugin(**hooks):
    return types.SimpleNamespace(**{name: hookimpl(fn) for name, fn in hooks.items()})


def trainer_for(recipe, *extra, **kw):
    t = Trainer(recipe, plugins=build_plugins(extra=list(extra), load_entry_points=False), progress=False, **kw)
    t.setup()
    return t


def collect(trainer, kind):
    out = []
    trainer.listeners.append(lambda e: e.kind == kind and out.append(e))
    return out


# ---- every hook has a test here and a section in the tutorial ----

def test_every_hook_has_a_test_and_a_documented_section():
    assert HOOKS == ["register_kl_schedules", "register_rewards", "register_samplers"]
    doc = (ROOT / "docs" / "writing-a-reward-plugin.md").read_text()
    tests = {n.name for n in ast.walk(ast.parse(Path(__file__).read_text())) if isinstance(n, ast.FunctionDef)}
    for hook in HOOKS:
        assert f"### `{hook}`" in doc, f"{hook} has no section in the tutorial"
        assert f"test_hook_{hook}" in tests, f"{hook} has no test"
        assert getattr(hookspecs, hook).__doc__, f"{hook} has no docstring"


def test_hook_register_rewards(write_recipe):
    class Exclaim(Reward):
        name = "exclaim"

        class Params(PluginParams):
            bonus: float = 1.0

        def score(self, samples):
            return [self.params.bonus * s.response.count("!") for s in samples]

    recipe = load_recipe(write_recipe(rewards='[[rewards]]\nname = "exclaim"\nbonus = 2.0\n'))
    t = trainer_for(recipe, plugin(register_rewards=lambda register: register(Exclaim)))
    metrics = collect(t, "metrics")
    t.run()
    assert "reward/exclaim" in metrics[0].data and t.rewards[0].reward.params.bonus == 2.0


def test_hook_register_kl_schedules(write_recipe, tmp_path):
    class Halving(KLSchedule):
        name = "halving"

        def update(self, step, kl, n_samples):
            self.coef /= 2
            return self.coef

    from ppo_term.runs import RunDir

    rd = RunDir(tmp_path / "run")
    rd.create("", [], 3, "tiny")
    recipe = load_recipe(write_recipe(steps=3, extra='\n[kl]\nschedule = "halving"\ncoef = 0.8\n'))
    t = trainer_for(recipe, plugin(register_kl_schedules=lambda register: register(Halving)), run_dir=rd)
    metrics = collect(t, "metrics")
    t.run()
    assert [m.data["kl_coef"] for m in metrics] == [0.8, 0.4, 0.2]
    import json

    state = json.loads((rd.path / "checkpoints/step-3/trainer_state.json").read_text())
    assert state["kl_schedule"] == {"name": "halving", "coef": 0.1}


def test_hook_register_samplers(write_recipe):
    class FirstOnly(Sampler):
        name = "first-only"

        class Params(PluginParams):
            candidates: int = 3

        def plan(self, prompts, generation):
            return generation.model_copy(update={"n": self.params.candidates, "temperature": 0.5})

        def select(self, groups, scores, n):
            return [g[0] for g in groups]

    recipe = load_recipe(write_recipe(extra='\n[sampler]\nname = "first-only"\ncandidates = 3\n'))
    t = trainer_for(recipe, plugin(register_samplers=lambda register: register(FirstOnly)))
    metrics, rollouts = collect(t, "metrics"), collect(t, "rollouts")
    t.run()
    assert metrics[0].data["samples_generated"] == 2 * 3 and metrics[0].data["samples"] == 2
    assert len(rollouts[0].data["samples"]) == 2


# ---- built-in samplers ----

def test_best_of_n_keeps_the_best_and_the_worst():
    s = BestOfNSampler(BestOfNSampler.Params(k=4))
    groups, scores = [[0, 1, 2, 3], [4, 5, 6, 7]], [0.1, 0.9, 0.5, -1.0, 3, 2, 1, 0]
    assert s.select(groups, scores, 2) == [1, 3, 4, 7]
    assert s.select(groups, scores, 3) == [1, 2, 3, 4, 5, 7]
    assert s.select(groups, scores, 1) == [1, 4]


def test_best_of_n_in_a_run_and_its_bad_config(write_recipe):
    recipe = load_recipe(write_recipe(extra='\n[sampler]\nname = "best-of-n"\nk = 4\n'), ["generation.n=2"])
    t = trainer_for(recipe)
    metrics = collect(t, "metrics")
    t.run()
    assert metrics[0].data["samples_generated"] == 8 and metrics[0].data["samples"] == 4
    from ppo_term.recipe import RecipeError

    with pytest.raises(RecipeError, match="k must be >= n"):
        Trainer(load_recipe(write_recipe(extra='\n[sampler]\nname = "best-of-n"\nk = 2\n'), ["generation.n=3"]))
    with pytest.raises(RecipeError, match=r"sampler\.kk: unknown parameter 'kk'; did you mean 'k'"):
        Trainer(load_recipe(write_recipe(extra='\n[sampler]\nname = "best-of-n"\nkk = 2\n')))


def test_stop_strings_end_responses(write_recipe):
    recipe = load_recipe(write_recipe(), ['generation.stop=["the"]', "generation.max_new_tokens=12", "generation.n=6"])
    t = trainer_for(recipe)
    rollouts = collect(t, "rollouts")
    t.run()
    responses = [r["response"] for e in rollouts for r in e.data["samples"]]
    stopped = [r for r in responses if "the" in r.split()]
    assert stopped, responses
    assert all(r.split()[-1] == "the" for r in stopped)


# ---- loading, faults and the allow-list ----

def fake_dist(tmp_path, name, module_source, entry="fake"):
    """A minimal installed distribution on sys.path: a module and a dist-info with an entry point."""
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(module_source))
    info = tmp_path / f"{name}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[ppo_term]\n{entry} = {name}\n")
    return tmp_path


GOOD = """
    from ppo_term import hookimpl
    from ppo_term.plugins.types import Reward

    class Shout(Reward):
        name = "shout"
        def score(self, samples):
            return [float(s.response.isupper()) for s in samples]

    @hookimpl
    def register_rewards(register):
        register(Shout)
"""


def test_external_plugin_is_found_with_its_package(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(fake_dist(tmp_path, "shout_plugin", GOOD, entry="shout")))
    info = build_plugins().rewards["shout"]
    assert (info.source, info.version) == ("shout_plugin", "1.0")


def test_import_error_is_reported_and_the_rest_load(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(fake_dist(tmp_path, "broken_plugin", "raise ImportError('no numpy 9')\n")))
    plugins = build_plugins()
    (failure,) = [f for f in plugins.failures if f.name == "fake"]
    assert failure.package == "broken_plugin" and "no numpy 9" in failure.error
    assert "refusal" in plugins.rewards


def test_allow_list_limits_entry_points(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(fake_dist(tmp_path, "shout_plugin", GOOD, entry="shout")))
    monkeypatch.setenv("PPO_TERM_LOAD_PLUGINS", "")
    plugins = build_plugins()
    assert "shout" not in plugins.rewards and "refusal" in plugins.rewards
    monkeypatch.setenv("PPO_TERM_LOAD_PLUGINS", "shout, other")
    assert "shout" in build_plugins().rewards


def test_misspelled_hook_and_duplicates_are_errors():
    from pluggy import PluginValidationError

    with pytest.raises(PluginValidationError, match="register_reward"):
        build_plugins(extra=[plugin(register_reward=lambda register: None)], load_entry_points=False)

    class Dup(Reward):
        name = "refusal"

    with pytest.raises(PluginError, match="registered twice"):
        build_plugins(extra=[plugin(register_rewards=lambda register: register(Dup))], load_entry_points=False)
    with pytest.raises(PluginError, match="not a Reward subclass"):
        build_plugins(extra=[plugin(register_rewards=lambda register: register(object))], load_entry_points=False)


def test_optional_reward_is_skipped_when_missing(write_recipe):
    rewards = '[[rewards]]\nname = "keywords"\ninclude = ["yes"]\n[[rewards]]\nname = "not-installed"\noptional = true\n'
    with pytest.warns(UserWarning, match="optional reward 'not-installed' is not installed"):
        t = Trainer(load_recipe(write_recipe(rewards=rewards)), plugins=build_plugins(load_entry_points=False))
    assert [b.name for b in t.rewards] == ["keywords"]


def test_slow_reward_shows_progress(write_recipe):
    seen = {}

    class Slow(Reward):
        name = "slow"

        def score(self, samples):
            time.sleep(0.3)
            seen["label"] = reporter.progress.tasks[0].fields["phase"]  # what the bar shows meanwhile
            return [0.0] * len(samples)

    reporter = HeadlessReporter(1, Console(file=io.StringIO(), width=120))
    recipe = load_recipe(write_recipe(steps=1, rewards='[[rewards]]\nname = "slow"\n'))
    t = trainer_for(recipe, plugin(register_rewards=lambda register: register(Slow)), listeners=[reporter])
    phases, metrics = collect(t, "phase"), collect(t, "metrics")
    t.run()
    assert seen["label"] == "score:slow"
    assert {"phase": "score", "reward": "slow"} in [e.data for e in phases]
    assert metrics[0].data["time/reward/slow"] >= 0.3


# ---- the human reward ----

def test_human_reward_from_a_pipe_with_skip_and_timeout(tmp_path):
    r, w = os.pipe()
    os.write(w, b"5\ns\n1\n")
    stream = os.fdopen(r)
    out = io.StringIO()
    reward = HumanReward(HumanReward.Params(scale=5, default=0.25, timeout=0.3, max_per_step=4))
    reward.context = RunContext(run_dir=tmp_path, rater=TerminalRater(stream, out), step=7)
    reward.setup()
    samples = [Sample(f"p{i}", f"r{i}") for i in range(5)]
    scores = reward.score(samples)
    # 5 -> +1, skip -> default, 1 -> -1, no answer within the timeout -> default, 5th not asked
    assert scores == [1.0, 0.25, -1.0, 0.25, 0.25]
    assert "rate sample 1/4" in out.getvalue() and "response: r0" in out.getvalue()
    import json

    rows = [json.loads(line) for line in (tmp_path / "ratings.jsonl").read_text().splitlines()]
    assert [(r["key"], r["score"], r["step"]) for r in rows] == [(5, 1.0, 7), (None, 0.25, 7), (1, -1.0, 7), (None, 0.25, 7)]
    os.close(w)


def test_human_reward_feeds_the_step_through_a_rater(write_recipe):
    class Always4:
        def __init__(self):
            self.calls = 0

        def rate(self, sample, index, total, scale, timeout):
            self.calls += 1
            return 4

    rater = Always4()
    recipe = load_recipe(write_recipe(steps=1, rewards='[[rewards]]\nname = "human"\nmax_per_step = 2\ndefault = -1.0\n'))
    t = trainer_for(recipe, rater=rater)
    rollouts = collect(t, "rollouts")
    t.run()
    scores = [s["components"]["human"] for s in rollouts[0].data["samples"]]
    assert rater.calls == 2 and scores == [0.5, 0.5, -1.0, -1.0]


def test_human_recipe_is_valid():
    recipe = load_recipe(ROOT / "recipes" / "human.toml")
    assert recipe.rewards[0].name == "human" and recipe.prompt_items()
    Trainer(recipe, plugins=build_plugins(load_entry_points=False))  # params and prompts validate
