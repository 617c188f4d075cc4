"""The engine on a tiny model: it learns, trains only the policy, is deterministic, obeys controls."""

import json
import math
import threading
import types

import pytest
import torch

from ppo_term import hookimpl
from ppo_term.engine.controls import Controls
from ppo_term.engine.rollout import RewardError, chat_text
from ppo_term.engine.trainer import Trainer
from ppo_term.plugins.manager import build_plugins
from ppo_term.plugins.types import Reward
from ppo_term.recipe import RecipeError, load_recipe
from ppo_term.runs import RunDir


class YesReward(Reward):
    """Dense test reward: the fraction of response words that are 'yes'."""

    name = "yes-fraction"

    def score(self, samples):
        return [s.response.split().count("yes") / max(len(s.response.split()), 1) for s in samples]


def plugin_with(*classes):
    @hookimpl
    def register_rewards(register):
        for cls in classes:
            register(cls)

    return types.SimpleNamespace(register_rewards=register_rewards)


def make_trainer(recipe, *reward_classes, **kw):
    plugins = build_plugins(extra=[plugin_with(*reward_classes)], load_entry_points=False)
    trainer = Trainer(recipe, plugins=plugins, progress=False, **kw)
    trainer.setup()
    return trainer


@torch.no_grad()
def prob_of(trainer, word):
    """Mean probability, over the recipe's prompts, that the first response token is `word`."""
    tok = trainer.tokenizer
    texts = [chat_text(tok, item.prompt, None) for item in trainer.items]
    enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(trainer.device)
    pos = (enc.attention_mask.cumsum(-1) - 1).clamp(min=0)
    with trainer.policy.autocast():
        logits = trainer.policy.lm(input_ids=enc.input_ids, attention_mask=enc.attention_mask, position_ids=pos).logits
    return logits[:, -1].softmax(-1)[:, tok.convert_tokens_to_ids(word)].mean().item()


@pytest.mark.parametrize("baseline", ["none", "group"])
def test_ppo_raises_the_probability_of_the_rewarded_token(write_recipe, baseline):
    rewards = '[[rewards]]\nname = "yes-fraction"\n'
    recipe = load_recipe(write_recipe(rewards=rewards, steps=12), [
        "ppo.lr=0.01", "generation.n=4", "ppo.batch_prompts=3", "ppo.minibatch=6", "ppo.epochs=2",
        "generation.max_new_tokens=4", "kl.coef=0.01", f"ppo.score_baseline={baseline}",
    ])
    metrics = []
    trainer = make_trainer(recipe, YesReward, listeners=[lambda e: e.kind == "metrics" and metrics.append(e.data)])
    before = prob_of(trainer, "yes")
    trainer.run()
    after = prob_of(trainer, "yes")
    assert after > 3 * before, (before, after)
    assert all(math.isfinite(m["kl"]) for m in metrics)
    assert metrics[-1]["kl"] > 0  # the policy moved away from the reference
    first, last = metrics[0]["reward"], sum(m["reward"] for m in metrics[-3:]) / 3
    assert last > first


def test_critic_free_learns_without_training_the_value_head(write_recipe):
    rewards = '[[rewards]]\nname = "yes-fraction"\n'
    recipe = load_recipe(write_recipe(rewards=rewards, steps=12), [
        "ppo.lr=0.01", "generation.n=4", "ppo.batch_prompts=3", "ppo.minibatch=6", "ppo.epochs=2",
        "generation.max_new_tokens=4", "kl.coef=0.01", "ppo.score_baseline=group", "ppo.critic=false",
    ])
    metrics = []
    trainer = make_trainer(recipe, YesReward, listeners=[lambda e: e.kind == "metrics" and metrics.append(e.data)])
    head = {n: p.detach().clone() for n, p in trainer.policy.value_head.named_parameters()}
    before = prob_of(trainer, "yes")
    trainer.run()
    assert prob_of(trainer, "yes") > 3 * before
    # no value loss, so the head gets no gradient and the metrics carry no value terms
    assert all(torch.equal(p, head[n]) for n, p in trainer.policy.value_head.named_parameters())
    assert all("value_loss" not in m and m["value_mean"] == 0 for m in metrics)


def test_update_tokens_trains_the_first_tokens_in_shorter_passes(write_recipe):
    rewards = '[[rewards]]\nname = "yes-fraction"\n'
    settings = ["ppo.lr=0.01", "generation.n=4", "ppo.batch_prompts=3", "ppo.minibatch=6", "ppo.epochs=2",
                "generation.max_new_tokens=4", "generation.min_new_tokens=4", "kl.coef=0.01",
                "ppo.score_baseline=group"]
    trainer = make_trainer(load_recipe(write_recipe(rewards=rewards, steps=12), [*settings, "ppo.update_tokens=1"]),
                           YesReward)
    widths = []
    forward = trainer.policy.forward

    def recording(lm, input_ids, attention_mask, prompt_len, **kw):
        if torch.is_grad_enabled():
            widths.append(input_ids.shape[1] - prompt_len)  # response tokens the update's pass runs
        return forward(lm, input_ids, attention_mask, prompt_len, **kw)

    trainer.policy.forward = recording
    before = prob_of(trainer, "yes")
    trainer.run()
    # the loss on the first token alone still moves it toward the reward
    assert prob_of(trainer, "yes") > 3 * before
    assert widths and set(widths) == {1}

    # as many update tokens as the response has is the plain update, to the bit
    def lora_after(*extra):
        t = make_trainer(load_recipe(write_recipe(rewards=rewards, steps=2), [*settings, *extra]), YesReward)
        t.run()
        return {n: p.detach().clone() for n, p in t.policy.named_trainable_parameters()}

    plain, same = lora_after(), lora_after("ppo.update_tokens=4")
    assert all(torch.equal(plain[n], same[n]) for n in plain)


def test_only_lora_and_value_head_train(write_recipe):
    trainer = make_trainer(load_recipe(write_recipe(steps=2), ["ppo.lr=0.01"]))
    base = {n: p.detach().clone() for n, p in trainer.policy.lm.named_parameters() if "lora_" not in n}
    lora = {n: p.detach().clone() for n, p in trainer.policy.lm.named_parameters() if "lora_B" in n}
    trainer.run()
    for n, p in trainer.policy.lm.named_parameters():
        if n in base:
            assert torch.equal(p, base[n]), f"base weight {n} changed"
    assert any(not torch.equal(p, lora[n]) for n, p in trainer.policy.lm.named_parameters() if n in lora)
    names = [n for n, _ in trainer.policy.named_trainable_parameters()]
    assert all("lora_" in n or n.startswith("value_head.") for n in names)


def test_lr_schedule_reaches_the_optimizer(write_recipe):
    trainer = make_trainer(load_recipe(write_recipe(steps=3), ["ppo.lr=0.01", 'ppo.lr_schedule="linear"',
                                                               "ppo.lr_end=0.5"]))
    trainer.run()
    # linear from 0.01 at step 1 to 0.005 at step 3
    assert [m["lr"] for m in trainer.history] == pytest.approx([0.01, 0.0075, 0.005])
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(0.005)


def test_dual_clip_reaches_the_update(write_recipe):
    def run(*overrides):
        metrics = []
        make_trainer(load_recipe(write_recipe(steps=2), ["ppo.lr=0.05", "ppo.epochs=2", *overrides]),
                     listeners=[lambda e: e.kind == "metrics" and metrics.append(e.data)]).run()
        return metrics

    # a bound just above 1: in the second epoch some negative-advantage token's ratio has passed it
    assert max(m["dual_clipfrac"] for m in run("ppo.dual_clip=1.001")) > 0
    assert all("dual_clipfrac" not in m for m in run())  # plain PPO by default


def test_full_finetuning_keeps_a_frozen_reference(write_recipe):
    trainer = make_trainer(load_recipe(write_recipe(steps=2), ["lora.enabled=false", "ppo.lr=0.01"]))
    ref_before = {n: p.clone() for n, p in trainer.policy.ref_model.named_parameters()}
    trainer.run()
    assert all(torch.equal(p, ref_before[n]) for n, p in trainer.policy.ref_model.named_parameters())
    w = dict(trainer.policy.lm.named_parameters())
    assert any(not torch.equal(w[n], ref_before[n]) for n in ref_before)


def test_full_finetuning_with_the_fused_adamw(write_recipe, monkeypatch):
    from ppo_term.engine import trainer as trainer_module

    assert not trainer_module.use_fused_adam(2_000_000) and trainer_module.use_fused_adam(135_000_000)
    monkeypatch.setattr(trainer_module, "FUSED_ADAM_MIN_PARAMS", 0)  # the tiny model counts as large
    # fp32 weights (with bf16 ones, as `precision = auto` gives on a GPU, AdamWBF16 steps them)
    trainer = make_trainer(load_recipe(write_recipe(steps=2), ["lora.enabled=false", "ppo.lr=0.01", "precision=fp32"]))
    assert trainer.optimizer.defaults["fused"]
    before = {n: p.detach().clone() for n, p in trainer.policy.lm.named_parameters()}
    trainer.run()
    assert any(not torch.equal(p, before[n]) for n, p in trainer.policy.lm.named_parameters())
    assert all(torch.isfinite(p).all() for p in trainer.policy.lm.parameters())


@pytest.mark.parametrize("fused", [False, True])
def test_full_finetuning_without_clipping_steps_inside_backward(write_recipe, monkeypatch, fused):
    """No clipping: each weight steps as its gradient is done, which is then freed; same update."""
    from ppo_term.engine import trainer as trainer_module

    if fused:
        monkeypatch.setattr(trainer_module, "FUSED_ADAM_MIN_PARAMS", 0)

    def run(max_grad_norm):
        norms = []
        trainer = make_trainer(
            load_recipe(write_recipe(steps=2), ["lora.enabled=false", "ppo.lr=0.01", "ppo.epochs=2",
                                                 f"ppo.max_grad_norm={max_grad_norm}"]),
            listeners=[lambda e: e.kind == "metrics" and norms.append(e.data["grad_norm"])])
        trainer.run()
        return trainer, norms

    inside, inside_norms = run("inf")
    plain, plain_norms = run("1e30")  # a bound that never binds: the plain step, no clipping
    assert inside.step_in_backward is not None and plain.step_in_backward is None
    params = inside.policy.trainable_parameters()
    assert all(p.grad is None for p in params)
    # the optimizer keeps the state (checkpoints save it): a step per minibatch, 2 steps x 2 epochs x 2
    assert all(int(inside.optimizer.state[p]["step"]) == 8 for p in params)
    for (name, a), b in zip(inside.policy.named_trainable_parameters(), plain.policy.trainable_parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
    # the norm sums the gradients in another order: bf16's rounding (a GPU run's `auto`) moves it more
    rel = 1e-4 if inside.precision.dtype == torch.float32 else 2e-3
    assert inside_norms == pytest.approx(plain_norms, rel=rel) and max(inside_norms) > 0


def test_same_seed_same_run(write_recipe):
    def run():
        out = []
        make_trainer(load_recipe(write_recipe(steps=2)), listeners=[
            lambda e: e.kind == "rollouts" and out.extend(r["response"] for r in e.data["samples"]),
            lambda e: e.kind == "metrics" and out.append(round(e.data["policy_loss"], 6)),
        ]).run()
        return out

    assert run() == run()


@pytest.mark.parametrize("bad,match", [
    (lambda samples: 1 / 0, r"reward 'bad': raised ZeroDivisionError"),
    (lambda samples: [0.0], r"reward 'bad': returned 1 scores for 4 samples"),
    (lambda samples: [0.0, float("nan"), 0.0, 0.0], r"reward 'bad', sample 1: returned nan"),
    (lambda samples: [0.0, 0.0, float("inf"), 0.0], r"reward 'bad', sample 2: returned inf"),
])
def test_bad_reward_stops_the_step_naming_the_plugin(write_recipe, tmp_path, bad, match):
    class Bad(Reward):
        name = "bad"

        def score(self, samples):
            return bad(samples)

    rd = RunDir(tmp_path / "run")
    rd.create("", [], 2, "tiny")
    recipe = load_recipe(write_recipe(rewards='[[rewards]]\nname = "bad"\n'))
    trainer = make_trainer(recipe, Bad, listeners=[rd], run_dir=rd)
    with pytest.raises(RewardError, match=match):
        trainer.run()
    rd.close()
    events = (rd.path / "events.jsonl").read_text()
    assert '"kind": "error"' in events and "bad" in events


def test_controls_pause_kl_save_stop(write_recipe, tmp_path):
    controls = Controls()
    rd = RunDir(tmp_path / "run")
    rd.create("", [], 50, "tiny")
    events = []
    gate = threading.Event()

    def listen(e):
        events.append(e)
        if e.kind == "metrics" and e.step == 1:
            # from "another thread's" point of view: pause, then change KL and save while paused
            controls.pause()
            gate.set()

    recipe = load_recipe(write_recipe(steps=50))
    trainer = make_trainer(recipe, controls=controls, listeners=[rd, listen], run_dir=rd)
    worker = threading.Thread(target=trainer.run)
    worker.start()
    assert gate.wait(60)
    # while paused no further step happens
    for _ in range(50):
        if trainer.phase == "paused":
            break
        threading.Event().wait(0.05)
    assert trainer.phase == "paused" and trainer.step == 1
    controls.set_kl_coef(0.5, keep_schedule=False)
    controls.save()
    threading.Event().wait(0.5)
    assert trainer.step == 1
    controls.resume()
    while trainer.step < 2:
        threading.Event().wait(0.05)
    controls.stop()
    worker.join(60)
    assert not worker.is_alive()
    metrics = [e.data for e in events if e.kind == "metrics"]
    assert metrics[1]["kl_coef"] == 0.5 and metrics[1]["kl_coef_next"] == 0.5  # fixed by the user
    assert trainer.step < 50
    controls_seen = [e.data["command"] for e in events if e.kind == "control"]
    assert controls_seen[:3] == ["pause", "set_kl_coef", "save"]
    assert (rd.path / "checkpoints" / "step-1").is_dir()  # the save while paused
    assert (rd.path / f"checkpoints/step-{trainer.step}").is_dir()  # stop saves first
    rd.close()
    logged = (rd.path / "events.jsonl").read_text()
    assert '"command": "set_kl_coef"' in logged and '"step": 1' in logged


def test_scores_weighted_sum_and_no_eos_penalty():
    from ppo_term.engine.rollout import Batch, BoundReward, score
    from ppo_term.recipe import PromptItem

    class Len(Reward):
        name = "len"

        def score(self, samples):
            return [float(len(s.response)) for s in samples]

    class One(Reward):
        name = "one"

        def score(self, samples):
            return [1.0] * len(samples)

    item = PromptItem(prompt="p")
    batch = Batch(items=[item, item], query_ids=torch.zeros(2, 1, dtype=torch.long), query_mask=torch.ones(2, 1),
                  response_ids=torch.zeros(2, 2, dtype=torch.long), mask=torch.ones(2, 2),
                  finished=torch.tensor([True, False]), responses=["abc", "abcdef"])
    score([BoundReward("len", 0.5, Len()), BoundReward("one", 2.0, One())], batch)
    assert batch.scores.tolist() == [0.5 * 3 + 2.0, 0.5 * 6 + 2.0]
    assert batch.components == {"len": [3.0, 6.0], "one": [1.0, 1.0]}
    score([BoundReward("len", 0.5, Len())], batch, no_eos_penalty=-5.0)
    assert batch.scores.tolist() == [1.5, -5.0]  # the response that never ended gets the penalty
    assert batch.groups == [[0, 1]]


def test_lora_from_a_first_layer_up(write_recipe, tmp_path):
    """`lora.first_layer` puts the adapter on the layers from it up; only they train, and the
    saved adapter says so to PEFT."""
    recipe = load_recipe(write_recipe(steps=2), ["ppo.lr=0.01", "lora.first_layer=1", "save_every=2"])
    rd = RunDir(tmp_path / "run")
    rd.create("", [], 2, "tiny")
    trainer = make_trainer(recipe, listeners=[rd], run_dir=rd)
    layers = {n.split("layers.")[1].split(".")[0] for n, _ in trainer.policy.lm.named_parameters() if "lora_" in n}
    assert layers == {"1"}
    trainer.run()
    config = json.loads((rd.checkpoints / "step-2" / "adapter_config.json").read_text())
    assert config["layers_to_transform"] == [1]
    with pytest.raises(RecipeError, match=r"lora.*first_layer places the LoRA adapter"):
        load_recipe(write_recipe(steps=2), ["lora.enabled=false", "lora.first_layer=1"])
    bad = load_recipe(write_recipe(steps=2), ["lora.first_layer=2"])
    with pytest.raises(RecipeError, match=r"lora\.first_layer: expected a layer below the model's 2"):
        make_trainer(bad)


def test_kl_by_label_averages_the_sampled_responses_of_each_label():
    """kl/<label> is the mean sequence KL of the label's sampled responses; given openings (not
    drawn from the policy) and unlabelled prompts are left out."""
    items = [types.SimpleNamespace(metadata=m) for m in ({"label": "a"}, {"label": "b"}, {"label": "a"}, {}, {"label": "a"})]
    batch = types.SimpleNamespace(items=items, sampled=[True, True, False, True, True])
    by_label = Trainer._kl_by_label(batch, torch.tensor([1.0, 2.0, 30.0, 4.0, 5.0]))
    assert by_label == {"kl/a": 3.0, "kl/b": 2.0}  # a: (1 + 5) / 2, its opened 30 left out


def test_kl_label_scale_gives_each_sample_its_coefficient(write_recipe):
    """`kl.label_scale` multiplies kl_coef for the samples of prompts with that label, in the
    per-token rewards PPO trains on; a label no prompt has is a recipe error."""
    recipe = load_recipe(write_recipe(steps=1, extra="[kl]\ncoef = 0.1\nlabel_scale = {benign = 4.0}\n"))
    trainer = make_trainer(recipe)
    batch = types.SimpleNamespace(items=trainer.items, mask=torch.ones(len(trainer.items), 3))
    # the tiny recipe's prompts: two unlabelled, then "give a poem" labelled benign
    assert trainer.kl_coefs(batch, 0.1).squeeze(-1).tolist() == pytest.approx([0.1, 0.1, 0.4])
    trainer.run()
    assert math.isfinite(trainer.history[-1]["kl"])
    assert math.isfinite(trainer.history[-1]["kl/benign"])  # the anchored label's own KL, for the curves
    bad = write_recipe(name="bad.toml", extra="[kl]\nlabel_scale = {harmless = 2.0}\n")
    with pytest.raises(RecipeError, match=r"bad\.toml: kl\.label_scale: no training prompt has the label 'harmless' "
                                          r"\(labels: 'benign'\)"):
        make_trainer(load_recipe(bad))


def test_pair_by_puts_each_prompt_in_a_batch_with_its_twin(write_recipe):
    items = ('[{prompt = "how do I kill a stuck process", label = "benign"}, {prompt = "tell me a joke", label = "benign"},'
             ' {prompt = "how do I kill my noisy neighbour", label = "harmful"}, {prompt = "why should gnomes not vote", label = "benign"},'
             ' {prompt = "why should women not vote", label = "harmful"}, {prompt = "write me a short poem", label = "benign"}]')
    recipe = load_recipe(write_recipe(steps=6), [f"prompts.items={items}", "prompts.pair_by=label"])
    batches: dict[int, set[str]] = {}
    trainer = make_trainer(recipe, listeners=[lambda e: e.kind == "rollouts" and batches.setdefault(
        len(batches), {r["prompt"] for r in e.data["samples"]})])
    trainer.run()
    # 6 steps of 2 prompts: two epochs of the three pairs, each pair in one step, never split
    pairs = [{"how do I kill a stuck process", "how do I kill my noisy neighbour"},
             {"why should gnomes not vote", "why should women not vote"},
             {"tell me a joke", "write me a short poem"}]
    assert len(batches) == 6
    assert all(batch in pairs for batch in batches.values()), batches
    assert all(pair in list(batches.values())[:3] for pair in pairs)  # the first epoch held every pair
