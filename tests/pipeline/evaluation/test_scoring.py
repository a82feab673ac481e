"""DER, JER, WER and CER against expectations computed by hand, including a perfect and an empty hypothesis."""
import pytest

from pipeline.evaluation.references import Reference, SpeakerTurn
from pipeline.evaluation.scoring import HypothesisSegment as Hyp
from pipeline.evaluation.scoring import ScoringSettings, normalise_text, score_recordings

NO_COLLAR = ScoringSettings(collar_seconds=0)
# alice speaks 0-10 s, bob 10-20 s: 20 s of speech, 4 words
REFERENCE = {"r": Reference(turns=[SpeakerTurn(0, 10, "alice"), SpeakerTurn(10, 20, "bob")], has_speakers=True,
                            text="The quick, brown fox.")}


def score(segments, settings=NO_COLLAR, references=REFERENCE):
    scores, overall = score_recordings(references, {"r": segments}, settings)
    return scores[0]


def test_a_perfect_hypothesis_scores_zero_whatever_its_labels_are_called():
    s = score([Hyp(0, 10, "S0", "the quick brown fox"), Hyp(10, 20, "S1")])
    assert (s.der, s.jer, s.missed, s.false_alarm, s.confusion, s.wer, s.cer) == (0, 0, 0, 0, 0, 0, 0)


def test_an_empty_hypothesis_misses_everything():
    s = score([])
    assert (s.der, s.jer, s.missed, s.wer, s.cer) == (1, 1, 1, 1, 1)


def test_missed_speech_false_alarm_and_word_errors():
    # bob's 15-20 s is missed (5 s), 20-22 s is a false alarm (2 s): DER 7/20; JER: alice 0, bob 1 - 5/10
    # WER: 'fox' -> 'box' and 'jumps' inserted, 2 of 4 words; CER: 1 substitution + 6 inserted of 19 characters
    s = score([Hyp(0, 10, "S0", "the quick brown box jumps"), Hyp(10, 15, "S1"), Hyp(20, 22, "S2")])
    assert (s.der, s.missed, s.false_alarm, s.confusion) == pytest.approx((0.35, 0.25, 0.10, 0.0))
    assert s.jer == pytest.approx(0.25)
    assert s.wer == pytest.approx(0.5) and s.cer == pytest.approx(7 / 19)


def test_confusion_and_the_collar():
    # S0 runs 5 s into bob's turn: 5 s confused; JER: alice 1 - 10/15, bob 1 - 5/10
    s = score([Hyp(0, 15, "S0"), Hyp(15, 20, "S1")])
    assert (s.der, s.confusion) == pytest.approx((0.25, 0.25)) and s.jer == pytest.approx((1 / 3 + 1 / 2) / 2)
    # a boundary 0.2 s late is forgiven by a 0.25 s collar on each side of every reference boundary (at 0,
    # 10 and 20 s: 0.25 + 0.5 + 0.25 s of speech are then left out of the total, as md-eval -c 0.25 does)
    s = score([Hyp(0, 10.2, "S0"), Hyp(10.2, 20, "S1")], ScoringSettings(collar_seconds=0.25))
    assert s.der == 0 and s.speech_seconds == pytest.approx(19.0)


def test_the_uem_limits_what_is_scored():
    reference = {"r": Reference(turns=REFERENCE["r"].turns, uem=[(0.0, 10.0)], has_speakers=True)}
    s = score([Hyp(0, 10, "S0")], references=reference)  # bob's turn lies outside the scored region
    assert s.der == 0 and s.speech_seconds == 10


def test_overall_rates_pool_errors_over_all_recordings():
    references = {"a": Reference(turns=[SpeakerTurn(0, 30, "x")], has_speakers=True, text="one two three"),
                  "b": Reference(turns=[SpeakerTurn(0, 10, "y")], has_speakers=True, text="four")}
    scores, overall = score_recordings(references, {"a": [Hyp(0, 30, "S0", "one two three")]}, NO_COLLAR)
    assert [s.der for s in scores] == [0, 1] and not scores[1].in_dataset
    assert overall.der == pytest.approx(10 / 40) and overall.wer == pytest.approx(1 / 4)


def test_the_stated_text_normalisation():
    assert normalise_text("Don't 'quote' me\u2014OK?  It\u2019s 5_000.", NO_COLLAR) == "don't quote me ok it's 5 000"
    assert normalise_text("Hello, World", ScoringSettings(lowercase=False, strip_punctuation=False)) == "Hello, World"
