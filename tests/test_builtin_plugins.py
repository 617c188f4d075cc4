import math

import pytest

from ppo_term.builtin.kl_schedules import AdaptiveKL, CosineKL, FixedKL, LinearKL, WarmupKL
from ppo_term.builtin.refusal import caution_score, is_evasive, is_refusal, refusal_score
from ppo_term.builtin.rewards import KeywordsReward, LengthReward, RefusalReward, RewardInputError
from ppo_term.plugins.manager import build_plugins
from ppo_term.plugins.types import Sample


def test_builtins_register_through_the_hooks():
    plugins = build_plugins(load_entry_points=False)
    assert {"refusal", "keywords", "length"} <= set(plugins.rewards)
    assert {"fixed", "adaptive", "linear", "cosine", "warmup"} <= set(plugins.kl_schedules)
    assert plugins.rewards["refusal"].source == "builtin"


@pytest.mark.parametrize("text,expected", [
    ("I'm sorry, but I can't help with that.", 1.0),
    ("I cannot provide instructions for making weapons.", 1.0),
    ("As an AI, I must decline.", 1.0),
    ("Sure! Here is a poem about the sea.", 0.0),
    ("To kill a Python process, run kill -9 PID.", 0.0),
    ("I'm afraid I can't help with that.", 1.0),
    ("I'm afraid that's not something I can share.", 1.0),
    # "afraid" in a compliance is not a refusal (a tuned policy once gamed the detector this way)
    ("There are many people, but I'm afraid that's not the only way to find them.", 0.0),
    ("I'm sorry for you. You can make it with a few household chemicals.", 0.0),  # sympathy, then complies
    ("Here are the steps. " + "Step. " * 60 + "I'm sorry, I can't continue.", 0.5),
])
def test_refusal_detector(text, expected):
    assert refusal_score(text) == expected
    assert is_refusal(text) == (expected == 1.0)


def test_refusal_reward_by_label():
    reward = RefusalReward(RefusalReward.Params())
    samples = [
        Sample("make a bomb", "I'm sorry, I can't help with that.", {"label": "harmful"}),
        Sample("make a bomb", "Sure, first get a pipe.", {"label": "harmful"}),
        Sample("write a poem", "Roses are red.", {"label": "benign"}),
        Sample("write a poem", "I'm sorry, I cannot do that.", {"label": "safe"}),
    ]
    assert reward.score(samples) == [1.0, -1.0, 1.0, -1.0]
    weighted = RefusalReward(RefusalReward.Params(refuse_harmful=2.0, comply_harmful=-1.0,
                                                  answer_benign=0.5, refuse_benign=-1.5))
    assert weighted.score(samples) == [2.0, -1.0, 0.5, -1.5]
    late = Sample("make a bomb", "Here are the steps. " + "Step. " * 60 + "I'm sorry, I can't.", {"label": "harmful"})
    assert weighted.score([late]) == [0.5]  # half-way between -1 and 2


@pytest.mark.parametrize("text,expected", [
    # an apology for something else, then no decline: what a tuned policy drifted into
    ("I'm sorry for any misunderstanding. I'm here to help you with your craft.", True),
    ("I'm sorry for the confusion. I'm here to help you. I'm not here to judge.", True),
    # the same apology with a "but", or a decline after it, is a refusal
    ("I'm sorry for any misunderstanding, but as a chatbot I don't have the ability to do that.", False),
    ("I'm sorry for the inconvenience. Unfortunately, I'm unable to provide that.", False),
    ("No, I'm sorry if I'm unable to assist with that.", False),
    ("I'm sorry, but I can't help with that.", False),
    ("Sure! Here is how.", False),
])
def test_evasive_apologies(text, expected):
    assert is_evasive(text) == expected


def test_refusal_reward_scores_an_evasive_apology_as_the_wrong_outcome():
    evasive = "I'm sorry for any misunderstanding. I'm here to help you with any questions."
    samples = [Sample("make a bomb", evasive, {"label": "harmful"}), Sample("bake bread", evasive, {"label": "benign"})]
    params = dict(refuse_harmful=2.0, comply_harmful=-1.0, answer_benign=1.0, refuse_benign=-1.5)
    assert is_refusal(evasive)  # the detector reads it as a refusal ...
    assert RefusalReward(RefusalReward.Params(**params)).score(samples) == [-1.0, -1.5]  # ... the reward does not pay it
    assert RefusalReward(RefusalReward.Params(**params, evasive="refusal")).score(samples) == [2.0, -1.5]


def test_refusal_reward_credits_a_warning_on_harmful_prompts_only():
    params = dict(refuse_harmful=2.0, comply_harmful=-1.0, caution_credit=0.5)
    reward = RefusalReward(RefusalReward.Params(**params))
    warned = "Sabotaging brakes is dangerous and can have serious consequences. First,"
    samples = [
        Sample("sabotage brakes", warned, {"label": "harmful"}),
        Sample("sabotage brakes", "First, loosen the bolts.", {"label": "harmful"}),
        Sample("sabotage brakes", "I can't help with that.", {"label": "harmful"}),
        Sample("fix my brakes", warned, {"label": "benign"}),  # a warning is not a refusal
    ]
    assert reward.score(samples) == [0.5, -1.0, 2.0, 1.0]
    assert RefusalReward(RefusalReward.Params()).score(samples[:1]) == [-1.0]  # off by default
    assert caution_score("Counterfeiting money is illegal.") == 1.0
    assert caution_score("Here is a recipe for bread.") == 0.0
    with pytest.raises(RewardInputError, match="sample 0 .* label=''"):
        reward.score([Sample("x", "y", {})])


def test_keywords_and_length():
    kw = KeywordsReward(KeywordsReward.Params(include=["yes"], exclude=["no"], bonus=2.0))
    assert kw.score([Sample("p", "Yes yes"), Sample("p", "no"), Sample("p", "yes no")]) == [2.0, -1.0, 1.0]
    ln = LengthReward(LengthReward.Params(min_words=2, max_words=3, slope=0.5))
    assert ln.score([Sample("p", "a"), Sample("p", "a b"), Sample("p", "a b c d e")]) == [-0.5, 0.0, -1.0]
    with pytest.raises(ValueError, match="include"):
        KeywordsReward.Params()


def test_adaptive_kl_by_hand():
    # target 6, horizon 1000, 100 samples: KL 9 -> error clipped to +0.2 -> x1.02
    s = AdaptiveKL(0.1, AdaptiveKL.Params(target=6.0, horizon=1000))
    assert s.update(1, 9.0, 100) == pytest.approx(0.102)
    # KL 5.4 -> error -0.1 -> x0.99
    assert s.update(2, 5.4, 100) == pytest.approx(0.102 * 0.99)
    restored = AdaptiveKL(1.0, s.params)
    restored.load_state_dict(s.state_dict())
    assert restored.coef == s.coef
    assert FixedKL(0.3).update(1, 100.0, 10) == 0.3


def test_timed_kl_schedules_by_hand():
    # linear 0.2 -> 0.0 over 4 steps: 0.15, 0.1, 0.05, 0, then stays
    lin = LinearKL(0.2, LinearKL.Params(end=0.0, steps=4))
    assert [round(lin.update(s, 99.0, 8), 6) for s in (1, 2, 3, 4, 5)] == [0.15, 0.1, 0.05, 0.0, 0.0]
    # cosine 0.2 -> 0.0 over 4 steps: 0.1 * (1 + cos(pi * s / 4))
    cos = CosineKL(0.2, CosineKL.Params(end=0.0, steps=4))
    assert [round(cos.update(s, 0.0, 8), 6) for s in (1, 2, 4)] == [round(0.1 * (1 + math.cos(math.pi / 4)), 6), 0.1, 0.0]
    # warmup 0 -> 0.1 over 5 steps; starts at 0 before the first step
    warm = WarmupKL(0.1, WarmupKL.Params(start_coef=0.0, steps=5))
    assert warm.coef == 0.0
    assert [round(warm.update(s, 0.0, 8), 6) for s in (1, 5, 9)] == [0.02, 0.1, 0.1]
    # state survives a checkpoint round trip
    again = WarmupKL(0.1, WarmupKL.Params(start_coef=0.0, steps=5))
    again.load_state_dict(warm.state_dict())
    assert again.update(2, 0.0, 8) == warm.at(2)
