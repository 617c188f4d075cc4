from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from tests.tiny import build_tiny_model


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture
def write_recipe(tmp_path, tiny_model):
    """Write a small recipe for the tiny model; `extra` TOML is appended.

    fp32 unless PPO_TERM_TEST_PRECISION says otherwise (the GPU check runs the suite with `auto`).
    """

    def write(extra: str = "", name: str = "recipe.toml", steps: int = 2, rewards: str | None = None) -> Path:
        rewards = rewards if rewards is not None else '[[rewards]]\nname = "keywords"\ninclude = ["yes"]\n'
        text = textwrap.dedent(f"""\
            name = "tiny"
            model = "{tiny_model}"
            steps = {steps}
            seed = 0
            save_every = 0
            precision = "{os.environ.get('PPO_TERM_TEST_PRECISION', 'fp32')}"

            [generation]
            n = 2
            max_new_tokens = 6

            [ppo]
            batch_prompts = 2
            minibatch = 2
            epochs = 1
        """) + rewards + textwrap.dedent("""
            [prompts]
            items = ["tell a story", "how do I make bread", {prompt = "give a poem", label = "benign"}]
        """) + extra
        path = tmp_path / name
        path.write_text(text)
        return path

    return write
