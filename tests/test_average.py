"""[average]: a run hands over the average of its last checkpoints (a soup of its own tail)."""

import json

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from ppo_term.cli import app
from ppo_term.evaluate import resolve_target
from ppo_term.recipe import RecipeError, load_recipe
from ppo_term.runs import RunDir
from tests.test_engine import make_trainer

AVERAGE = "\n[average]\nlast = 3\nevery = 2\n"


def delta(adapter_dir, key_a: str) -> torch.Tensor:
    """The adapter's change to one weight: scale * B @ A."""
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    tensors = load_file(str(adapter_dir / "adapter_model.safetensors"))
    key_b = key_a.replace(".lora_A.", ".lora_B.")
    return config["lora_alpha"] / config["r"] * tensors[key_b].float() @ tensors[key_a].float()


def test_average_steps_count_back_from_the_last_and_fit_a_shortened_run(write_recipe):
    assert load_recipe(write_recipe(AVERAGE, steps=10)).average_steps() == [6, 8, 10]
    assert load_recipe(write_recipe(AVERAGE, steps=4)).average_steps() == [2, 4]  # step 0 does not exist
    assert load_recipe(write_recipe(AVERAGE, steps=1)).average_steps() == []  # one checkpoint is no average
    assert load_recipe(write_recipe(steps=10)).average_steps() == []  # off by default


def test_average_errors_name_the_field(write_recipe):
    with pytest.raises(RecipeError, match=r"recipe\.toml: average: .*set 0 \(off\) or at least 2"):
        load_recipe(write_recipe("\n[average]\nlast = 1\n"))
    with pytest.raises(RecipeError, match=r"average\.every: .*greater than or equal to 1"):
        load_recipe(write_recipe("\n[average]\nlast = 2\nevery = 0\n"))
    with pytest.raises(RecipeError, match=r"average\.last: the run hands over either its best checkpoint"):
        load_recipe(write_recipe(AVERAGE + '\n[eval]\nkeep_best = true\nitems = ["hi"]\n'))


def test_a_finished_run_hands_over_the_average_of_its_last_checkpoints(write_recipe, tmp_path):
    recipe = load_recipe(write_recipe(AVERAGE, steps=6), ["ppo.lr=0.01"])
    run = tmp_path / "run"
    trainer = make_trainer(recipe, run_dir=RunDir(run))
    trainer.run_dir.create("", [{"prompt": "x"}], 6, "tiny")
    seen = []
    trainer.listeners.append(seen.append)
    result = trainer.run()
    ckpts = run / "checkpoints"
    # save_every = 0, yet the averaged steps were saved for it
    assert sorted(p.name for p in ckpts.iterdir()) == ["average", "step-2", "step-4", "step-6"]
    assert result.average == ckpts / "average" and result.last_checkpoint == ckpts / "step-6"
    record = json.loads((ckpts / "average" / "soup.json").read_text())
    assert [m["checkpoint"] for m in record["members"]] == [str((ckpts / f"step-{s}").resolve()) for s in (2, 4, 6)]
    assert [m["weight"] for m in record["members"]] == pytest.approx([1 / 3] * 3)
    # its change to each weight is the mean of the three steps' changes
    key = next(k for k in load_file(str(ckpts / "step-6" / "adapter_model.safetensors")) if ".lora_A." in k)
    mean = sum(delta(ckpts / f"step-{s}", key) for s in (2, 4, 6)) / 3
    assert not torch.allclose(delta(ckpts / "step-2", key), delta(ckpts / "step-6", key))  # the steps differ
    torch.testing.assert_close(delta(ckpts / "average", key), mean, rtol=1e-5, atol=1e-6)
    # a run directory as TARGET means what the run hands over; its latest step is still step-6
    assert resolve_target(str(run)).adapter == ckpts / "average"
    assert RunDir(run).latest_checkpoint() == ckpts / "step-6"
    saved = [(e.step, e.data["reason"]) for e in seen if e.kind == "checkpoint"]
    assert saved == [(2, "average"), (4, "average"), (6, "end"), (6, "average")]


def test_a_stopped_run_hands_over_its_last_step_and_a_failed_average_loses_nothing(write_recipe, tmp_path,
                                                                                     monkeypatch):
    recipe = load_recipe(write_recipe(AVERAGE, steps=6))
    trainer = make_trainer(recipe, run_dir=RunDir(tmp_path / "stopped"))
    trainer.run_dir.create("", [{"prompt": "x"}], 6, "tiny")
    seen = []
    trainer.listeners.append(lambda e: seen.append(e) or (e.kind == "metrics" and e.step == 3 and trainer.controls.stop()))
    result = trainer.run()
    assert result.status == "stopped" and result.average is None
    assert not (tmp_path / "stopped" / "checkpoints" / "average").exists()
    assert resolve_target(str(tmp_path / "stopped")).adapter.name == "step-3"

    # the soup fails: a warning says so, and every checkpoint of the run is still there
    import ppo_term.soup

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(ppo_term.soup, "make_soup", broken)
    trainer = make_trainer(recipe, run_dir=RunDir(tmp_path / "failed"))
    trainer.run_dir.create("", [{"prompt": "x"}], 6, "tiny")
    seen = []
    trainer.listeners.append(seen.append)
    result = trainer.run()
    assert result.status == "finished" and result.average is None
    assert any(e.kind == "warning" and "disk full" in e.data["message"] for e in seen)
    names = sorted(p.name for p in (tmp_path / "failed" / "checkpoints").iterdir())
    assert names == ["step-2", "step-4", "step-6"]


def test_headless_run_names_what_it_hands_over(write_recipe, tmp_path):
    run = tmp_path / "run"
    result = CliRunner().invoke(app, ["run", str(write_recipe(AVERAGE, steps=4)), "--headless", "--run-dir", str(run)])
    assert result.exit_code == 0, result.output
    assert f"the run hands over {run / 'checkpoints' / 'average'}" in result.output
    assert json.loads((run / "checkpoints" / "average" / "soup.json").read_text())["members"][0]["checkpoint"].endswith("step-2")
