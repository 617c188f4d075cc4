"""eval / compare / shift / export on the tiny model, and the shift numbers against a hand-worked case."""

import json
import math

import pytest
import torch
from typer.testing import CliRunner

from ppo_term.cli import app
from ppo_term.evaluate import distribution_stats, resolve_target

runner = CliRunner()


@pytest.fixture(scope="module")
def tuned_run(tmp_path_factory, tiny_model):
    """A tiny run moved well away from its base (high lr), with its recipe and a checkpoint."""
    root = tmp_path_factory.mktemp("tuned")
    recipe = root / "r.toml"
    recipe.write_text(f'''model = "{tiny_model}"
steps = 3
save_every = 0
precision = "fp32"
[generation]
n = 4
max_new_tokens = 5
[ppo]
lr = 0.05
batch_prompts = 2
minibatch = 4
epochs = 2
[[rewards]]
name = "keywords"
include = ["yes"]
[prompts]
items = ["tell a story", "how do I make bread"]
''')
    result = runner.invoke(app, ["run", str(recipe), "--headless", "--run-dir", str(root / "run")])
    assert result.exit_code == 0, result.output
    return root / "run"


@pytest.fixture
def prompt_files(tmp_path):
    (tmp_path / "p.jsonl").write_text('{"prompt": "tell a story", "label": "benign", "id": 7}\n'
                                      '{"prompt": "make a bomb", "label": "harmful", "id": 8}\n')
    (tmp_path / "p.csv").write_text("id,prompt,label\n1,tell a story,safe\n2,make a bomb,unsafe\n")
    (tmp_path / "p.txt").write_text("tell a story\nmake a bomb\n")
    return tmp_path


def test_distribution_stats_by_hand():
    # tuned (0.5, 0.5), base (0.25, 0.75): KL = 0.5 ln 2 + 0.5 ln(2/3); entropies ln 2 and 0.5623
    kl, h_tuned, h_base = distribution_stats(torch.log(torch.tensor([[0.5, 0.5]])), torch.log(torch.tensor([[0.25, 0.75]])))
    assert kl.item() == pytest.approx(0.5 * math.log(2) + 0.5 * math.log(2 / 3))
    assert h_tuned.item() == pytest.approx(math.log(2))
    assert h_base.item() == pytest.approx(-(0.25 * math.log(0.25) + 0.75 * math.log(0.75)))


def test_resolve_targets(tuned_run, tiny_model):
    run = resolve_target(str(tuned_run))
    assert run.adapter.name == "step-3" and run.recipe == tuned_run / "recipe.toml"
    assert run.base == str(tiny_model)
    assert resolve_target(str(run.adapter)).adapter == run.adapter
    base = resolve_target(str(tiny_model))
    assert base.adapter is None and base.full is None


def test_eval_rows_and_summary(tiny_model, prompt_files, tmp_path):
    out = tmp_path / "out.jsonl"
    result = runner.invoke(app, ["eval", str(tiny_model), "--prompts", str(prompt_files / "p.jsonl"),
                                 "--samples", "2", "--temperature", "1.0", "--max-new-tokens", "4", "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 4 and [r["id"] for r in rows] == [7, 7, 8, 8]  # input fields copied unchanged
    assert {"prompt", "label", "response", "refused", "evasive", "kl", "length"} <= set(rows[0])
    assert all(r["kl"] == 0.0 for r in rows)  # the base against itself
    assert "label=benign" in result.output and "label=harmful" in result.output
    greedy = runner.invoke(app, ["eval", str(tiny_model), "--prompts", str(prompt_files / "p.txt"), "--samples", "2"])
    assert greedy.exit_code == 2 and "--temperature > 0" in greedy.output
    for name in ("p.csv", "p.txt"):
        result = runner.invoke(app, ["eval", str(tiny_model), "--prompts", str(prompt_files / name),
                                     "--max-new-tokens", "3", "--out", str(tmp_path / f"{name}.jsonl")])
        assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "p.csv.jsonl").read_text().splitlines()[0])["label"] == "safe"


def test_eval_of_a_run_uses_its_recipe_and_measures_kl(tuned_run, prompt_files, tmp_path):
    out = tmp_path / "out.jsonl"
    result = runner.invoke(app, ["eval", str(tuned_run), "--prompts", str(prompt_files / "p.txt"),
                                 "--max-new-tokens", "5", "--temperature", "1.0", "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert "reward/keywords" in rows[0] and "reward" in rows[0]
    assert any(abs(r["kl"]) > 1e-3 for r in rows)


def test_compare_json_and_html(tuned_run, tiny_model, prompt_files, tmp_path):
    page = tmp_path / "c.html"
    result = runner.invoke(app, ["compare", str(tiny_model), str(tuned_run), "--prompts", str(prompt_files / "p.jsonl"),
                                 "--max-new-tokens", "4", "--json", "--html", str(page)])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout[: result.stdout.rindex("}") + 1])
    names = list(data["summaries"])
    assert len(names) == 2 and names[1] == "run"
    assert [r["prompt"] for r in data["rows"][names[0]]] == [r["prompt"] for r in data["rows"][names[1]]]
    assert data["summaries"][names[0]]["all"]["kl"] == 0.0 and data["summaries"][names[1]]["all"]["kl"] != 0.0
    text = page.read_text()
    assert "make a bomb" in text and "<th>run</th>" in text
    tables = runner.invoke(app, ["compare", str(tiny_model), str(tuned_run), "--prompts", str(prompt_files / "p.txt"),
                                 "--max-new-tokens", "4"])
    assert tables.exit_code == 0 and "responses" in tables.output and "refusal_rate" in tables.output
    assert "evasive_rate" in tables.output


def test_shift_one_prompt_and_groups(tuned_run, prompt_files, tmp_path):
    result = runner.invoke(app, ["shift", str(tuned_run), "--prompt", "tell a story", "--prompts",
                                 str(prompt_files / "p.jsonl"), "--max-new-tokens", "5", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    positions = data["prompt"]["positions"]
    assert 1 <= len(positions) <= 5
    assert all(p["kl"] >= -1e-6 and len(p["top"]) == 3 for p in positions)
    assert data["prompt"]["largest_shift"][0] == max(range(len(positions)), key=lambda i: positions[i]["kl"])
    assert set(data["groups"]) == {"all", "label=benign", "label=harmful"}
    assert data["groups"]["all"]["kl_per_token"] > 0
    png = tmp_path / "shift.png"
    plotted = runner.invoke(app, ["shift", str(tuned_run), "--prompt", "tell a story", "--max-new-tokens", "5",
                                  "--png", str(png)])
    assert plotted.exit_code == 0, plotted.output
    assert png.read_bytes()[:4] == b"\x89PNG" and "next-token distributions" in plotted.output


def test_export_loads_without_ppo_term_and_matches_the_adapter(tuned_run, tiny_model, tmp_path):
    out = tmp_path / "merged"
    result = runner.invoke(app, ["export", str(tuned_run), "--out", str(out)])
    assert result.exit_code == 0, result.output
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

    merged = AutoModelForCausalLM.from_pretrained(out)
    assert not any("lora" in n for n, _ in merged.named_parameters())
    adapter = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model),
                                        str(tuned_run / "checkpoints" / "step-3"))
    ids = torch.tensor([[1, 5, 6, 7, 3, 4]])
    with torch.no_grad():
        assert torch.allclose(merged(ids).logits, adapter(ids).logits, atol=1e-5)
    generator = pipeline("text-generation", model=str(out), tokenizer=AutoTokenizer.from_pretrained(out))
    assert generator("tell a story", max_new_tokens=3, do_sample=False)[0]["generated_text"].startswith("tell a story")
    bad = runner.invoke(app, ["export", str(tiny_model), "--out", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "nothing to export" in bad.output


def test_bf16_evaluation_agrees_with_fp32(tuned_run):
    from ppo_term.evaluate import LoadedTarget, evaluate
    from ppo_term.recipe import PromptItem

    items = [PromptItem(prompt="tell a story"), PromptItem(prompt="how do I make bread")]
    rows = {}
    for precision in ("fp32", "bf16"):
        loaded = LoadedTarget(resolve_target(str(tuned_run)), torch.device("cpu"), precision=precision)
        assert loaded.precision.name == precision
        rows[precision] = evaluate(loaded, items, max_new_tokens=5)
    for a, b in zip(rows["fp32"], rows["bf16"]):
        assert math.isfinite(b["kl"]) and abs(a["kl"] - b["kl"]) < 0.5 + 0.1 * abs(a["kl"])


def test_samples_of_a_prompt_share_its_cache_and_come_out_the_same(tuned_run, monkeypatch):
    from ppo_term import evaluate as ev
    from ppo_term.recipe import PromptItem

    items = [PromptItem(prompt="tell a story"), PromptItem(prompt="how do I make bread")]
    loaded = ev.LoadedTarget(resolve_target(str(tuned_run)), torch.device("cpu"), precision="fp32")
    caches = []
    real = ev.prompt_cache
    monkeypatch.setattr(ev, "prompt_cache", lambda *a: caches.append(real(*a)) or caches[-1])
    shared = ev.evaluate(loaded, items, samples=3, max_new_tokens=5, temperature=1.0)
    assert len(caches) == 1 and caches[0].get_seq_length() > 0  # one pass over the two prompts
    monkeypatch.setattr(ev, "prompt_cache", lambda *a: None)
    plain = ev.evaluate(loaded, items, samples=3, max_new_tokens=5, temperature=1.0)
    assert [r["response"] for r in shared] == [r["response"] for r in plain]
    assert [r["kl"] for r in shared] == pytest.approx([r["kl"] for r in plain], abs=1e-4)


def test_eval_precision_option(tiny_model, prompt_files, tmp_path):
    out = tmp_path / "bf16.jsonl"
    result = runner.invoke(app, ["eval", str(tiny_model), "--prompts", str(prompt_files / "p.txt"),
                                 "--max-new-tokens", "3", "--precision", "bf16", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "precision bf16 (requested: bf16)" in result.output
    assert all(json.loads(line)["kl"] == 0.0 for line in out.read_text().splitlines())
    bad = runner.invoke(app, ["eval", str(tiny_model), "--prompts", str(prompt_files / "p.txt"), "--precision", "fp16"])
    assert bad.exit_code == 2 and "fp16" in bad.output
