"""`ppo-term run` / `runs` end to end on the tiny model, and the run directory's guarantees."""

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from ppo_term.cli import app
from ppo_term.recipe import load_recipe
from ppo_term.runs import RunDir, list_runs, read_jsonl


def test_run_writes_metrics_rollouts_and_a_loadable_checkpoint(write_recipe, tmp_path, tiny_model):
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(app, ["run", str(write_recipe()), "--headless", "--steps", "2",
                                      "--run-dir", str(run_dir), "--set", "generation.n=3"])
    assert result.exit_code == 0, result.output
    assert "finished after 2 steps" in result.output
    metrics = list(read_jsonl(run_dir / "metrics.jsonl"))
    assert [m["step"] for m in metrics] == [1, 2]
    for key in ("reward", "reward/keywords", "kl", "kl_coef", "policy_loss", "value_loss", "entropy", "clipfrac",
                "approx_kl", "response_length", "time/generate", "time/score", "time/train", "tokens_per_s"):
        assert key in metrics[0], key
    rollouts = list(read_jsonl(run_dir / "rollouts.jsonl"))
    assert len(rollouts) == 2 * 2 * 3  # steps x prompts x candidates
    assert {"prompt", "response", "reward", "components", "kl", "token_kl"} <= set(rollouts[0])
    # the recipe as run is itself a valid recipe, with the override applied and its prompts beside it
    again = load_recipe(run_dir / "recipe.toml")
    assert again.generation.n == 3 and again.steps == 2 and len(again.prompt_items()) == 3
    state = json.loads((run_dir / "state.json").read_text())
    assert state["status"] == "finished" and state["steps_done"] == 2

    ckpt = run_dir / "checkpoints" / "step-2"
    assert {"adapter_model.safetensors", "adapter_config.json", "value_head.safetensors", "optimizer.safetensors",
            "rng.safetensors", "trainer_state.json"} <= {p.name for p in ckpt.iterdir()}
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), ckpt)
    assert any("lora_A" in n for n, _ in model.named_parameters())
    assert not list(ckpt.parent.glob(".*"))  # no temp dirs left behind

    listing = CliRunner().invoke(app, ["runs", "--root", str(tmp_path)])
    assert "run" in listing.output and "finished" in listing.output and "2/2" in listing.output


def test_existing_run_dir_is_not_overwritten(write_recipe, tmp_path):
    rd = RunDir(tmp_path / "run")
    rd.create("x", [], 1, "m")
    result = CliRunner().invoke(app, ["run", str(write_recipe()), "--headless", "--run-dir", str(rd.path)])
    assert result.exit_code == 2 and "already holds a run" in result.output
    assert (rd.path / "recipe.toml").read_text() == "x"


def test_failed_checkpoint_write_leaves_no_partial_dir(tmp_path):
    rd = RunDir(tmp_path / "run")
    rd.create("", [], 1, "m")

    def half_write(folder):
        (folder / "adapter_model.safetensors").write_text("partial")
        raise OSError("disk full")

    with pytest.raises(OSError):
        rd.write_checkpoint(3, half_write)
    assert list(rd.checkpoints.iterdir()) == []


def test_killed_run_shows_as_killed_and_keeps_its_lines(tmp_path):
    rd = RunDir(tmp_path / "r1")
    rd.create("", [], 10, "m")
    rd.append("metrics.jsonl", {"step": 1, "reward": 0.5, "kl": 0.1})
    with (rd.path / "metrics.jsonl").open("a") as f:
        f.write('{"step": 2, "rew')  # a writer killed mid-line
    rd.write_state(pid=2**22 + 12345)  # no such process
    assert [m["step"] for m in read_jsonl(rd.path / "metrics.jsonl")] == [1]
    (info,) = list_runs(tmp_path)
    assert info.status == "killed"


def test_sigterm_marks_the_run_interrupted(write_recipe, tmp_path):
    run_dir = tmp_path / "run"
    recipe = write_recipe(steps=10000)
    proc = subprocess.Popen([sys.executable, "-m", "ppo_term.cli", "run", str(recipe), "--headless",
                             "--run-dir", str(run_dir)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        if line.startswith("step    2"):
            break
    proc.terminate()
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, out
    state = json.loads((run_dir / "state.json").read_text())
    assert state["status"] == "interrupted"
    assert len(list(read_jsonl(run_dir / "metrics.jsonl"))) >= 2


def test_cli_help_does_not_import_torch():
    code = "import sys, ppo_term.cli; print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
    help_out = subprocess.run([sys.executable, "-m", "ppo_term.cli", "--help"], capture_output=True, text=True)
    assert help_out.returncode == 0 and "run" in help_out.stdout and "runs" in help_out.stdout


def test_missing_model_dir_is_a_clear_error(write_recipe, tmp_path):
    result = CliRunner().invoke(app, ["run", str(write_recipe()), "--headless", "--run-dir", str(tmp_path / "r"),
                                      "--set", f"model={tmp_path}/nope"])
    assert result.exit_code == 1 and "does not exist" in result.output and "Traceback" not in result.output
    assert json.loads((tmp_path / "r" / "state.json").read_text())["status"] == "failed"
