"""generation.greedy: one candidate of each prompt is its greedy answer, which PPO then trains on."""

import pytest
import torch

from ppo_term.engine.rollout import generate
from ppo_term.recipe import RecipeError, load_recipe
from ppo_term.tui.widgets.rollouts import response_text
from tests.test_engine import make_trainer


def test_greedy_must_leave_a_sampled_candidate(write_recipe):
    with pytest.raises(RecipeError, match="openings .1 x opening_n 1. and greedy must leave"):
        load_recipe(write_recipe(), ['generation.openings=["yes"]', "generation.greedy=true"])  # n = 2


@pytest.mark.parametrize("openings", [[], ["yes no"]])
def test_each_prompt_has_its_greedy_answer_last(write_recipe, openings):
    import json

    recipe = load_recipe(write_recipe(), ["generation.n=4", "generation.greedy=true", "generation.max_new_tokens=6",
                                          f"generation.openings={json.dumps(openings)}", "generation.temperature=1.5"])
    trainer = make_trainer(recipe)
    items = trainer.items[:3]
    torch.manual_seed(0)
    batch = generate(trainer.policy, trainer.tokenizer, items, recipe.generation)
    greedy_only = recipe.generation.model_copy(update={"n": 1, "openings": [], "greedy": False, "temperature": 0.0})
    expected = generate(trainer.policy, trainer.tokenizer, items, greedy_only)
    assert batch.greedy == [False, False, False, True] * 3
    assert batch.sampled == ([True] * (3 - len(openings)) + [False] * (len(openings) + 1)) * 3
    for j, g in enumerate(batch.groups):
        assert batch.responses[g[-1]] == expected.responses[j]
        assert batch.items[g[-1]] is items[j]
    # at temperature 1.5 the sampled candidates do not all repeat the greedy answer
    assert any(batch.responses[i] != expected.responses[i // 4] for i in range(12) if batch.sampled[i])
    # PPO's log-probs of all candidates, greedy included, are at the sampling temperature
    assert batch.temperature == 1.5


def test_a_run_trains_on_greedy_answers_and_measures_kl_on_sampled_ones(write_recipe):
    recipe = load_recipe(write_recipe(steps=2), ["generation.n=3", "generation.greedy=true"])
    steps, metrics = [], []
    trainer = make_trainer(recipe, listeners=[lambda e: (steps if e.kind == "rollouts" else metrics).append(e.data)
                                              if e.kind in ("rollouts", "metrics") else None])
    trainer.run()
    for step, m in zip(steps, metrics):
        rows = step["samples"]
        assert [r["greedy"] for r in rows] == [False, False, True] * 2
        sampled = [r["kl"] for r in rows if not r["greedy"]]
        assert m["kl"] == pytest.approx(sum(sampled) / len(sampled), abs=1e-5)
        assert m["samples"] == 6  # the greedy answers are trained on too


def test_the_dashboard_marks_a_greedy_answer():
    assert response_text({"response": "yes yes", "greedy": True}).plain == "= yes yes"
    assert response_text({"response": "yes yes", "greedy": False}).plain == "yes yes"


def test_heldout_eval_answers_once_a_prompt_with_greedy_candidates(write_recipe):
    extra = '[eval]\nevery = 1\nitems = [{prompt = "tell a poem", label = "benign"}]\n'
    recipe = load_recipe(write_recipe(extra, steps=1), ["generation.n=3", "generation.greedy=true"])
    trainer = make_trainer(recipe)
    trainer.run()
    assert "eval/benign/reward" in trainer.history[-1]
