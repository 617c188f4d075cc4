"""Exploration by openings: some candidates start with given words, and PPO learns where they pay."""

import pytest
import torch

from ppo_term.engine.rollout import generate
from ppo_term.recipe import RecipeError, load_recipe
from tests.test_engine import YesReward, make_trainer, prob_of


def test_openings_must_leave_a_free_candidate(write_recipe):
    with pytest.raises(RecipeError, match="openings"):
        load_recipe(write_recipe(), ['generation.openings=["yes"]', "generation.opening_n=2"])  # n = 2


def test_opened_candidates_start_with_the_opening_as_response_tokens(write_recipe):
    recipe = load_recipe(write_recipe(), ["generation.n=3", 'generation.openings=["yes no"]'])
    trainer = make_trainer(recipe)
    tok = trainer.tokenizer
    items = trainer.items[:2]
    batch = generate(trainer.policy, tok, items, recipe.generation)
    opening = tok("yes no", add_special_tokens=False).input_ids
    k = len(opening)
    assert batch.openings == [None, None, "yes no"] * 2
    assert [it.prompt for it in batch.items] == [items[0].prompt] * 3 + [items[1].prompt] * 3
    assert batch.groups == [[0, 1, 2], [3, 4, 5]]
    for g in batch.groups:  # one query per prompt, shared by its candidates
        assert all(torch.equal(batch.query_ids[i], batch.query_ids[g[0]]) for i in g)
    for i in (2, 5):
        assert batch.response_ids[i, :k].tolist() == opening
        assert batch.mask[i, :k].eq(1).all()  # trained on like sampled tokens
        assert batch.responses[i].startswith("yes no")
    # the whole response, opening included, fits the recipe's token budget
    assert batch.response_ids.shape[1] <= recipe.generation.max_new_tokens


def test_opening_labels_open_only_the_prompts_of_those_labels(write_recipe):
    recipe = load_recipe(write_recipe(), ["generation.n=3", 'generation.openings=["yes no"]',
                                          'generation.opening_labels=["benign"]'])
    trainer = make_trainer(recipe)
    tok = trainer.tokenizer
    items = [trainer.items[0], trainer.items[2]]  # no label, then label = "benign"
    assert items[1].metadata["label"] == "benign" and "label" not in items[0].metadata
    batch = generate(trainer.policy, tok, items, recipe.generation, record=True)
    assert batch.openings == [None, None, None, None, None, "yes no"]
    assert batch.sampled == [True] * 5 + [False]  # the unlabelled prompt's third candidate was drawn freely
    opening = tok("yes no", add_special_tokens=False).input_ids
    assert batch.response_ids[5, : len(opening)].tolist() == opening
    assert batch.recorded == [True] * 6
    with pytest.raises(RecipeError, match="opening_labels"):
        load_recipe(write_recipe(), ['generation.opening_labels=["benign"]'])  # no openings to give


def _train_yes(write_recipe, overrides):
    rewards = '[[rewards]]\nname = "yes-fraction"\n'
    recipe = load_recipe(write_recipe(rewards=rewards, steps=4), [
        "ppo.lr=0.01", "generation.n=4", "ppo.batch_prompts=3", "ppo.minibatch=6", "ppo.epochs=2",
        "generation.max_new_tokens=4", "kl.coef=0.01", "ppo.score_baseline=group", *overrides,
    ])
    rows, metrics = [], []

    def listen(e):
        if e.kind == "rollouts":
            rows.append(e.data["samples"])
        elif e.kind == "metrics":
            metrics.append(e.data)

    trainer = make_trainer(recipe, YesReward, listeners=[listen])
    before = prob_of(trainer, "yes")
    trainer.run()
    return before, prob_of(trainer, "yes"), rows, metrics


def test_ppo_learns_an_opening_the_reward_pays_for_faster_than_by_sampling(write_recipe):
    before, free, _, _ = _train_yes(write_recipe, [])
    before_o, opened, steps, metrics = _train_yes(write_recipe, ['generation.openings=["yes"]'])
    rows = [r for step in steps for r in step]
    assert before_o == before
    # every prompt has one candidate that says "yes" first, and the reward pays for it
    assert opened > free and opened > 3 * before, (before, free, opened)
    assert {r["opening"] for r in rows} == {None, "yes"}
    assert sum(r["opening"] == "yes" for r in rows) == 4 * 3  # one of the 4 candidates of 3 prompts a step
    # the KL the schedule sees is the policy's own samples': a given opening was not drawn from it
    for step, m in zip(steps, metrics):
        sampled = [r["kl"] for r in step if r["opening"] is None]
        assert m["kl"] == pytest.approx(sum(sampled) / len(sampled), abs=1e-5)
    assert any(m["kl"] != pytest.approx(sum(r["kl"] for r in step) / len(step), abs=1e-4)
               for step, m in zip(steps, metrics))


def test_the_decode_weights_are_prepared_once_for_all_openings(write_recipe, monkeypatch):
    from ppo_term.engine import decode

    recipe = load_recipe(write_recipe(), ["generation.n=4", 'generation.openings=["yes", "no"]'])
    trainer = make_trainer(recipe)
    prepared = []
    real = decode._effective_weights
    monkeypatch.setattr(decode, "_effective_weights", lambda model: prepared.append(1) or real(model))
    batch = generate(trainer.policy, trainer.tokenizer, trainer.items[:2], recipe.generation, one_call=False)
    assert len(batch.responses) == 8 and batch.openings[:4] == [None, None, "yes", "no"]
    assert len(prepared) == 1  # three generate() calls, one merge of the adapter
    assert not trainer.policy.model._decode_weights_active


@pytest.mark.parametrize("openings,one_call", [([], True), (["yes no"], True), (["yes no"], False)])
def test_each_prompt_is_run_once_for_all_its_candidates(write_recipe, openings, one_call):
    import json

    recipe = load_recipe(write_recipe(), ["generation.n=5", f"generation.openings={json.dumps(openings)}",
                                          "generation.max_new_tokens=6"])
    trainer = make_trainer(recipe)
    items = trainer.items[:3]
    embed = trainer.policy.lm.get_input_embeddings()
    passes: list[int] = []  # tokens into the model, pass by pass
    hook = embed.register_forward_hook(lambda m, args, out: passes.append(args[0].numel()))
    batches, tokens = {}, {}
    for share in (False, True):
        passes.clear()
        torch.manual_seed(0)
        batches[share] = generate(trainer.policy, trainer.tokenizer, items, recipe.generation, share_prompts=share,
                                  one_call=one_call)
        tokens[share] = passes[:]
    hook.remove()
    plain, shared = batches[False], batches[True]
    # the same candidates, token for token, from the same random draws
    assert torch.equal(plain.response_ids, shared.response_ids) and plain.responses == shared.responses
    assert torch.equal(plain.query_ids, shared.query_ids) and torch.equal(plain.mask, shared.mask)
    P = plain.query_ids.shape[1]
    k = len(trainer.tokenizer("yes no", add_special_tokens=False).input_ids)
    # in one call every candidate decodes together (an opening's tokens one a step, like drawn ones)
    free = 5 if one_call else 5 - len(openings)
    # unshared: every candidate's prompt goes through the model
    assert tokens[False][0] == 3 * free * P
    # shared: each prompt once (but its last token), then each candidate from its last prompt token
    expected = [3 * (P - 1)] + [3 * free] * (len(tokens[True]) - 1)
    if openings and not one_call:  # opened candidates' own call, from the same cache: last prompt token + opening
        first = tokens[True].index(3 * (1 + k))
        expected[first:] = [3 * (1 + k)] + [3] * (len(tokens[True]) - first - 1)
    assert tokens[True] == expected
