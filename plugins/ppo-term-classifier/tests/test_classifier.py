"""The classifier reward on a tiny sequence classifier built here (random weights, word vocabulary)."""

import pytest
import torch

from ppo_term.plugins.manager import build_plugins
from ppo_term.plugins.types import Sample
from ppo_term_classifier import ClassifierReward

WORDS = "[PAD] [UNK] [CLS] [SEP] good bad fine awful the day was is".split()


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

    out = tmp_path_factory.mktemp("clf")
    vocab = {w: i for i, w in enumerate(WORDS)}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tk.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="[PAD]", unk_token="[UNK]",
                                  cls_token="[CLS]", sep_token="[SEP]")
    config = BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64, num_labels=2,
                        id2label={0: "negative", 1: "positive"}, label2id={"negative": 0, "positive": 1})
    torch.manual_seed(0)
    model = BertForSequenceClassification(config)
    # make "good" push towards "positive": a readable, checkable classifier
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.tensor([0.0, 0.0]))
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def make(**params):
    reward = ClassifierReward(ClassifierReward.Params(**params))
    reward.setup()
    return reward


def test_found_through_the_entry_point():
    assert build_plugins().rewards["classifier"].cls is ClassifierReward


def test_probability_of_the_label_matches_the_model(classifier_dir):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    reward = make(model=str(classifier_dir), label="positive")
    samples = [Sample("p", "good day"), Sample("p", "awful day was bad"), Sample("p", "")]
    scores = reward.score(samples)
    # a zeroed head gives 0.5 for every text
    assert scores == pytest.approx([0.5, 0.5, 0.5])
    # now a head that reads the pooled output: compare against the model run by hand
    with torch.no_grad():
        reward.model.classifier.weight.normal_()
    scores = reward.score(samples)
    tok = AutoTokenizer.from_pretrained(classifier_dir)
    enc = tok([s.response for s in samples], padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = reward.model(**enc).logits.softmax(-1)[:, 1].tolist()
    assert scores == pytest.approx(expected, abs=1e-6)
    logits = make(model=str(classifier_dir), label=1, output="logit")
    logits.model.load_state_dict(reward.model.state_dict())
    assert len(logits.score(samples)) == 3


def test_prompt_and_response_pairs_and_batches(classifier_dir):
    reward = make(model=str(classifier_dir), label="negative", input="prompt+response", batch_size=2)
    with torch.no_grad():
        reward.model.classifier.weight.normal_()
    samples = [Sample("good", "day"), Sample("bad", "day"), Sample("the", "day"), Sample("fine", "day")]
    scores = reward.score(samples)
    assert len(scores) == 4 and all(0.0 <= s <= 1.0 for s in scores)
    assert len(set(round(s, 6) for s in scores)) > 1  # the prompt changes the score


def test_bad_params(classifier_dir, tmp_path):
    with pytest.raises(ValueError, match="not a local model directory"):
        ClassifierReward.Params(model=str(tmp_path), label="positive")
    with pytest.raises(ValueError, match="not one of the model's labels"):
        make(model=str(classifier_dir), label="neutral")
    with pytest.raises(ValueError, match="out of range"):
        make(model=str(classifier_dir), label=5)
