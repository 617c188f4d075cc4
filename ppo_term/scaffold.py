"""`ppo-term new-plugin`: writes a ready-to-install plugin package (pyproject, module, test, README)."""

from __future__ import annotations

import re
from pathlib import Path

KINDS = {"reward": "register_rewards", "kl": "register_kl_schedules", "sampler": "register_samplers"}

_CLASSES = {
    "reward": '''class {cls}(Reward):
    """Rewards responses that contain `word` (replace this with your own scoring)."""

    name = "{name}"

    class Params(PluginParams):
        word: str = "please"
        bonus: float = 1.0

    def score(self, samples: Sequence[Sample]) -> list[float]:
        return [self.params.bonus if self.params.word in s.response.lower() else 0.0 for s in samples]
''',
    "kl": '''class {cls}(KLSchedule):
    """Halves kl_coef every `every` steps (replace this with your own schedule)."""

    name = "{name}"

    class Params(PluginParams):
        every: int = 10

    def update(self, step: int, kl: float, n_samples: int) -> float:
        if step % self.params.every == 0:
            self.coef /= 2
        return self.coef
''',
    "sampler": '''class {cls}(Sampler):
    """Samples cooler as the prompt gets longer (replace this with your own plan)."""

    name = "{name}"

    class Params(PluginParams):
        long_prompt_chars: int = 200

    def plan(self, prompts, generation):
        longest = max(len(p.prompt) for p in prompts)
        if longest > self.params.long_prompt_chars:
            return generation.model_copy(update={{"temperature": generation.temperature * 0.7}})
        return generation
''',
}

_IMPORTS = {
    "reward": "from typing import Sequence\n\nfrom ppo_term import hookimpl\n"
              "from ppo_term.plugins.types import PluginParams, Reward, Sample\n",
    "kl": "from ppo_term import hookimpl\nfrom ppo_term.plugins.types import KLSchedule, PluginParams\n",
    "sampler": "from ppo_term import hookimpl\nfrom ppo_term.plugins.types import PluginParams, Sampler\n",
}

_TESTS = {
    "reward": '''def test_scores_by_the_word():
    reward = {cls}({cls}.Params(word="please"))
    assert reward.score([Sample("p", "Yes, please."), Sample("p", "No.")]) == [1.0, 0.0]
''',
    "kl": '''def test_halves_on_schedule():
    schedule = {cls}(0.4, {cls}.Params(every=2))
    assert schedule.update(1, 0.0, 8) == 0.4
    assert schedule.update(2, 0.0, 8) == 0.2
''',
    "sampler": '''def test_cools_down_for_long_prompts():
    from ppo_term.recipe import GenerationConfig, PromptItem

    sampler = {cls}({cls}.Params(long_prompt_chars=5))
    plan = sampler.plan([PromptItem(prompt="a long prompt")], GenerationConfig(temperature=1.0))
    assert abs(plan.temperature - 0.7) < 1e-9
''',
}

_REGISTRY = {"reward": "rewards", "kl": "kl_schedules", "sampler": "samplers"}


def names(name: str) -> tuple[str, str, str]:
    """'My Reward' -> (plugin name 'my-reward', module 'ppo_term_my_reward', class 'MyReward')."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    if not slug or not slug[0].isalpha():
        raise ValueError(f"plugin name {name!r} should start with a letter")
    cls = "".join(part.capitalize() for part in slug.split("-"))
    return slug, "ppo_term_" + slug.replace("-", "_"), cls


def new_plugin(name: str, kind: str, parent: Path) -> Path:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
    slug, module, cls = names(name)
    root = parent / f"ppo-term-{slug}"
    if root.exists():
        raise FileExistsError(f"{root} already exists")
    (root / module).mkdir(parents=True)
    (root / "tests").mkdir()
    (root / "pyproject.toml").write_text(f'''[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "ppo-term-{slug}"
version = "0.1.0"
description = "A {kind} plugin for ppo-term"
requires-python = ">=3.11"
dependencies = ["ppo-term"]

[project.entry-points.ppo_term]
{slug} = "{module}"

[tool.setuptools]
packages = ["{module}"]
''')
    (root / module / "__init__.py").write_text(
        f'"""ppo-term {kind} plugin `{slug}`."""\n\n' + _IMPORTS[kind] + "\n\n" + _CLASSES[kind].format(cls=cls, name=slug)
        + f"\n\n@hookimpl\ndef {KINDS[kind]}(register):\n    register({cls})\n"
    )
    sample_import = "from ppo_term.plugins.types import Sample\n" if kind == "reward" else ""
    (root / "tests" / f"test_{module}.py").write_text(
        f"{sample_import}from ppo_term.plugins.manager import build_plugins\n\nfrom {module} import {cls}\n\n\n"
        + _TESTS[kind].format(cls=cls)
        + f'''

def test_found_through_the_entry_point():
    # passes once the package is installed (pip install -e .)
    assert "{slug}" in build_plugins().{_REGISTRY[kind]}
'''
    )
    use = {
        "reward": f'[[rewards]]\nname = "{slug}"\nweight = 1.0\nword = "please"',
        "kl": f'[kl]\nschedule = "{slug}"\ncoef = 0.1\nevery = 10',
        "sampler": f'[sampler]\nname = "{slug}"\nlong_prompt_chars = 200',
    }[kind]
    (root / "README.md").write_text(f'''# ppo-term-{slug}

A {kind} plugin for [ppo-term](https://pypi.org/project/ppo-term/).

```bash
pip install -e .          # then: ppo-term plugins   lists "{slug}"
python -m pytest tests
```

Use it in a recipe:

```toml
{use}
```
''')
    return root
