"""Old log-probs and values taken while sampling (RolloutRecorder) in place of a pass of the policy."""

import pytest
import torch

from ppo_term.engine import ppo
from ppo_term.engine.rollout import generate
from ppo_term.recipe import RecipeError, load_recipe
from tests.test_engine import make_trainer


def _perturbed(trainer):
    """A trained-looking adapter (so merging it for decoding matters) and a value head that is not 0."""
    torch.manual_seed(3)
    with torch.no_grad():
        for name, p in trainer.policy.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
        for p in trainer.policy.value_head.parameters():
            p.normal_(0, 0.5)
    return trainer


@pytest.mark.parametrize("share_prompts,one_call", [(True, True), (False, True), (True, False)])
def test_recorded_logprobs_and_values_match_a_pass_of_the_policy(write_recipe, share_prompts, one_call):
    # min_new_tokens masks EOS and top_p truncates the sampling distribution: the recorded
    # log-probs are still of the raw logits / temperature, as the update computes them
    recipe = load_recipe(write_recipe(), ["generation.n=3", 'generation.openings=["yes no"]', "generation.greedy=true",
                                          "generation.n=4", "generation.temperature=0.8", "generation.top_p=0.9",
                                          "generation.min_new_tokens=3", "precision=fp32"])
    trainer = _perturbed(make_trainer(recipe))
    policy = trainer.policy
    batch = generate(policy, trainer.tokenizer, trainer.items[:2], recipe.generation, share_prompts=share_prompts,
                     record=True, one_call=one_call)
    # 4 candidates a prompt: 2 sampled, 1 opened, 1 greedy; in one call all are recorded (the
    # opening's tokens and the argmax are decoded like drawn ones), in separate calls the sampled ones
    assert batch.openings == [None, None, "yes no", None] * 2 and batch.greedy == [False] * 3 + [True] + [False] * 3 + [True]
    if one_call:
        assert batch.recorded == [True] * 8
    else:
        assert batch.recorded == [o is None and not g for o, g in zip(batch.openings, batch.greedy)]
    P = batch.query_ids.shape[1]
    with torch.no_grad():
        logits, values = policy.forward(policy.lm, batch.input_ids, batch.attention_mask, P)
        logprobs = ppo.logprobs_from_logits(logits, batch.response_ids, batch.temperature)
    rows, m = torch.tensor(batch.recorded, device=batch.mask.device), batch.mask.bool()
    keep = m & rows[:, None]
    assert keep.sum() > 8
    torch.testing.assert_close(batch.old_logprobs[keep], logprobs[keep], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(batch.old_values[keep], values[keep], rtol=1e-4, atol=1e-4)
    assert values[keep].abs().max() > 0.1  # the comparison means something
    # the rows that were not recorded hold nothing
    assert batch.old_logprobs[~rows].eq(0).all()
    # an opened row's first tokens are its opening's, a greedy row's every token its argmax
    opening = trainer.tokenizer("yes no", add_special_tokens=False).input_ids
    assert batch.response_ids[2, : len(opening)].tolist() == opening
    g = batch.mask[3].bool()
    assert torch.equal(logits[3][g].argmax(-1), batch.response_ids[3][g])


def test_the_update_passes_the_policy_only_over_rows_it_did_not_record(write_recipe):
    recipe = load_recipe(write_recipe(), ["generation.n=3", 'generation.openings=["yes"]', "precision=fp32"])
    trainer = _perturbed(make_trainer(recipe))
    assert trainer.record_rollout  # auto in fp32
    policy_rows = []
    forward = trainer.policy.forward

    def counting(lm, input_ids, *args, **kwargs):
        if lm is trainer.policy.lm and torch.is_grad_enabled() is False and kwargs.get("with_values", True):
            policy_rows.append(len(input_ids))
        return forward(lm, input_ids, *args, **kwargs)

    trainer.policy.forward = counting
    items = trainer.next_prompts()
    batch = generate(trainer.policy, trainer.tokenizer, items, recipe.generation, record=True)
    trainer._rollout_stats(batch)
    assert policy_rows == []  # one call recorded every row, the opened ones too
    policy_rows.clear()
    batch = generate(trainer.policy, trainer.tokenizer, items, recipe.generation, record=True, one_call=False)
    logprobs, values, _ = trainer._rollout_stats(batch)
    # 2 prompts x 3 candidates, one opened each, its tokens given, not decoded: the policy's pass
    # ran over those 2 rows alone
    assert sum(policy_rows) == 2
    recorded = torch.tensor(batch.recorded, device=logprobs.device)
    assert torch.equal(logprobs[recorded], batch.old_logprobs[recorded])
    # and the opened rows got the pass's numbers
    policy_rows.clear()
    batch.old_logprobs = batch.old_values = None
    batch.recorded = [False] * len(batch.recorded)
    full, full_values, _ = trainer._rollout_stats(batch)
    assert sum(policy_rows) == 6
    m = batch.mask.bool()
    torch.testing.assert_close(logprobs[m], full[m], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(values[m], full_values[m], rtol=1e-4, atol=1e-4)


def test_recompute_and_bf16_take_the_pass(write_recipe):
    assert not make_trainer(load_recipe(write_recipe(), ["precision=fp32", "ppo.old_logprobs=recompute"])).record_rollout
    assert not make_trainer(load_recipe(write_recipe(), ["precision=bf16"])).record_rollout
    assert make_trainer(load_recipe(write_recipe(), ["precision=bf16", "ppo.old_logprobs=rollout"])).record_rollout
    with pytest.raises(RecipeError, match="old_logprobs"):
        load_recipe(write_recipe(), ["ppo.old_logprobs=sometimes"])


def test_a_recorded_run_starts_with_a_ratio_of_one(write_recipe):
    metrics = []
    recipe = load_recipe(write_recipe(steps=1), ["precision=fp32", "generation.n=3", "ppo.minibatch=6"])
    trainer = make_trainer(recipe, listeners=[lambda e: e.kind == "metrics" and metrics.append(e.data)])
    trainer.run()
    # one minibatch, one epoch: the update's log-probs are the recorded ones, to rounding
    assert metrics[0]["approx_kl"] < 1e-8 and metrics[0]["clipfrac"] == 0
