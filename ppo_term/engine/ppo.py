"""PPO math as pure tensor functions, readable top to bottom.

Shapes: `[B, T]` for per-token tensors over the response (B samples, T response positions),
`mask` is 1.0 on real response tokens (up to and including EOS) and 0.0 on padding.
Names follow the papers: logprobs, ref_logprobs, values, rewards, advantages, returns.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def masked_mean(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean of x over the positions where mask is 1."""
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp(min=1.0)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1.0)


def masked_var(x: Tensor, mask: Tensor, unbiased: bool = True) -> Tensor:
    """Variance of x over the positions where mask is 1 (Bessel-corrected by default)."""
    mean = masked_mean(x, mask)
    n = mask.sum()
    var = masked_mean((x - mean) ** 2, mask)
    if unbiased and n > 1:
        var = var * n / (n - 1)
    return var


def masked_whiten(x: Tensor, mask: Tensor, shift_mean: bool = True, eps: float = 1e-8) -> Tensor:
    """(x - mean) / std over the masked positions; padding stays 0."""
    mean, var = masked_mean(x, mask), masked_var(x, mask)
    whitened = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        whitened = whitened + mean
    return whitened * mask


# positions per chunk of the vocabulary-wide fp32 work: 64 x 49152 x 4 bytes = 12.6 MB at a time
CHUNK = 64


def logprobs_from_logits(logits: Tensor, tokens: Tensor, temperature: float = 1.0) -> Tensor:
    """log pi(token | prefix) for each position: [B, T, V], [B, T] -> [B, T], from logits / temperature.

    Computed in fp32 a chunk of positions at a time, the softmax recomputed in backward: no
    vocabulary-wide fp32 tensor lives beside the logits (4 x 48 positions of a 49152-token
    vocabulary: 38 MB each, three of them in a plain log-softmax's forward and backward).
    """
    return _TokenLogprobs.apply(logits, tokens, temperature)


class _TokenLogprobs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits: Tensor, tokens: Tensor, temperature: float) -> Tensor:
        x, tok = logits.reshape(-1, logits.shape[-1]), tokens.reshape(-1, 1)
        # log-partition of each position's logits / temperature
        lse = torch.cat([torch.logsumexp(c.float() / temperature, dim=-1) for c in x.split(CHUNK)])
        logprobs = x.gather(1, tok).squeeze(1).float() / temperature - lse
        ctx.save_for_backward(logits, tokens, lse)
        ctx.temperature = temperature
        return logprobs.view(tokens.shape)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:
        logits, tokens, lse = ctx.saved_tensors
        x, tok = logits.reshape(-1, logits.shape[-1]), tokens.reshape(-1, 1)
        g = grad.reshape(-1, 1).float() / ctx.temperature
        dx = torch.empty_like(x)
        for rows in torch.arange(len(x), device=x.device).split(CHUNK):
            probs = (x[rows].float() / ctx.temperature - lse[rows, None]).exp_()  # softmax
            # d logprob / d logit_k = (1[k = token] - p_k) / temperature
            dx[rows] = probs.mul_(-g[rows]).scatter_add_(1, tok[rows], g[rows]).to(x.dtype)
        return dx.view_as(logits), None, None


def entropy_from_logits(logits: Tensor, temperature: float = 1.0) -> Tensor:
    """Entropy of the next-token distribution at each position: [B, T, V] -> [B, T].

    Without grad (entropy only watched), fp32 a chunk of positions at a time."""
    if torch.is_grad_enabled() and logits.requires_grad:
        return entropy_from_logprobs(torch.log_softmax(logits.float() / temperature, dim=-1))
    x = logits.reshape(-1, logits.shape[-1])
    out = [entropy_from_logprobs(torch.log_softmax(c.float() / temperature, dim=-1)) for c in x.split(CHUNK)]
    return torch.cat(out).view(logits.shape[:-1])


def entropy_from_logprobs(logp: Tensor) -> Tensor:
    """The same from log-probabilities over the vocabulary."""
    return -(logp.exp() * logp).sum(-1)


def kl_per_token(logprobs: Tensor, ref_logprobs: Tensor, estimator: str = "k1") -> Tensor:
    """Per-token KL(policy || reference) estimated from the sampled tokens (Schulman's k1 / k3)."""
    log_ratio = logprobs - ref_logprobs
    if estimator == "k1":
        # unbiased, can be negative per token
        return log_ratio
    if estimator == "k3":
        # unbiased and always >= 0: (r - 1) - log r with r = pi_ref / pi
        return torch.expm1(-log_ratio) + log_ratio
    raise ValueError(f"unknown KL estimator {estimator!r} (expected 'k1' or 'k3')")


def leave_one_out(scores: Tensor, groups: list[list[int]]) -> Tensor:
    """Each score minus the mean of the other candidates for the same prompt (RLOO's baseline)."""
    out = scores.clone()
    for g in groups:
        if len(g) > 1:
            idx = torch.tensor(g)
            s = scores[idx]
            # baseline_i = (sum_j s_j - s_i) / (n - 1)
            out[idx] = s - (s.sum() - s) / (len(g) - 1)
    return out


def token_rewards(scores: Tensor, kl: Tensor, kl_coef: float | Tensor, mask: Tensor) -> Tensor:
    """reward_t = -kl_coef * KL_t, plus the sequence's score at its last real token.

    `kl_coef` is one number, or one per sample ([B, 1]).
    """
    rewards = -kl_coef * kl * mask
    last = (mask.sum(-1).long() - 1).clamp(min=0)
    rewards[torch.arange(len(scores)), last] += scores.to(rewards.dtype)
    return rewards


def gae(rewards: Tensor, values: Tensor, mask: Tensor, gamma: float, lam: float) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation (Schulman et al., 2016); returns (advantages, returns)."""
    rewards, values = rewards * mask, values * mask
    T = rewards.shape[-1]
    advantages = torch.zeros_like(rewards)
    lastgaelam = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(T)):
        # value of the next state; 0 after the last token
        nextvalues = values[:, t + 1] if t < T - 1 else torch.zeros_like(lastgaelam)
        # TD error
        delta = rewards[:, t] + gamma * nextvalues - values[:, t]
        # discounted sum of TD errors
        lastgaelam = delta + gamma * lam * lastgaelam
        advantages[:, t] = lastgaelam
    returns = advantages + values
    return advantages * mask, returns * mask


def policy_loss(
    logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, mask: Tensor, cliprange: float,
    dual_clip: float | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Clipped surrogate objective, optionally dual-clipped; returns (loss, clipfrac, approx_kl,
    dual_clipfrac)."""
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    # unclipped and clipped surrogate, as losses (negated objectives)
    pg_losses = -advantages * ratio
    pg_losses_clipped = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    # pessimistic bound: the larger loss
    losses = torch.maximum(pg_losses, pg_losses_clipped)
    dual_clipped = torch.zeros_like(losses, dtype=torch.bool)
    if dual_clip is not None:
        # dual clip (Ye et al., 2020): where A < 0 the loss is at most -dual_clip * A, so a token whose
        # ratio ran away during this update (unbounded above for A < 0) cannot swamp the minibatch
        dual_clipped = (advantages < 0) & (pg_losses > -advantages * dual_clip)
        losses = torch.where(dual_clipped, -advantages * dual_clip, losses)
    loss = masked_mean(losses, mask)
    # how often clipping was active, and how far the policy moved this update
    clipfrac = masked_mean((pg_losses_clipped > pg_losses).float(), mask)
    approx_kl = 0.5 * masked_mean(log_ratio**2, mask)
    dual_clipfrac = masked_mean(dual_clipped.float(), mask)
    return loss, clipfrac.detach(), approx_kl.detach(), dual_clipfrac.detach()


def value_loss(
    values: Tensor, old_values: Tensor, returns: Tensor, mask: Tensor, cliprange_value: float
) -> tuple[Tensor, Tensor]:
    """Clipped value loss; returns (loss, vf_clipfrac)."""
    # the new value may move at most cliprange_value from the rollout's value
    values_clipped = old_values + torch.clamp(values - old_values, -cliprange_value, cliprange_value)
    vf_losses = (values - returns) ** 2
    vf_losses_clipped = (values_clipped - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(vf_losses, vf_losses_clipped), mask)
    vf_clipfrac = masked_mean((vf_losses_clipped > vf_losses).float(), mask)
    return loss, vf_clipfrac.detach()


def response_mask(response_ids: Tensor, eos_token_ids: list[int]) -> tuple[Tensor, Tensor]:
    """1.0 up to and including the first EOS; also whether each response emitted an EOS."""
    is_eos = torch.zeros_like(response_ids, dtype=torch.bool)
    for eos in eos_token_ids:
        is_eos |= response_ids == eos
    finished = is_eos.any(-1)
    # position of the first EOS, or T when there is none
    T = response_ids.shape[-1]
    first = torch.where(finished, is_eos.float().argmax(-1), torch.full_like(finished, T, dtype=torch.long))
    positions = torch.arange(T, device=response_ids.device).unsqueeze(0)
    return (positions <= first.unsqueeze(-1)).float(), finished


def lr_at(step: int, total_steps: int, lr: float, schedule: str = "constant", end: float = 0.1,
          decay_from: float = 0.0) -> float:
    """Learning rate of PPO step `step` (1-based): lr at the first step, lr * end at the last; with
    `decay_from` (a fraction of the run), lr until then and the decay over the rest."""
    if schedule == "constant" or total_steps <= 1:
        return lr
    start = decay_from * (total_steps - 1)  # steps (0-based) held at lr before the decay begins
    progress = min(max(step - 1 - start, 0) / max(total_steps - 1 - start, 1e-9), 1.0)  # 0 -> 1 over the decay
    if schedule == "linear":
        return lr * (1.0 - (1.0 - end) * progress)
    # cosine: half a period from lr down to lr * end
    return lr * (end + (1.0 - end) * 0.5 * (1.0 + math.cos(math.pi * progress)))
