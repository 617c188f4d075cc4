"""Full fine-tuning with bf16 weights: AdamW with stochastic rounding, and the engine running it."""

import pytest
import torch
from safetensors.torch import load_file

from ppo_term.engine import optim, precision
from ppo_term.engine.optim import AdamWBF16, adamw_update
from ppo_term.recipe import RecipeError, load_recipe
from ppo_term.runs import RunDir
from tests.test_engine import YesReward, make_trainer, prob_of


def test_fp32_weights_get_torchs_adamw():
    torch.manual_seed(0)
    a = torch.nn.Parameter(torch.randn(40, 30))
    b = torch.nn.Parameter(a.detach().clone())
    ours = AdamWBF16([a], lr=1e-2, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1, compile=False)
    theirs = torch.optim.AdamW([b], lr=1e-2, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)
    for _ in range(5):
        g = torch.randn(40, 30)
        a.grad, b.grad = g.clone(), g.clone()
        ours.step()
        theirs.step()
    torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    assert int(ours.state[a]["step"]) == 5


def test_stochastic_rounding_by_hand():
    # 1 + 2^-10 lies 1/8 of the way from bf16's 1.0 to its next value 1 + 2^-7: rounded up 1/8 of the time
    x = torch.full((1 << 16,), 1.0 + 2**-10)
    noise = optim._mix32(torch.arange(len(x), dtype=torch.int32) + 17) & 0xFFFF
    rounded = optim._round_stochastic(x, noise).float()
    assert set(rounded.unique().tolist()) == {1.0, 1.0 + 2**-7}
    assert (rounded > 1).float().mean().item() == pytest.approx(1 / 8, abs=0.005)
    assert rounded.double().mean().item() == pytest.approx(1.0 + 2**-10, abs=2e-5)
    # negative values round away from zero just as often; exact bf16 values are left alone
    assert (optim._round_stochastic(-x, noise).float() < -1).float().mean().item() == pytest.approx(1 / 8, abs=0.005)
    exact = torch.tensor([0.5, -3.0, 1.0 + 2**-7])
    assert torch.equal(optim._round_stochastic(exact, noise[:3]).float(), exact)


def test_small_updates_survive_in_bf16_only_with_stochastic_rounding():
    """At lr 1e-5 each step moves a weight ~1/20 of a bf16 step: rounding to nearest loses it all."""
    torch.manual_seed(0)
    start = (torch.randn(100_000) * 0.05).bfloat16()
    direction = torch.randn(100_000).sign()
    fp32 = torch.nn.Parameter(start.float())
    sr = torch.nn.Parameter(start.clone())
    nearest = torch.nn.Parameter(start.clone())
    opts = [torch.optim.AdamW([fp32], lr=1e-5, weight_decay=0), AdamWBF16([sr], lr=1e-5, seed=3, compile=False),
            torch.optim.AdamW([nearest], lr=1e-5, weight_decay=0)]  # torch's own: bf16 moments, nearest
    for _ in range(60):
        g = direction + 0.5 * torch.randn(100_000)
        fp32.grad, sr.grad, nearest.grad = g, g.bfloat16(), g.bfloat16()
        for opt in opts:
            opt.step()
    # how far each moved against the gradient's sign, on average
    moved = {name: ((p.detach().float() - start.float()) * -direction).mean().item()
             for name, p in [("fp32", fp32), ("sr", sr), ("nearest", nearest)]}
    # 60 steps of lr * m / sqrt(v) ~ lr / sqrt(1 + 0.5^2) against the gradient
    assert moved["fp32"] == pytest.approx(60e-5 / 1.25**0.5, rel=0.05)
    assert moved["sr"] == pytest.approx(moved["fp32"], rel=0.05)
    assert moved["nearest"] < 0.2 * moved["fp32"]
    assert (sr.detach().float() - fp32.detach()).abs().mean() < 5e-4  # about one bf16 step off, no drift


def test_the_compiled_update_gives_the_eager_bits():
    compiled = optim.compiled_update()
    if compiled is None:
        pytest.skip("torch.compile cannot build here")
    gen = torch.Generator().manual_seed(0)
    p, g, m = (torch.randn(3001, generator=gen).bfloat16() for _ in range(3))
    v = torch.rand(3001, generator=gen).bfloat16()
    args = (optim._noise_key(0, 5, 3), torch.tensor(1e-4), torch.tensor(0.27), torch.tensor(0.05), 0.9, 0.999, 1e-8, 0.01)
    eager = [t.clone() for t in (p, g, m, v)]
    adamw_update(eager[0], eager[1], eager[2], eager[3], *args)
    compiled(p, g, m, v, *args)
    assert all(torch.equal(a, b) for a, b in zip(eager, (p, g, m, v)))
    assert not torch.equal(eager[0], g)  # it did step


def test_the_noise_changes_with_weight_and_step():
    keys = {int(optim._noise_key(seed, index, step)) for seed in (0, 1) for index in range(20) for step in range(1, 20)}
    assert len(keys) == 2 * 20 * 19


def test_master_weights_choice(monkeypatch):
    bf16 = precision.Precision(torch.bfloat16, "test")
    fp32 = precision.Precision(torch.float32, "test")
    assert precision.choose_master("auto", True, bf16).dtype == torch.float32  # LoRA
    assert precision.choose_master("fp32", False, bf16).dtype == torch.float32
    assert precision.choose_master("auto", False, fp32).dtype == torch.float32
    monkeypatch.setattr(optim, "_compiled", {"fn": None})  # as where no compiler is found
    chosen = precision.choose_master("auto", False, bf16)
    assert chosen.dtype == torch.float32 and "compile" in chosen.reason
    assert precision.choose_master("bf16", False, fp32).dtype == torch.bfloat16  # asked for: slow, but so


def test_a_wrong_master_weights_names_the_field(write_recipe):
    with pytest.raises(RecipeError, match="master_weights"):
        load_recipe(write_recipe(), ["master_weights=fp16"])


@pytest.mark.parametrize("in_backward", [True, False])
def test_full_finetuning_in_bf16_learns_and_checkpoints(write_recipe, tmp_path, in_backward):
    rewards = '[[rewards]]\nname = "yes-fraction"\n'
    recipe = load_recipe(write_recipe(rewards=rewards, steps=12), [
        "lora.enabled=false", "master_weights=bf16", "ppo.lr=0.003", "generation.n=4", "ppo.batch_prompts=3",
        "ppo.minibatch=6", "ppo.epochs=2", "generation.max_new_tokens=4", "kl.coef=0.01",
        f"ppo.max_grad_norm={'inf' if in_backward else 1.0}",
    ])
    run = RunDir(tmp_path / "run")
    run.create("", [], 12, "tiny")
    norms = []
    trainer = make_trainer(recipe, YesReward, run_dir=run,
                           listeners=[lambda e: e.kind == "metrics" and norms.append(e.data["grad_norm"])])
    policy = trainer.policy
    assert isinstance(trainer.optimizer, AdamWBF16) and (trainer.step_in_backward is not None) == in_backward
    assert all(p.dtype == torch.bfloat16 for p in policy.lm.parameters())
    assert all(p.dtype == torch.float32 for p in policy.value_head.parameters())
    ref_before = {n: p.clone() for n, p in policy.ref_model.named_parameters()}
    before = prob_of(trainer, "yes")
    trainer.run()
    assert prob_of(trainer, "yes") > 3 * before
    assert len(norms) == 12 and all(0 < n < float("inf") for n in norms)  # summed inside the update
    assert all(torch.equal(p, ref_before[n]) for n, p in policy.ref_model.named_parameters())
    assert all(p.grad is None for p in policy.trainable_parameters()) or not in_backward
    # the checkpoint: bf16 weights as transformers saves them, the bf16 moments beside them
    ckpt = trainer.last_checkpoint
    weights = load_file(ckpt / "model.safetensors")
    name, tensor = next(iter(weights.items()))
    assert tensor.dtype == torch.bfloat16
    moments = load_file(ckpt / "optimizer.safetensors")
    assert any(k.endswith("exp_avg_sq") and v.dtype == torch.bfloat16 for k, v in moments.items())
    assert any(k.endswith("exp_avg") and v.dtype == torch.float32 for k, v in moments.items())  # value head
