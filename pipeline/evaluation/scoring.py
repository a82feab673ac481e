"""Scores of a dataset's labels against references: DER, JER, missed speech and false alarm
(pyannote.metrics), WER and CER (jiwer), per recording and over all of them.

Text normalisation, before WER and CER, on both sides alike: Unicode NFKC, lower case, every character
that is not a letter, digit, apostrophe or space becomes a space (an apostrophe only counts inside a
word: "don't" stays, "'quoted'" loses its quotes), whitespace collapsed. Each can be switched off.
Overall DER is total error over total reference speech (not a mean of per-recording rates); overall WER
and CER likewise count errors over all reference words and characters.
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import asdict, dataclass
from typing import Optional, Sequence

from pipeline.evaluation.references import Reference


@dataclass(frozen=True)
class HypothesisSegment:
    """One labelled segment of the pipeline's output, in seconds from the start of the source."""
    start: float
    end: float
    speaker: str
    text: Optional[str] = None


@dataclass(frozen=True)
class ScoringSettings:
    """`collar_seconds` forgiven on each side of every reference boundary, as md-eval's `-c` (the field's
    usual 0.25 s; 0 for none; pyannote.metrics' own `collar` is the whole width, twice this);
    `skip_overlap`: leave out regions where references overlap; the text normalisation's switches."""
    collar_seconds: float = 0.25
    skip_overlap: bool = False
    lowercase: bool = True
    strip_punctuation: bool = True

    def problems(self) -> list[str]:
        return [] if self.collar_seconds >= 0 else [f"collar_seconds={self.collar_seconds:g} must be >= 0"]


@dataclass
class RecordingScore:
    """Rates are fractions of the reference's speech (DER, missed, false alarm, confusion) or of its words
    and characters (WER, CER); None where the reference has no speakers or no transcript."""
    name: str
    speech_seconds: float = 0.0
    der: Optional[float] = None
    jer: Optional[float] = None
    missed: Optional[float] = None
    false_alarm: Optional[float] = None
    confusion: Optional[float] = None
    wer: Optional[float] = None
    cer: Optional[float] = None
    reference_words: int = 0
    in_dataset: bool = True

    def to_dict(self) -> dict:
        return asdict(self)


_NOT_A_WORD_CHARACTER = re.compile(r"[^\w' ]|_")
_LONE_APOSTROPHE = re.compile(r"(?<!\w)'|'(?!\w)")


def normalise_text(text: str, settings: ScoringSettings) -> str:
    text = unicodedata.normalize("NFKC", text)
    if settings.lowercase:
        text = text.lower()
    if settings.strip_punctuation:
        text = _LONE_APOSTROPHE.sub(" ", _NOT_A_WORD_CHARACTER.sub(" ", text.replace("\u2019", "'")))
    return " ".join(text.split())


def _errors(reference: str, hypothesis: str, characters: bool) -> tuple[int, int]:
    """(errors, reference units) of one pair: substitutions + deletions + insertions, and words or characters.
    An empty hypothesis deletes every reference unit; an empty reference makes every hypothesis unit an
    insertion (jiwer needs a non-empty reference, so those two cases are counted here)."""
    import jiwer

    def count(text: str) -> int:  # jiwer's characters include the spaces between words
        return len(text) if characters else len(text.split())

    if not reference:
        return count(hypothesis), 0
    if not hypothesis:
        return count(reference), count(reference)
    out = jiwer.process_characters(reference, hypothesis) if characters else jiwer.process_words(reference, hypothesis)
    return out.substitutions + out.deletions + out.insertions, out.substitutions + out.deletions + out.hits


def _rate(errors: float, total: float) -> Optional[float]:
    return errors / total if total else None


def score_recordings(references: dict[str, Reference], hypotheses: dict[str, Sequence[HypothesisSegment]],
                     settings: ScoringSettings) -> tuple[list[RecordingScore], RecordingScore]:
    """Per-recording scores (sorted by name) and the overall one, for every reference recording; one the
    dataset lacks is scored against an empty hypothesis (all missed) and marked `in_dataset=False`."""
    from pyannote.core import Annotation, Segment, Timeline
    from pyannote.metrics.diarization import DiarizationErrorRate, JaccardErrorRate

    collar = 2 * settings.collar_seconds  # pyannote's collar spans both sides of a boundary
    der_metric = DiarizationErrorRate(collar=collar, skip_overlap=settings.skip_overlap)
    jer_metric = JaccardErrorRate(collar=collar, skip_overlap=settings.skip_overlap)
    totals = {"speech": 0.0, "missed": 0.0, "false_alarm": 0.0, "confusion": 0.0,
              "word_errors": 0, "words": 0, "char_errors": 0, "chars": 0}
    scores = []
    for name in sorted(references):
        reference, segments = references[name], sorted(hypotheses.get(name, ()), key=lambda s: (s.start, s.end))
        score = RecordingScore(name=name, in_dataset=name in hypotheses)
        if reference.has_speakers:
            truth, labels = Annotation(uri=name), Annotation(uri=name)
            for turn in reference.turns:
                truth[Segment(turn.start, turn.end)] = turn.speaker
            for segment in segments:
                labels[Segment(segment.start, segment.end)] = segment.speaker
            # scored regions: the UEM, else from 0 to the last reference or hypothesis end (pyannote would
            # otherwise guess the union of both extents, and warn about it)
            end = max([t.end for t in reference.turns] + [s.end for s in segments] + [0.0])
            uem = Timeline([Segment(a, b) for a, b in (reference.uem or [(0.0, end)])], uri=name)
            parts = der_metric(truth, labels, uem=uem, detailed=True)
            jer = jer_metric(truth, labels, uem=uem)
            speech = parts["total"]
            score.speech_seconds = speech
            score.der = _rate(parts["missed detection"] + parts["false alarm"] + parts["confusion"], speech)
            score.missed = _rate(parts["missed detection"], speech)
            score.false_alarm = _rate(parts["false alarm"], speech)
            score.confusion = _rate(parts["confusion"], speech)
            score.jer = float(jer) if speech else None
            totals["speech"] += speech
            for key, component in (("missed", "missed detection"), ("false_alarm", "false alarm"),
                                   ("confusion", "confusion")):
                totals[key] += parts[component]
        if reference.text is not None:
            truth_text = normalise_text(reference.text, settings)
            said = normalise_text(" ".join(s.text for s in segments if s.text), settings)
            word_errors, words = _errors(truth_text, said, characters=False)
            char_errors, chars = _errors(truth_text, said, characters=True)
            score.wer, score.cer, score.reference_words = _rate(word_errors, words), _rate(char_errors, chars), words
            totals["word_errors"] += word_errors
            totals["words"] += words
            totals["char_errors"] += char_errors
            totals["chars"] += chars
        scores.append(score)
    speech = totals["speech"]
    overall = RecordingScore(
        name="overall", speech_seconds=speech,
        der=_rate(totals["missed"] + totals["false_alarm"] + totals["confusion"], speech),
        jer=abs(jer_metric) if speech else None, missed=_rate(totals["missed"], speech),
        false_alarm=_rate(totals["false_alarm"], speech), confusion=_rate(totals["confusion"], speech),
        wer=_rate(totals["word_errors"], totals["words"]), cer=_rate(totals["char_errors"], totals["chars"]),
        reference_words=totals["words"], in_dataset=all(s.in_dataset for s in scores))
    return scores, overall
