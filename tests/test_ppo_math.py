"""PPO math against values worked out by hand on small tensors."""

import math

import pytest
import torch

from ppo_term.engine import ppo


def t(*rows):
    return torch.tensor(rows, dtype=torch.float32)


def test_masked_mean_ignores_padding():
    x, mask = t([1.0, 2.0, 100.0]), t([1.0, 1.0, 0.0])
    assert ppo.masked_mean(x, mask).item() == pytest.approx(1.5)


def test_whiten_by_hand():
    # mean 2.5, unbiased variance 5/3, std 1.2910
    w = ppo.masked_whiten(t([1.0, 2.0, 3.0, 4.0]), t([1.0, 1.0, 1.0, 1.0]))
    assert w[0].tolist() == pytest.approx([-1.1619, -0.3873, 0.3873, 1.1619], abs=1e-4)


def test_kl_estimators_by_hand():
    logprobs, ref = t([-1.0, -2.0]), t([-1.5, -2.0])
    assert ppo.kl_per_token(logprobs, ref, "k1")[0].tolist() == pytest.approx([0.5, 0.0])
    # k3 = exp(ref - logp) - 1 - (ref - logp) = exp(-0.5) - 0.5
    assert ppo.kl_per_token(logprobs, ref, "k3")[0].tolist() == pytest.approx([math.exp(-0.5) - 0.5, 0.0])
    with pytest.raises(ValueError, match="k2"):
        ppo.kl_per_token(logprobs, ref, "k2")


def test_token_rewards_put_score_on_last_real_token():
    rewards = ppo.token_rewards(torch.tensor([2.0]), t([0.1, 0.2, 0.3]), 0.5, t([1.0, 1.0, 0.0]))
    assert rewards[0].tolist() == pytest.approx([-0.05, -0.1 + 2.0, 0.0])


def test_token_rewards_with_a_kl_coef_per_sample():
    # sample 0 at kl_coef 0.5, sample 1 at 2.0 (its label's scale 4): -0.5*0.1, -2.0*0.1 ...
    kl = torch.tensor([[0.1, 0.2], [0.1, 0.3]])
    rewards = ppo.token_rewards(torch.tensor([1.0, -1.0]), kl, torch.tensor([[0.5], [2.0]]), torch.ones(2, 2))
    assert rewards.tolist() == [pytest.approx([-0.05, -0.1 + 1.0]), pytest.approx([-0.2, -0.6 - 1.0])]


def test_gae_by_hand():
    # gamma 0.9, lam 0.8: deltas 1.4, -1.0, 2.0 -> A2 = 2, A1 = -1 + 0.72*2, A0 = 1.4 + 0.72*A1
    adv, ret = ppo.gae(t([1.0, 0.0, 2.0]), t([0.5, 1.0, 0.0]), t([1.0, 1.0, 1.0]), 0.9, 0.8)
    assert adv[0].tolist() == pytest.approx([1.7168, 0.44, 2.0])
    assert ret[0].tolist() == pytest.approx([2.2168, 1.44, 2.0])


def test_gae_masks_padding():
    # the padded position's reward 5 and value 3 must not leak backwards
    adv, ret = ppo.gae(t([1.0, 0.0, 5.0]), t([0.5, 1.0, 3.0]), t([1.0, 1.0, 0.0]), 0.9, 0.8)
    assert adv[0].tolist() == pytest.approx([0.68, -1.0, 0.0])
    assert ret[0].tolist() == pytest.approx([1.18, 0.0, 0.0])


def gae_loop(rewards, values, gamma, lam):
    """GAE by the definition: A_t = sum_k (gamma*lam)^k delta_{t+k}, in plain Python."""
    T = len(rewards)
    deltas = [rewards[i] + gamma * (values[i + 1] if i + 1 < T else 0.0) - values[i] for i in range(T)]
    return [sum((gamma * lam) ** k * deltas[i + k] for k in range(T - i)) for i in range(T)]


@pytest.mark.parametrize("gamma,lam", [(1.0, 0.95), (0.99, 1.0), (0.5, 0.0)])
def test_gae_matches_plain_loop(gamma, lam):
    g = torch.Generator().manual_seed(1)
    rewards, values = torch.randn(3, 7, generator=g), torch.randn(3, 7, generator=g)
    lengths = [7, 4, 1]
    mask = torch.stack([(torch.arange(7) < n).float() for n in lengths])
    adv, ret = ppo.gae(rewards, values, mask, gamma, lam)
    for b, n in enumerate(lengths):
        expected = gae_loop(rewards[b, :n].tolist(), values[b, :n].tolist(), gamma, lam)
        assert adv[b, :n].tolist() == pytest.approx(expected, abs=1e-5)
        assert ret[b, :n].tolist() == pytest.approx([a + v for a, v in zip(expected, values[b, :n].tolist())], abs=1e-5)
        assert adv[b, n:].abs().sum() == 0


def test_policy_loss_by_hand():
    # ratios 1.5, 0.5, 1.1 with advantages 1, -2, 1 and cliprange 0.2:
    # per-token losses max(-A r, -A clip(r)) = -1.2 (clipped), 1.6 (clipped), -1.1
    new = torch.log(t([1.5, 0.5, 1.1]))
    old = t([0.0, 0.0, 0.0])
    loss, clipfrac, approx_kl, dual_clipfrac = ppo.policy_loss(new, old, t([1.0, -2.0, 1.0]), t([1.0, 1.0, 1.0]), 0.2)
    assert loss.item() == pytest.approx((-1.2 + 1.6 - 1.1) / 3)
    assert clipfrac.item() == pytest.approx(2 / 3)
    expected_kl = 0.5 * sum(math.log(r) ** 2 for r in (1.5, 0.5, 1.1)) / 3
    assert approx_kl.item() == pytest.approx(expected_kl)
    assert dual_clipfrac.item() == 0.0  # no dual clip asked for


def test_policy_loss_gradient_is_zero_where_clipped():
    new = torch.log(t([1.5, 1.1])).requires_grad_()
    loss, *_ = ppo.policy_loss(new, t([0.0, 0.0]), t([1.0, 1.0]), t([1.0, 1.0]), 0.2)
    loss.backward()
    # d/dlogp of -A*r/2 is -A*r/2 = -0.55 for the unclipped token; 0 for the clipped one
    assert new.grad[0].tolist() == pytest.approx([0.0, -0.55])


def test_dual_clip_by_hand():
    # ratios 5, 0.5, 5, 1.1 with advantages -1, -2, 1, -1, cliprange 0.2, dual_clip 3:
    # plain PPO: max(-A r, -A clip(r)) = 5 (unclipped: A < 0 is unbounded above), 1.6 (clipped),
    # -1.2 (clipped), 1.1; dual clip caps the first at -A * 3 = 3 and leaves the rest (1.6 < 6)
    new = torch.log(t([5.0, 0.5, 5.0, 1.1]))
    old, adv, mask = t([0.0, 0.0, 0.0, 0.0]), t([-1.0, -2.0, 1.0, -1.0]), t([1.0, 1.0, 1.0, 1.0])
    plain_new, dual_new = new.clone().requires_grad_(), new.clone().requires_grad_()
    plain, clipfrac, _, dual_clipfrac = ppo.policy_loss(plain_new, old, adv, mask, 0.2)
    assert plain.item() == pytest.approx((5.0 + 1.6 - 1.2 + 1.1) / 4)
    assert (clipfrac.item(), dual_clipfrac.item()) == pytest.approx((2 / 4, 0.0))
    loss, clipfrac, _, dual_clipfrac = ppo.policy_loss(dual_new, old, adv, mask, 0.2, dual_clip=3.0)
    assert loss.item() == pytest.approx((3.0 + 1.6 - 1.2 + 1.1) / 4)
    assert (clipfrac.item(), dual_clipfrac.item()) == pytest.approx((2 / 4, 1 / 4))
    plain.backward()
    loss.backward()
    # d/dlogp of -A r / 4 = r / 4 where unclipped: plain PPO pushes the runaway token with 5/4,
    # more than the in-range one (0.275); dual clip gives it none
    assert plain_new.grad[0].tolist() == pytest.approx([1.25, 0.0, 0.0, 0.275])
    assert dual_new.grad[0].tolist() == pytest.approx([0.0, 0.0, 0.0, 0.275])


def test_dual_clip_in_recipe_must_exceed_one(tmp_path):
    from ppo_term.recipe import RecipeError, load_recipe

    path = tmp_path / "r.toml"
    path.write_text('name = "x"\nmodel = "m"\n[ppo]\ndual_clip = 0.5\n')
    with pytest.raises(RecipeError, match="dual_clip"):
        load_recipe(path)


def test_value_loss_by_hand():
    # token 1: new 1.0, old 0.5, return 2: clipped to 0.7 -> max(1.0, 1.69) = 1.69
    # token 2: new 0.6, old 0.5, return 0: inside the clip range -> 0.36
    loss, clipfrac = ppo.value_loss(t([1.0, 0.6]), t([0.5, 0.5]), t([2.0, 0.0]), t([1.0, 1.0]), 0.2)
    assert loss.item() == pytest.approx(0.5 * (1.69 + 0.36) / 2)
    assert clipfrac.item() == pytest.approx(0.5)


def test_logprobs_and_entropy_by_hand():
    logits = torch.log(torch.tensor([[[0.5, 0.25, 0.25]]]))
    assert ppo.logprobs_from_logits(logits, torch.tensor([[1]])).item() == pytest.approx(math.log(0.25))
    assert ppo.entropy_from_logits(logits).item() == pytest.approx(-(0.5 * math.log(0.5) + 0.5 * math.log(0.25)))


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_chunked_logprobs_and_entropy_match_a_plain_log_softmax(monkeypatch, temperature):
    monkeypatch.setattr(ppo, "CHUNK", 3)  # 8 positions: chunks of 3, 3 and 2
    gen = torch.Generator().manual_seed(0)
    logits = (3 * torch.randn(2, 4, 11, generator=gen)).requires_grad_()
    tokens = torch.randint(0, 11, (2, 4), generator=gen)
    weights = torch.randn(2, 4, generator=gen)
    plain = torch.log_softmax(logits / temperature, -1)
    expected = plain.gather(-1, tokens[..., None]).squeeze(-1)
    got = ppo.logprobs_from_logits(logits, tokens, temperature)
    torch.testing.assert_close(got, expected)
    (want,) = torch.autograd.grad((expected * weights).sum(), logits)
    (have,) = torch.autograd.grad((got * weights).sum(), logits)
    torch.testing.assert_close(have, want)
    with torch.no_grad():
        torch.testing.assert_close(ppo.entropy_from_logits(logits, temperature), -(plain.exp() * plain).sum(-1))
    # with grad (an entropy bonus in the loss) it is differentiable
    assert ppo.entropy_from_logits(logits, temperature).sum().requires_grad


def test_chunked_logprobs_of_bf16_logits_match_fp32(monkeypatch):
    # bf16 logits (the bf16 head): the work is fp32 a chunk at a time, the gradient comes back bf16
    monkeypatch.setattr(ppo, "CHUNK", 3)
    gen = torch.Generator().manual_seed(1)
    logits = (3 * torch.randn(2, 4, 11, generator=gen)).bfloat16()
    tokens = torch.randint(0, 11, (2, 4), generator=gen)
    weights = torch.randn(2, 4, generator=gen)
    grads = []
    for x in (logits.float().requires_grad_(), logits.clone().requires_grad_()):
        (ppo.logprobs_from_logits(x, tokens, 0.7) * weights).sum().backward()
        grads.append(x.grad)
    assert grads[1].dtype == torch.bfloat16
    torch.testing.assert_close(grads[1].float(), grads[0], rtol=1e-2, atol=1e-2)


def test_logprobs_gradient_by_hand():
    # logits log(0.5, 0.25, 0.25), token 1: d logprob / d logit = onehot - softmax = (-0.5, 0.75, -0.25)
    logits = torch.log(torch.tensor([[[0.5, 0.25, 0.25]]])).requires_grad_()
    ppo.logprobs_from_logits(logits, torch.tensor([[1]])).sum().backward()
    assert logits.grad.flatten().tolist() == pytest.approx([-0.5, 0.75, -0.25])


def test_response_mask_stops_after_first_eos():
    ids = torch.tensor([[5, 2, 7, 2], [5, 6, 7, 8]])
    mask, finished = ppo.response_mask(ids, [2])
    assert mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]
    assert finished.tolist() == [True, False]


def test_leave_one_out_baseline_by_hand():
    # prompt A: 1, 0, 2 -> 1 - 1, 0 - 1.5, 2 - 0.5; prompt B alone keeps its score
    out = ppo.leave_one_out(torch.tensor([1.0, 0.0, 2.0, 5.0]), [[0, 1, 2], [3]])
    assert out.tolist() == pytest.approx([0.0, -1.5, 1.5, 5.0])


def test_lr_schedules_by_hand():
    # constant: lr at every step
    assert ppo.lr_at(7, 10, 1e-3) == 1e-3
    # linear over 11 steps to 10%: step 6 is half way, 1e-3 * (1 - 0.9 * 0.5) = 5.5e-4
    assert ppo.lr_at(1, 11, 1e-3, "linear", 0.1) == pytest.approx(1e-3)
    assert ppo.lr_at(6, 11, 1e-3, "linear", 0.1) == pytest.approx(5.5e-4)
    assert ppo.lr_at(11, 11, 1e-3, "linear", 0.1) == pytest.approx(1e-4)
    # cosine over 5 steps to 10%: step 2 is a quarter: 0.1 + 0.9 * (1 + cos(pi/4)) / 2 = 0.868198
    assert ppo.lr_at(2, 5, 1e-3, "cosine", 0.1) == pytest.approx(8.68198e-4, rel=1e-5)
    assert ppo.lr_at(5, 5, 1e-3, "cosine", 0.1) == pytest.approx(1e-4)
    assert ppo.lr_at(9, 5, 1e-3, "linear", 0.0) == 0.0  # past the end (a longer --steps) it stays at the end
    # held at lr for the first half (steps 1-6 of 11: decay_from 0.5 puts the start at step 6), then linear to the end
    assert ppo.lr_at(6, 11, 1e-3, "linear", 0.1, decay_from=0.5) == pytest.approx(1e-3)
    assert ppo.lr_at(9, 11, 1e-3, "linear", 0.1, decay_from=0.5) == pytest.approx(1e-3 * (1 - 0.9 * 3 / 5))
    assert ppo.lr_at(11, 11, 1e-3, "linear", 0.1, decay_from=0.5) == pytest.approx(1e-4)
    assert ppo.lr_at(8, 11, 1e-3, "cosine", 0.0, decay_from=0.4) == pytest.approx(5e-4)  # half-way through the decay
