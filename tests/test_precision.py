"""The compute dtype: chosen by hardware and measurement, and a bf16 run still learns."""

import pytest
import torch

from ppo_term.engine import precision
from ppo_term.recipe import RecipeError, load_recipe
from tests.test_engine import YesReward, make_trainer, prob_of

CPU = torch.device("cpu")


def test_recipe_choice_wins():
    assert precision.choose("fp32", CPU).dtype == torch.float32
    assert precision.choose("bf16", CPU).dtype == torch.bfloat16


def test_auto_on_an_avx2_cpu_is_fp32_without_measuring(monkeypatch):
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    monkeypatch.setattr(precision, "cpu_bf16_speedup", lambda: pytest.fail("should not measure"))
    chosen = precision.choose("auto", CPU)
    assert chosen.dtype == torch.float32 and "AVX2" in chosen.reason


@pytest.mark.parametrize("flags", [{"avx512f", "avx512_bf16"}, {"amx_bf16", "avx512f"}])
def test_auto_on_a_cpu_with_bf16_dot_products_is_bf16_without_measuring(monkeypatch, flags):
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    monkeypatch.setattr(precision, "cpu_flags", lambda: flags)
    monkeypatch.setattr(precision, "cpu_bf16_speedup", lambda: pytest.fail("should not measure"))
    chosen = precision.choose("auto", CPU)
    assert chosen.dtype == torch.bfloat16 and "bf16" in chosen.reason


@pytest.mark.parametrize("flags", [{"avx512f"}, None])  # AVX-512 without BF16, or no /proc/cpuinfo
@pytest.mark.parametrize("speedup, expected", [(2.1, torch.bfloat16), (1.1, torch.float32)])
def test_auto_on_an_avx512_cpu_follows_the_measurement(monkeypatch, speedup, expected, flags):
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    monkeypatch.setattr(precision, "cpu_flags", lambda: flags)
    monkeypatch.setattr(precision, "cpu_bf16_speedup", lambda: speedup)
    chosen = precision.choose("auto", CPU)
    assert chosen.dtype == expected and f"{speedup:.1f}x" in chosen.reason


def test_the_measurement_returns_a_ratio():
    assert 0 < precision.cpu_bf16_speedup() < 1000


def test_a_wrong_precision_names_the_field(write_recipe):
    with pytest.raises(RecipeError, match="precision"):
        load_recipe(write_recipe(), ["precision=fp16"])


def test_bf16_lora_keeps_the_base_in_bf16_and_the_adapter_in_fp32_and_learns(write_recipe):
    rewards = '[[rewards]]\nname = "yes-fraction"\n'
    recipe = load_recipe(write_recipe(rewards=rewards, steps=12), [
        "precision=bf16", "ppo.lr=0.01", "generation.n=4", "ppo.batch_prompts=3", "ppo.minibatch=6",
        "ppo.epochs=2", "generation.max_new_tokens=4", "kl.coef=0.01",
    ])
    metrics = []
    trainer = make_trainer(recipe, YesReward, listeners=[lambda e: e.kind == "metrics" and metrics.append(e.data)])
    policy = trainer.policy
    linears = [m.weight for n, m in policy.lm.named_modules()
               if isinstance(m, torch.nn.Linear) and "lora_" not in n and "value" not in n]
    assert linears and all(w.dtype == torch.bfloat16 and not w.requires_grad for w in linears)
    # embeddings and norms stay fp32: the residual stream between layers is fp32
    assert policy.lm.get_input_embeddings().weight.dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in policy.trainable_parameters())
    before = prob_of(trainer, "yes")
    trainer.run()
    after = prob_of(trainer, "yes")
    assert after > 3 * before, (before, after)
    assert all(m["kl"] == m["kl"] for m in metrics)  # no NaN


def test_bf16_old_logprobs_match_the_update_pass(write_recipe):
    # with a step too small to move the policy, the ratio measures only numerical mismatch
    recipe = load_recipe(write_recipe(steps=1), ["precision=bf16", "ppo.lr=1e-12", "generation.n=4",
                                                 "ppo.batch_prompts=3", "ppo.minibatch=4", "ppo.epochs=2"])
    metrics = []
    make_trainer(recipe, listeners=[lambda e: e.kind == "metrics" and metrics.append(e.data)]).run()
    assert metrics[0]["approx_kl"] < 1e-3
    assert metrics[0]["clipfrac"] == 0.0


def test_bf16_full_fine_tuning_keeps_fp32_master_weights_and_a_bf16_reference(write_recipe):
    recipe = load_recipe(write_recipe(steps=1, rewards='[[rewards]]\nname = "yes-fraction"\n'),
                         ["precision=bf16", "master_weights=fp32", "lora.enabled=false", "ppo.lr=0.01",
                          "generation.n=4"])
    trainer = make_trainer(recipe, YesReward)
    assert all(p.dtype == torch.float32 for p in trainer.policy.trainable_parameters())
    ref_linears = [m.weight for m in trainer.policy.ref_model.modules() if isinstance(m, torch.nn.Linear)]
    assert ref_linears and all(w.dtype == torch.bfloat16 for w in ref_linears)
    before = {n: p.detach().clone() for n, p in trainer.policy.model.named_parameters()}
    trainer.run()
    changed = [n for n, p in trainer.policy.model.named_parameters() if not torch.equal(p, before[n])]
    assert changed


def test_generation_reads_merged_weights_equal_to_the_adapter_and_leaves_the_base_alone(write_recipe):
    trainer = make_trainer(load_recipe(write_recipe(steps=1), ["precision=fp32"]))  # exact sums
    policy = trainer.policy
    torch.manual_seed(1)
    for name, p in policy.model.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, 0.05)  # a trained-looking adapter (B starts at zero)
    ids = torch.tensor([[3, 4, 5, 6, 7, 8]], device=trainer.device)
    base = {n: p.detach().clone() for n, p in policy.lm.named_parameters() if "lora" not in n}
    with torch.no_grad():
        adapter = policy.model(input_ids=ids).logits
        with policy.decode_weights(rows=1):
            merged = policy.model(input_ids=ids).logits
            # one fp32 sequence decodes merged, unpacked (packing would not pay back)
            assert not any("forward" in vars(m) for m in policy.model.modules() if isinstance(m, torch.nn.Linear))
        after = policy.model(input_ids=ids).logits
        with policy.reference() as ref:
            reference = ref(input_ids=ids).logits
    assert torch.allclose(merged, adapter, atol=1e-4)
    assert torch.equal(after, adapter)  # the adapter layers are back on
    assert not torch.allclose(reference, adapter, atol=1e-3)
    assert all(torch.equal(p, base[n]) for n, p in policy.lm.named_parameters() if "lora" not in n)


@pytest.mark.parametrize("lora", [True, False])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_packed_decode_weights_match_autocast_and_are_removed_after(write_recipe, lora, precision):
    from ppo_term.engine.decode import can_pack

    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    if not can_pack(CPU, dtype):
        pytest.skip(f"this CPU has no oneDNN {precision} matmul")
    # oneDNN's packing is the CPU's: on a GPU machine too, this test runs on the CPU
    recipe = load_recipe(write_recipe(steps=1), [f"precision={precision}", f"lora.enabled={str(lora).lower()}",
                                                 "device=cpu"])
    policy = make_trainer(recipe).policy
    torch.manual_seed(1)
    for name, p in policy.model.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, 0.05)
    ids = torch.tensor([[3, 4, 5, 6, 7, 8], [9, 10, 11, 12, 13, 14]])
    linears = [m for m in policy.model.modules() if isinstance(m, torch.nn.Linear)]
    with torch.no_grad(), policy.autocast():
        expected = policy.model(input_ids=ids).logits.float()
        with policy.decode_weights(rows=2):
            patched = [m for m in linears if "forward" in vars(m)]
            packed = policy.model(input_ids=ids).logits.float()
        again = policy.model(input_ids=ids).logits.float()
    assert patched  # the packed matmuls really ran
    assert not any("forward" in vars(m) for m in linears)  # and are gone
    assert torch.equal(again, expected)
    # the same products, summed in another order: rounding apart (bf16's, or fp32's)
    assert packed.dtype == torch.float32 and expected.dtype == torch.float32
    tolerance = 0.05 if precision == "bf16" else 1e-4
    assert (packed - expected).abs().max() < tolerance * expected.abs().max()
    assert packed.argmax(-1).eq(expected.argmax(-1)).float().mean() > (0.9 if precision == "bf16" else 0.99)
