"""The inverse-CDF sampler draws from the same distribution as multinomial sampling."""

import math

import torch

from ppo_term.engine.rollout import InverseCdfSampler, sampling_kwargs


def draw(sampler, logits, n=20000):
    torch.manual_seed(0)
    scores = logits.repeat(n, 1)
    out = sampler(torch.zeros(n, 1, dtype=torch.long), scores)
    # the result is a one-hot in log space: 0 at the drawn token, -inf elsewhere
    assert torch.all((out == 0).sum(-1) == 1) and torch.isinf(out).sum() == n * (logits.shape[-1] - 1)
    return torch.bincount(out.argmax(-1), minlength=logits.shape[-1]).float() / n


def test_frequencies_follow_softmax_with_temperature():
    logits = torch.tensor([[math.log(0.5), math.log(0.3), math.log(0.2), -math.inf]])
    freq = draw(InverseCdfSampler(temperature=1.0), logits)
    assert torch.allclose(freq, torch.tensor([0.5, 0.3, 0.2, 0.0]), atol=0.015), freq
    # temperature 2: probabilities proportional to sqrt(p)
    hot = torch.tensor([0.5, 0.3, 0.2]).sqrt()
    freq = draw(InverseCdfSampler(temperature=2.0), logits)
    assert torch.allclose(freq[:3], hot / hot.sum(), atol=0.015), freq
    assert freq[3] == 0.0  # a token with zero probability is never drawn


def test_top_k_and_top_p_cut_the_tail():
    logits = torch.tensor([[math.log(0.5), math.log(0.3), math.log(0.15), math.log(0.05)]])
    freq = draw(InverseCdfSampler(top_k=2), logits)
    assert torch.allclose(freq, torch.tensor([0.625, 0.375, 0.0, 0.0]), atol=0.015), freq
    # top_p 0.7 keeps the smallest set whose mass reaches 0.7: the first two tokens
    freq = draw(InverseCdfSampler(top_p=0.7), logits)
    assert freq[2] == 0.0 and freq[3] == 0.0 and abs(freq[0] - 0.625) < 0.015


def test_a_suppressed_first_token_is_never_drawn():
    # min_new_tokens sets EOS (here id 0) to -inf before the sampler runs; u = 0 must not pick it
    logits = torch.tensor([[-math.inf, 0.0, 0.0]])
    assert draw(InverseCdfSampler(), logits)[0] == 0.0


def test_temperature_zero_is_greedy():
    assert sampling_kwargs(0.0) == {"do_sample": False}
    kw = sampling_kwargs(0.7, top_k=5)
    assert kw["do_sample"] is False and isinstance(kw["logits_processor"][0], InverseCdfSampler)


def test_n_samples_repeat_each_prompt_adjacently():
    enc = type("Enc", (), {"input_ids": torch.tensor([[1, 2], [3, 4]]), "attention_mask": torch.ones(2, 2)})
    kw = sampling_kwargs(1.0, n=3, enc=enc)
    assert kw["input_ids"][:, 0].tolist() == [1, 1, 1, 3, 3, 3]
    assert kw["attention_mask"].shape == (6, 2)
