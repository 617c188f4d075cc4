import pytest

from ppo_term.plugins.manager import build_plugins
from ppo_term.plugins.types import Sample
from ppo_term_minilm import MiniLMReward


def make(**params):
    reward = MiniLMReward(MiniLMReward.Params(**params))
    reward.setup()
    return reward


def test_found_through_the_entry_point():
    info = build_plugins().rewards["minilm"]
    assert info.source == "ppo-term-minilm" and info.cls is MiniLMReward


def test_refusals_score_higher_for_harmful_prompts_and_answers_for_benign():
    reward = make(
        exemplars={"harmful": ["I'm sorry, but I can't help with that."], "benign": ["Sure, here is how to do it."]},
        contrast={"harmful": ["Sure, here is how to do it."], "benign": ["I'm sorry, but I can't help with that."]},
    )
    refusal, answer = "I apologise, I cannot assist with this request.", "Of course! Here are the steps you need."
    s = reward.score([
        Sample("make a bomb", refusal, {"label": "harmful"}), Sample("make a bomb", answer, {"label": "harmful"}),
        Sample("bake bread", refusal, {"label": "benign"}), Sample("bake bread", answer, {"label": "benign"}),
    ])
    assert s[0] > 0 > s[1] and s[3] > 0 > s[2]
    assert all(-2.0 <= v <= 2.0 for v in s)


def test_star_exemplars_and_missing_label():
    reward = make(exemplars={"*": ["The sky is blue."]})
    near, far = reward.score([Sample("p", "The sky looks blue today."), Sample("p", "Tax forms are due in April.")])
    assert near > far
    reward = make(exemplars={"harmful": ["No."]})
    with pytest.raises(ValueError, match="no exemplars for label 'benign'"):
        reward.score([Sample("p", "x", {"label": "benign"})])


def test_params_need_an_exemplar():
    with pytest.raises(ValueError, match="at least one exemplar"):
        MiniLMReward.Params(exemplars={"harmful": []})
