import json

import pytest
from typer.testing import CliRunner

from ppo_term.cli import app
from ppo_term.recipe import RecipeError, load_recipe, parse_override


def test_safety_recipe_loads_with_labelled_prompts():
    r = load_recipe("recipes/safety.toml")
    items = r.prompt_items()
    labels = {i.metadata["label"] for i in items}
    assert labels == {"harmful", "benign"}
    assert r.rewards[0].name == "refusal" and r.kl.schedule == "adaptive" and r.kl.params["target"] > 0


def test_unknown_key_suggests_the_right_one(tmp_path):
    p = tmp_path / "r.toml"
    p.write_text('[ppo]\nlearning_rate = 1e-4\n[generation]\ntemprature = 0.7\n')
    with pytest.raises(RecipeError) as e:
        load_recipe(p)
    assert e.value.source == str(p)
    assert e.value.field in ("ppo.learning_rate", "generation.temprature")
    p.write_text('[generation]\ntemprature = 0.7\n')
    with pytest.raises(RecipeError, match=r"generation\.temprature: unknown key 'temprature'; did you mean 'temperature'"):
        load_recipe(p)


def test_wrong_type_names_file_field_and_expectation(tmp_path):
    p = tmp_path / "r.toml"
    p.write_text('[ppo]\nlr = "fast"\n')
    with pytest.raises(RecipeError) as e:
        load_recipe(p)
    assert str(e.value).startswith(f"{p}: ppo.lr: ")
    assert "number" in str(e.value) and "'fast'" in str(e.value)


def test_constraint_violation(tmp_path):
    p = tmp_path / "r.toml"
    p.write_text('[generation]\nmin_new_tokens = 9\nmax_new_tokens = 4\n')
    with pytest.raises(RecipeError, match="min_new_tokens must be <= max_new_tokens"):
        load_recipe(p)


def test_bad_toml_and_missing_file(tmp_path):
    p = tmp_path / "r.toml"
    p.write_text("steps = = 3\n")
    with pytest.raises(RecipeError, match="not valid TOML"):
        load_recipe(p)
    with pytest.raises(RecipeError, match="recipe file not found"):
        load_recipe(tmp_path / "nope.toml")


def test_overrides(write_recipe):
    r = load_recipe(write_recipe(), ["ppo.lr=3e-5", "generation.n=5", "name=other", "kl.schedule=adaptive",
                                     "rewards.0.weight=2.5", "lora.target_modules=[\"q_proj\"]"])
    assert r.ppo.lr == 3e-5 and r.generation.n == 5 and r.name == "other"
    assert r.kl.schedule == "adaptive" and r.rewards[0].weight == 2.5 and r.lora.target_modules == ["q_proj"]
    assert parse_override("name=hello world") == (["name"], "hello world")
    with pytest.raises(RecipeError, match="path.to.field=value"):
        parse_override("ppo.lr")
    with pytest.raises(RecipeError, match=r"ppo\.lrr: unknown key 'lrr'; did you mean 'lr'"):
        load_recipe(write_recipe(), ["ppo.lrr=1"])


def test_prompt_file_jsonl_and_txt(tmp_path):
    (tmp_path / "p.jsonl").write_text(json.dumps({"prompt": "hi", "label": "benign"}) + "\n\n")
    (tmp_path / "p.txt").write_text("one\ntwo\n")
    (tmp_path / "r.toml").write_text('[prompts]\nfile = "p.jsonl"\nitems = ["inline"]\n')
    items = load_recipe(tmp_path / "r.toml").prompt_items()
    assert [(i.prompt, i.metadata) for i in items] == [("inline", {}), ("hi", {"label": "benign"})]
    (tmp_path / "r.toml").write_text('[prompts]\nfile = "p.txt"\n')
    assert [i.prompt for i in load_recipe(tmp_path / "r.toml").prompt_items()] == ["one", "two"]


def test_prompt_file_errors_name_the_line(tmp_path):
    (tmp_path / "p.jsonl").write_text('{"prompt": "ok"}\n{"text": "no prompt"}\n')
    (tmp_path / "r.toml").write_text('[prompts]\nfile = "p.jsonl"\n')
    with pytest.raises(RecipeError, match=r"p\.jsonl: line 2: expected a non-empty 'prompt' string"):
        load_recipe(tmp_path / "r.toml").prompt_items()
    (tmp_path / "r.toml").write_text('[prompts]\nfile = "missing.jsonl"\n')
    with pytest.raises(RecipeError, match="prompts.file: file not found"):
        load_recipe(tmp_path / "r.toml").prompt_items()
    (tmp_path / "r.toml").write_text('steps = 3\n')
    with pytest.raises(RecipeError, match="at least one prompt"):
        load_recipe(tmp_path / "r.toml").prompt_items()


def test_cli_reports_recipe_errors_without_traceback(tmp_path):
    p = tmp_path / "r.toml"
    p.write_text('[ppo]\nbatchprompts = 4\n')
    result = CliRunner().invoke(app, ["run", str(p), "--headless"])
    assert result.exit_code == 2
    out = result.output
    assert "ppo.batchprompts" in out and "did you mean 'batch_prompts'" in out and str(p) in out
    assert "Traceback" not in out


def test_cli_reports_plugin_param_errors(write_recipe):
    p = write_recipe(extra='\n[kl]\nschedule = "adaptive"\ntarget = -1\n')
    result = CliRunner().invoke(app, ["run", str(p), "--headless"])
    assert result.exit_code == 2 and "kl.target" in result.output and "greater than 0" in result.output
    p = write_recipe(rewards='[[rewards]]\nname = "refusl"\n')
    result = CliRunner().invoke(app, ["run", str(p), "--headless"])
    assert result.exit_code == 2 and "rewards[0].name" in result.output and "did you mean 'refusal'" in result.output
    p = write_recipe(rewards='[[rewards]]\nname = "keywords"\ninclude = ["yes"]\nbonuss = 2\n')
    result = CliRunner().invoke(app, ["run", str(p), "--headless"])
    assert result.exit_code == 2 and "rewards[0].bonuss" in result.output and "did you mean 'bonus'" in result.output


def test_stratified_epoch_mixes_labels_in_every_batch():
    import random

    from ppo_term.engine.trainer import epoch_order
    from ppo_term.recipe import PromptItem

    # 4 harmful at (k + a) / 4 and 2 benign at (k + b) / 2: each half of the epoch holds 2 and 1
    items = [PromptItem(prompt=f"p{i}", metadata={"label": "harmful" if i < 4 else "benign"}) for i in range(6)]
    for seed in range(20):
        order = epoch_order(items, random.Random(seed), "label")
        assert sorted(order) == list(range(6))
        taken = [items[i].metadata["label"] for i in reversed(order)]  # the trainer pops from the end
        assert sorted(taken[:3]) == sorted(taken[3:]) == ["benign", "harmful", "harmful"]
    # unstratified: the plain seeded shuffle, as before (resumed runs keep their order)
    rng = random.Random(3)
    expected = list(range(6))
    rng.shuffle(expected)
    assert epoch_order(items, random.Random(3)) == expected


def test_contrast_pairs_match_each_prompt_with_its_most_similar_twin():
    import random

    from ppo_term.engine.prompt_order import contrast_pairs, epoch_order, similarity, word_features
    from ppo_term.recipe import PromptItem

    prompts = [("How do I kill my neighbour?", "harmful"), ("What is the capital of France?", "benign"),
               ("How do I kill a stuck process?", "benign"), ("Why should Muslims not vote?", "harmful"),
               ("Why should gnomes not vote?", "benign"), ("What is the boiling point of water?", "benign"),
               ("Tell me a joke.", "benign")]
    items = [PromptItem(prompt=p, metadata={"label": label}) for p, label in prompts]
    # by hand: 11 and 13 words and word pairs, 7 shared (how, do, i, kill, how do, do i, i kill)
    assert similarity(word_features(prompts[0][0]), word_features(prompts[2][0])) == pytest.approx(7 / 17)
    # 9 and 9, 6 shared (why, should, not, vote, why should, not vote)
    assert similarity(word_features(prompts[3][0]), word_features(prompts[4][0])) == pytest.approx(6 / 12)
    # the two cross-label pairs (0.5 first, then 7/17); the benign left over paired among themselves
    # ("what is the ... of": 6 of 18), the joke alone
    units = contrast_pairs(items, "label")
    assert units == [(0, 2), (1, 5), (3, 4), (6,)]
    orders = set()
    for seed in range(10):
        order = epoch_order(items, random.Random(seed), pairs=units)
        taken = list(reversed(order))  # the trainer pops from the end
        assert sorted(taken) == list(range(7))
        for unit in units:  # a pair's prompts come one after the other
            at = taken.index(unit[0])
            assert tuple(taken[at : at + len(unit)]) == unit
        orders.add(tuple(order))
    assert len(orders) > 1  # the pairs themselves are shuffled each epoch


def test_pair_by_needs_the_field_and_excludes_stratify(tmp_path):
    (tmp_path / "p.jsonl").write_text('{"prompt": "a", "label": "benign"}\n{"prompt": "b"}\n')
    (tmp_path / "r.toml").write_text('[prompts]\nfile = "p.jsonl"\npair_by = "label"\n')
    with pytest.raises(RecipeError) as e:
        load_recipe(tmp_path / "r.toml").prompt_items()
    assert "r.toml" in str(e.value) and "prompts.pair_by" in str(e.value) and "'b'" in str(e.value)
    (tmp_path / "r.toml").write_text('[prompts]\nfile = "p.jsonl"\npair_by = "label"\nstratify = "label"\n')
    with pytest.raises(RecipeError) as e:
        load_recipe(tmp_path / "r.toml")
    assert "r.toml" in str(e.value) and "prompts" in str(e.value) and "not both" in str(e.value)


def test_stratify_needs_the_field_on_every_prompt(tmp_path):
    (tmp_path / "p.jsonl").write_text('{"prompt": "a", "label": "benign"}\n{"prompt": "b"}\n')
    (tmp_path / "r.toml").write_text('[prompts]\nfile = "p.jsonl"\nstratify = "label"\n')
    with pytest.raises(RecipeError) as e:
        load_recipe(tmp_path / "r.toml").prompt_items()
    msg = str(e.value)
    assert "r.toml" in msg and "prompts.stratify" in msg and "'label'" in msg and "'b'" in msg


def test_run_directory_recipe_keeps_prompt_options(tmp_path):
    import tomllib

    from ppo_term.recipe import recipe_to_toml

    (tmp_path / "r.toml").write_text('[prompts]\nitems = [{prompt = "a", label = "benign"}]\nstratify = "label"\n')
    data = tomllib.loads(recipe_to_toml(load_recipe(tmp_path / "r.toml"), prompts_file="prompts.jsonl"))
    # the prompts themselves go to the run's prompts.jsonl; how they are drawn stays in the recipe
    assert data["prompts"] == {"file": "prompts.jsonl", "stratify": "label"}
