"""bf16 weights multiplied in fp32 (`ppo_term.engine.storage`): the numbers of an fp32 model whose
weights are the bf16 values, at half the weight memory."""

import copy

import pytest
import torch
from torch import nn

from ppo_term.engine import storage
from ppo_term.recipe import RecipeError, load_recipe
from tests.test_engine import YesReward, make_trainer


def _pair(tiny_model):
    """(an fp32 model holding bf16-representable weights, the same model stored in bf16)."""
    from transformers import AutoModelForCausalLM

    fp32 = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    for p in fp32.parameters():
        p.data = p.data.bfloat16().float()
    stored = copy.deepcopy(fp32)
    storage.store_bf16(stored)
    return fp32, stored


def test_parameters_go_to_bf16_and_buffers_stay_fp32(tiny_model):
    fp32, stored = _pair(tiny_model)
    assert all(p.dtype == torch.bfloat16 for p in stored.parameters())
    floating = [b for b in stored.buffers() if b.is_floating_point()]
    assert floating and all(b.dtype == torch.float32 for b in floating)  # the rotary frequencies
    assert stored.get_output_embeddings().weight is stored.get_input_embeddings().weight  # still tied
    assert isinstance(stored.get_output_embeddings(), storage.Fp32Linear)


def test_logits_and_gradients_are_the_fp32_models(tiny_model):
    fp32, stored = _pair(tiny_model)
    ids = torch.tensor([[1, 5, 9, 12, 7, 3], [1, 8, 8, 20, 4, 2]])
    target = torch.randn(2, 6, fp32.config.vocab_size, generator=torch.Generator().manual_seed(0))
    outs = []
    for model in (fp32, stored):
        logits = model(input_ids=ids).logits
        (logits * target).sum().backward()
        outs.append(logits)
    assert outs[1].dtype == torch.float32
    # the same fp32 arithmetic on the same weight values
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-5, atol=1e-5)
    for (name, a), (_, b) in zip(fp32.named_parameters(), stored.named_parameters()):
        assert b.grad is not None and b.grad.dtype == torch.bfloat16, name
        # the fp32 gradient, rounded to bf16 (the tied embedding sums two rounded parts)
        torch.testing.assert_close(b.grad.float(), a.grad, rtol=2e-2, atol=2e-2 * a.grad.abs().max().item(),
                                   msg=lambda m, name=name: f"{name}: {m}")


def test_the_backward_pass_saves_the_bf16_weight_not_an_fp32_copy():
    layer = nn.Linear(64, 48)
    storage.store_bf16(layer)
    x = torch.randn(5, 64, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        y = layer(x)
    assert y.dtype == torch.float32
    assert {t.dtype for t in saved} == {torch.float32, torch.bfloat16}
    assert not any(t.dtype == torch.float32 and t.shape == layer.weight.shape for t in saved)
    y.square().sum().backward()
    expected = (2 * y.detach()).t() @ x.detach()  # dL/dW by hand for L = sum(y^2)
    torch.testing.assert_close(layer.weight.grad.float(), expected, rtol=1e-2, atol=1e-2)
    torch.testing.assert_close(x.grad, 2 * y.detach() @ layer.weight.float(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("bias", [False, True])
def test_a_large_weight_goes_a_block_of_rows_at_a_time_with_the_same_numbers(monkeypatch, bias):
    layer = nn.Linear(16, 70, bias=bias)  # 1120 values: blocks of 256 // 16 = 16 rows, the last 6
    storage.store_bf16(layer)
    x = torch.randn(3, 4, 16, generator=torch.Generator().manual_seed(1))
    grads = torch.randn(3, 4, 70, generator=torch.Generator().manual_seed(2))

    def run():
        layer.zero_grad(set_to_none=True)
        xi = x.clone().requires_grad_(True)
        y = layer(xi)
        (y * grads).sum().backward()
        return y, xi.grad, layer.weight.grad, None if layer.bias is None else layer.bias.grad

    whole = run()
    cast_shapes = []
    real_float = torch.Tensor.float

    def spy(t):
        if t.dtype == torch.bfloat16 and t.dim() == 2:
            cast_shapes.append(tuple(t.shape))
        return real_float(t)

    monkeypatch.setattr(storage, "CHUNK_VALUES", 256)
    monkeypatch.setattr(torch.Tensor, "float", spy)
    blocked = run()
    monkeypatch.undo()
    # forward and backward each cast 16-row blocks (and the 6 left), never the 70 x 16 weight
    assert cast_shapes == [(16, 16)] * 4 + [(6, 16)] + [(16, 16)] * 4 + [(6, 16)]
    for a, b in zip(whole, blocked):
        if a is not None:
            assert b.dtype == a.dtype
            torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-6)
    # and they are the fp32 products of the bf16 weight, worked out directly
    w = layer.weight.float()
    torch.testing.assert_close(blocked[0], x @ w.t() + (0 if layer.bias is None else layer.bias.float()))
    torch.testing.assert_close(blocked[1], grads @ w)
    torch.testing.assert_close(blocked[2].float(), (grads.reshape(-1, 70).t() @ x.reshape(-1, 16)).bfloat16().float())


def test_a_module_it_does_not_know_is_refused_by_name():
    model = nn.Sequential(nn.Linear(4, 4), nn.Conv1d(4, 4, 1))
    with pytest.raises(ValueError, match=r"'1'.*Conv1d.*master_weights"):
        storage.store_bf16(model)
    assert model[0].weight.dtype == torch.float32  # refused before anything changed


def test_full_finetuning_with_fp32_compute_stores_bf16_and_computes_fp32(write_recipe):
    recipe = load_recipe(write_recipe(), ["precision=fp32", "lora.enabled=false", "master_weights=bf16"])
    trainer = make_trainer(recipe, YesReward)
    policy = trainer.policy
    assert "fp32 arithmetic" in trainer.master.reason
    for model in (policy.lm, policy.ref_model):
        assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    ids = torch.tensor([[1, 5, 9, 12, 7, 3]])
    logits, values = policy.forward(policy.lm, ids, torch.ones_like(ids), prompt_len=3)
    assert logits.dtype == torch.float32 and logits.shape[1] == 3
    before = {n: p.clone() for n, p in policy.lm.named_parameters()}
    trainer.run()
    assert any(not torch.equal(p, before[n]) for n, p in policy.lm.named_parameters())
    assert all(p.dtype == torch.bfloat16 for p in policy.lm.parameters())


def test_saved_activations_are_rounded_to_bf16_only_large_fp32_ones():
    n = storage.SAVED_MIN_VALUES
    x = torch.randn(n, generator=torch.Generator().manual_seed(3), dtype=torch.float32)
    small = x[:100].clone()
    w = torch.randn(n, dtype=torch.float32, requires_grad=True)
    v = torch.randn(100, dtype=torch.float32, requires_grad=True)
    p = nn.Parameter(torch.randn(n, dtype=torch.float32))
    xp = x.clone().requires_grad_(True)
    with storage.saved_in_bf16():
        y = (x * w).sum() + (small * v).sum() + (p * xp).sum()
    assert y.item() == pytest.approx(float((x * w).sum() + (small * v).sum() + (p * xp).sum()))  # forward exact
    y.backward()
    assert not torch.equal(x.bfloat16().float(), x)  # so the next line can tell the two apart
    assert torch.equal(w.grad, x.bfloat16().float())  # dy/dw = x, as saved: rounded
    assert torch.equal(v.grad, small)  # under SAVED_MIN_VALUES: as it was
    assert torch.equal(xp.grad, p.detach())  # a parameter is never copied
    assert torch.equal(p.grad, x.bfloat16().float())  # the activation xp, saved for p's gradient: rounded


def test_storage_mode_keeps_training_activations_in_bf16_and_trims_the_heap(write_recipe, monkeypatch):
    from ppo_term.engine import memory

    recipe = load_recipe(write_recipe(), ["precision=fp32", "lora.enabled=false", "master_weights=bf16", "steps=1"])
    trainer = make_trainer(recipe, YesReward)
    assert trainer.policy.bf16_activations
    entered = []
    real = storage.saved_in_bf16
    monkeypatch.setattr(storage, "saved_in_bf16", lambda: entered.append(torch.is_grad_enabled()) or real())
    trims = []
    monkeypatch.setattr(memory, "trim", lambda: trims.append(trainer.phase) or True)
    trainer.trim_heap = True  # whatever this machine's C library
    trainer.run()
    assert entered and all(entered)  # the training passes, never the no-grad ones
    assert len(trims) == 2  # after generating, after the update
    for extra in (["master_weights=fp32"], ["lora.enabled=true"]):
        other = make_trainer(load_recipe(write_recipe(), ["precision=fp32", "lora.enabled=false", *extra]), YesReward)
        assert not other.policy.bf16_activations


def test_an_unknown_module_names_the_recipe_field(write_recipe, monkeypatch):
    def refuse(lm):
        raise ValueError("bf16 weights with fp32 arithmetic do not know the module 'x' (Conv1D)")

    monkeypatch.setattr(storage, "store_bf16", refuse)
    recipe = load_recipe(write_recipe(), ["precision=fp32", "lora.enabled=false", "master_weights=bf16"])
    with pytest.raises(RecipeError, match=r"master_weights.*Conv1D"):
        make_trainer(recipe, YesReward)
