"""Training passes run each distinct prompt once and give its KV cache to its candidates."""

import pytest
import torch

from ppo_term.engine.policy import shared_prompts
from ppo_term.engine.rollout import generate
from ppo_term.recipe import load_recipe
from tests.test_engine import make_trainer


def test_shared_prompts_maps_each_row_to_the_first_row_of_its_prompt():
    ids = torch.tensor([[0, 5, 6, 1], [7, 8, 9, 2], [0, 5, 6, 3], [7, 8, 9, 4], [7, 8, 9, 5]])
    mask = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1], [0, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1]])
    first, inverse = shared_prompts(ids, mask, prompt_len=3)
    # two prompts: rows 0 and 2 share one, rows 1, 3 and 4 the other
    assert sorted(first.tolist()) == [0, 1]
    assert first[inverse].tolist() == [0, 1, 0, 1, 1]
    # the same tokens under another mask are another prompt
    other = mask.clone()
    other[2, 0] = 1
    assert sorted(shared_prompts(ids, other, 3)[0].tolist()) == [0, 1, 2]
    # nothing to share: every row its own prompt, or a one-token prompt (no cache before it)
    assert shared_prompts(ids[:2], mask[:2], 3) is None
    assert shared_prompts(ids, mask, 1) is None


@pytest.mark.parametrize("lora", [True, False])
def test_shared_prompt_passes_give_the_same_logprobs_values_and_gradients(write_recipe, lora):
    recipe = load_recipe(write_recipe(), [
        "generation.n=4", 'generation.openings=["yes no"]', "generation.max_new_tokens=5", f"lora.enabled={lora}",
    ])
    trainer = make_trainer(recipe)
    policy = trainer.policy
    torch.manual_seed(0)
    with torch.no_grad():  # a trained-looking adapter: LoRA's B starts at zero, and then A gets no gradient
        for name, p in policy.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)
    batch = generate(policy, trainer.tokenizer, trainer.items[:3], recipe.generation)  # prompts of 3 lengths
    assert len(set(batch.query_mask.sum(-1).tolist())) > 1  # left padding in the shared prompts
    rows = torch.randperm(len(batch.responses), generator=torch.Generator().manual_seed(1))[:7]  # a PPO minibatch
    ids, att, P = batch.input_ids[rows], batch.attention_mask[rows], batch.query_ids.shape[1]
    T = batch.response_ids.shape[1]
    n_prompts = len({batch.items[i].prompt for i in rows.tolist()})
    assert n_prompts < len(rows)
    models = [policy.lm] + ([policy.ref_model] if policy.ref_model is not None else [])  # full FT: a frozen copy
    out, tokens = {}, {}
    for share in (False, True):
        policy.share_prompts = share
        passes: list[int] = []
        hooks = [lm.get_input_embeddings().register_forward_hook(lambda m, args, o: passes.append(args[0].numel()))
                 for lm in models]
        logits, values = policy.forward(policy.lm, ids, att, P)
        with torch.no_grad(), policy.reference() as ref:
            ref_logits, _ = policy.forward(ref, ids, att, P, with_values=False)
        for hook in hooks:
            hook.remove()
        tokens[share] = passes
        m = batch.mask[rows]
        # a PPO-like loss over the response tokens, through logits and values
        loss = (logits.log_softmax(-1).max(-1).values * m).sum() + ((values - 1) ** 2 * m).sum()
        loss.backward()
        grads = [p.grad.clone() for p in policy.trainable_parameters()]
        for p in policy.trainable_parameters():
            p.grad = None
        out[share] = (logits.detach(), values.detach(), ref_logits, grads)
    plain, shared = out[False], out[True]
    m = batch.mask[rows].bool()
    for a, b in zip(plain[:3], shared[:3]):
        torch.testing.assert_close(a[m], b[m], atol=1e-5, rtol=1e-5)
    assert all(g.abs().sum() > 0 for g in plain[3])
    for a, b in zip(plain[3], shared[3]):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    # every row's whole sequence, against each distinct prompt once (but its last token) plus the responses
    assert tokens[False] == [len(rows) * (P + T)] * 2
    assert tokens[True] == [n_prompts * (P - 1), len(rows) * T] * 2


@pytest.mark.parametrize("lora", [True, False])
def test_output_head_gets_contiguous_states_in_fp32(write_recipe, lora):
    """A slice of positions reaches the vocabulary matmul contiguous (else torch copies the whole
    head matrix once per sequence in a bmm), for the policy and the reference alike."""
    recipe = load_recipe(write_recipe(), ["generation.max_new_tokens=4", f"lora.enabled={lora}", "precision=fp32"])
    trainer = make_trainer(recipe)
    policy = trainer.policy
    policy.share_prompts = False  # the plain pass slices the response positions out of every row
    batch = generate(policy, trainer.tokenizer, trainer.items[:3], recipe.generation)
    seen = []
    with policy.reference() as ref:
        heads = {policy.lm.get_output_embeddings(), ref.get_output_embeddings()}
    hooks = [h.register_forward_pre_hook(lambda m, args: seen.append(args[0].is_contiguous())) for h in heads]
    P = batch.query_ids.shape[1]
    logits, _ = policy.forward(policy.lm, batch.input_ids, batch.attention_mask, P)
    with torch.no_grad(), policy.reference() as ref:
        policy.forward(ref, batch.input_ids, batch.attention_mask, P, with_values=False)
    for hook in hooks:
        hook.remove()
    assert logits.dtype == torch.float32 and len(batch.responses) > 1
    assert seen == [True, True]
