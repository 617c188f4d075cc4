"""`ppo-term soup`: checkpoints averaged into one, checked against weights averaged by hand."""

import json

import pytest
import torch
from typer.testing import CliRunner

from ppo_term.cli import app
from ppo_term.evaluate import resolve_target

runner = CliRunner()
IDS = torch.tensor([[1, 5, 6, 7, 3, 4, 9]])


def load(path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path).eval()


def make_adapter(tiny_model, out, seed, r, alpha, modules=("q_proj", "v_proj"), rslora=False):
    """A LoRA adapter on the tiny model with random, non-zero A and B (as if trained)."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    model = get_peft_model(load(tiny_model), LoraConfig(r=r, lora_alpha=alpha, target_modules=list(modules),
                                                        use_rslora=rslora))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.normal_(0, 0.3)
    model.save_pretrained(out)
    return out


def merged_state(tiny_model, adapter):
    from peft import PeftModel

    return PeftModel.from_pretrained(load(tiny_model), str(adapter)).merge_and_unload().state_dict()


def logits_of(state, tiny_model):
    model = load(tiny_model)
    model.load_state_dict(state)
    with torch.no_grad():
        return model(IDS).logits


@pytest.mark.parametrize("weights", [[0.5, 0.5], [0.7, 0.1]])
def test_adapter_soup_equals_the_weighted_sum_of_the_deltas(tiny_model, tmp_path, weights):
    from peft import PeftModel

    # different ranks and scales (alpha / r = 2 and 0.5; rsLoRA alpha / sqrt(r) = 2)
    a = make_adapter(tiny_model, tmp_path / "a", 1, r=2, alpha=4)
    b = make_adapter(tiny_model, tmp_path / "b", 2, r=4, alpha=2)
    c = make_adapter(tiny_model, tmp_path / "c", 3, r=4, alpha=4, rslora=True)
    out = tmp_path / "soup"
    result = runner.invoke(app, ["soup", str(a), str(b), str(c), "--out", str(out),
                                 "--weights", ",".join(map(str, weights + [0.2]))])
    assert result.exit_code == 0, result.output
    # by hand: base + sum_i w_i (merged_i - base), weight by weight
    base = load(tiny_model).state_dict()
    expected = {k: v.clone() for k, v in base.items()}
    for adapter, w in zip([a, b, c], weights + [0.2]):
        for k, v in merged_state(tiny_model, adapter).items():
            expected[k] += w * (v - base[k])
    soup = PeftModel.from_pretrained(load(tiny_model), str(out)).eval()
    with torch.no_grad():
        got = soup(IDS).logits
    assert torch.allclose(got, logits_of(expected, tiny_model), atol=1e-5)
    assert not torch.allclose(got, logits_of(base, tiny_model), atol=1e-3)  # it did move
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["r"] == 2 + 4 + 4 and config["lora_alpha"] == config["r"]
    record = json.loads((out / "soup.json").read_text())
    assert [m["weight"] for m in record["members"]] == weights + [0.2]
    assert record["base_weight"] == pytest.approx(1 - sum(weights) - 0.2)
    target = resolve_target(str(out))
    assert target.adapter == out and target.base == str(tiny_model)


def test_default_weights_average_and_a_run_means_its_latest_checkpoint(tiny_model, tmp_path):
    a = make_adapter(tiny_model, tmp_path / "a", 1, r=2, alpha=4)
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "state.json").write_text("{}")
    make_adapter(tiny_model, run / "checkpoints" / "step-1", 5, r=2, alpha=4)
    latest = make_adapter(tiny_model, run / "checkpoints" / "step-12", 6, r=2, alpha=4)
    for step in ("step-1", "step-12"):
        (run / "checkpoints" / step / "trainer_state.json").write_text(json.dumps({"model_path": str(tiny_model)}))
    result = runner.invoke(app, ["soup", str(a), str(run), "--out", str(tmp_path / "soup")])
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "soup" / "soup.json").read_text())
    assert [m["weight"] for m in record["members"]] == [0.5, 0.5]
    assert record["members"][1]["checkpoint"] == str(latest.resolve())


def test_full_checkpoints_average_weight_by_weight(tiny_model, tmp_path):
    members = []
    for seed in (1, 2):
        model = load(tiny_model)
        torch.manual_seed(seed)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.1)
        path = tmp_path / f"full{seed}"
        model.save_pretrained(path)
        (path / "trainer_state.json").write_text(json.dumps({"model_path": str(tiny_model)}))
        members.append(path)
    out = tmp_path / "soup"
    # weights summing to 0.6: the other 0.4 is the base's
    result = runner.invoke(app, ["soup", *map(str, members), "--out", str(out), "--weights", "0.3,0.3"])
    assert result.exit_code == 0, result.output
    base = load(tiny_model).state_dict()
    states = [load(m).state_dict() for m in members]
    expected = {k: 0.4 * base[k] + 0.3 * states[0][k] + 0.3 * states[1][k] for k in base}
    with torch.no_grad():
        assert torch.allclose(load(out)(IDS).logits, logits_of(expected, tiny_model), atol=1e-5)
    target = resolve_target(str(out))
    assert target.full == out and target.base == str(tiny_model)


def test_soup_errors_name_what_is_wrong(tiny_model, tmp_path):
    a = make_adapter(tiny_model, tmp_path / "a", 1, r=2, alpha=4)
    b = make_adapter(tiny_model, tmp_path / "b", 2, r=2, alpha=4, modules=("q_proj", "k_proj"))
    out = str(tmp_path / "soup")
    wrong_count = runner.invoke(app, ["soup", str(a), str(a), "--out", out, "--weights", "1"])
    assert wrong_count.exit_code == 2 and "--weights has 1 values for 2 checkpoints" in wrong_count.output
    not_numbers = runner.invoke(app, ["soup", str(a), "--out", out, "--weights", "half"])
    assert not_numbers.exit_code == 2 and "expected numbers" in not_numbers.output
    mismatch = runner.invoke(app, ["soup", str(a), str(b), "--out", out])
    assert mismatch.exit_code == 2 and "target_modules" in mismatch.output
    base = runner.invoke(app, ["soup", str(tiny_model), "--out", out])
    assert base.exit_code == 2 and "nothing to average" in base.output
    assert not (tmp_path / "soup").exists()
