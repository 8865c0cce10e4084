"""Tests for experiments/text.py: character ROUGE, BLEU with the zh tokenizer, end accuracy."""

import pytest
from rouge_score import tokenizers

from experiments import text


def test_default_rouge_tokenizer_loses_chinese_and_ours_refuses_that():
    # rouge_score's default keeps only [a-z0-9]: Chinese tokenises to nothing.
    assert tokenizers.DefaultTokenizer().tokenize("中国人民") == []
    with pytest.raises(text.EmptyTokenization):
        text.character_rouge(["中国"], ["中国人民"], tokenizer=tokenizers.DefaultTokenizer())
    assert text.CharTokenizer().tokenize("中国 AI") == ["中", "国", "a", "i"]


def test_character_rouge_by_hand():
    # hypothesis 中国人 vs reference 中国人民: unigrams P = 3/3, R = 3/4 → F = 6/7;
    # bigrams 中国, 国人 both in the reference's 3: P = 1, R = 2/3 → F = 0.8; LCS = 3 → 6/7.
    scores = text.character_rouge(["中国人"], ["中国人民"])
    assert scores["rouge1"] == pytest.approx(100 * 6 / 7)
    assert scores["rouge2"] == pytest.approx(80.0)
    assert scores["rougeL"] == pytest.approx(100 * 6 / 7)
    # Order matters for ROUGE-L only: 人国中 shares every unigram, LCS 1.
    reordered = text.character_rouge(["民人国中"], ["中国人民"])
    assert reordered["rouge1"] == pytest.approx(100.0)
    assert reordered["rougeL"] == pytest.approx(25.0)
    assert text.character_rouge([""], ["中国"])["rouge1"] == 0.0


def test_bleu_splits_chinese_characters():
    assert text.bleu(["中国人民银行"], ["中国人民银行"]) == pytest.approx(100.0)
    # Without character splitting these unsegmented strings would share no token at all.
    assert 0 < text.bleu(["中国人民银行今天宣布"], ["中国人民银行昨天宣布"]) < 100


def test_end_accuracy_by_hand():
    # First 4: 中国人民 vs 中国人口: 3/4. Last 4 from the end: 民人国中 vs 口人国中: 3/4.
    assert text.end_accuracy(["中国人民"], ["中国人口"]) == {"first4": 75.0, "last4": 75.0}
    # A short hypothesis is wrong where it has no character: ab vs abcd → 2/4 and 0/4.
    assert text.end_accuracy(["ab"], ["abcd"]) == {"first4": 50.0, "last4": 0.0}


def test_mismatched_lengths_are_refused():
    with pytest.raises(ValueError):
        text.character_rouge(["a"], ["a", "b"])
