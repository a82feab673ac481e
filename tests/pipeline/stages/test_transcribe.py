"""Transcription with the real Whisper tiny.en weights, word alignment through whisperx on a tiny random
wav2vec2 CTC folder, and Mandarin through FunASR on a tiny random paraformer-zh folder (the real loading,
alignment and decoding code; the Paraformer text and the word times are meaningless)."""
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from jobs.build_models import (
    PARAFORMER_CHARS, build_nltk_punkt_tab, build_paraformer_tiny, build_wav2vec2_ctc_tiny, build_whisper_tiny_en,
)
from pipeline.segment import punctuate_by_gaps
from pipeline.shards.schema import AsrInfo
from pipeline.stages.transcribe import ParaformerSettings, TranscribeSettings, TranscribeStage
from pipeline.stages.work import RecordingWork, Rejection, SegmentDraft
from pipeline.synthetic import make_dialog

LINES = [("a", "en-us", "The weather will be cold and windy tomorrow morning."),
         ("b", "en-gb", "Please call me when you arrive at the station.")]


MANDARIN = [("a", "cmn", "我们今天下午去学校。"), ("b", "cmn", "好的，我在门口等你。")]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    out = tmp_path_factory.mktemp("models")
    return {"whisper": str(build_whisper_tiny_en(out)), "align_en": str(build_wav2vec2_ctc_tiny(out)),
            "nltk_data": str(build_nltk_punkt_tab(out)), "paraformer": str(build_paraformer_tiny(out))}


def make_stage(models, **changes) -> TranscribeStage:
    cfg = TranscribeSettings(
        model=models["whisper"], device="cpu", compute_type="int8", cpu_threads=2, batch_size=2, beam_size=1,
        align_models={"en": models["align_en"], "zh": None}, nltk_data=models["nltk_data"],
        paraformer=ParaformerSettings(model=models["paraformer"], batch_size=2))
    s = TranscribeStage(replace(cfg, **changes))
    s.setup()
    return s


@pytest.fixture(scope="module")
def stage(models):
    return make_stage(models)


@pytest.fixture(scope="module")
def dialog():
    return make_dialog(LINES, seed=1)


def work_for(dialog, rejected_first=False):
    segments = [SegmentDraft(max(0.0, t.start - 0.2), t.end + 0.2, t.speaker) for t in dialog.turns]
    if rejected_first:
        segments[0] = SegmentDraft(segments[0].start, segments[0].end, "a", rejection=Rejection("diarize", "x"))
    return RecordingWork(source="d.wav", recording_id="0123456789abcdef", audio=dialog.audio,
                         segments=tuple(segments))


def test_segments_get_text_language_confidence_and_word_times(stage, dialog):
    out = stage.process(work_for(dialog))
    for segment, (_, _, truth) in zip(out.segments, LINES):
        said, heard = set(truth.lower().rstrip(".").split()), set(segment.text.lower().rstrip(".").split())
        assert len(said & heard) >= 0.7 * len(said), segment.text
        assert segment.language == "en" and segment.language_prob is None  # .en models have no language id
        assert segment.asr.model == "whisper-tiny.en-ct2"
        assert -3.0 < segment.asr.avg_logprob <= 0.0 and 0.0 <= segment.asr.no_speech_prob <= 1.0
        assert len(segment.words) >= 5
        starts = [w.start for w in segment.words]
        assert starts == sorted(starts)
        assert all(segment.start - 1e-3 <= w.start <= w.end <= segment.end + 1e-3 for w in segment.words)


def test_rejected_segments_are_left_alone(stage, dialog):
    out = stage.process(work_for(dialog, rejected_first=True))
    assert out.segments[0].text is None and out.segments[0].rejection.reason == "x"
    assert out.segments[1].text


def test_languages_outside_the_list_are_rejected(stage, dialog):
    settings = stage.cfg
    stage.cfg = replace(settings, languages=["zh"])  # the loaded models stay
    try:
        out = stage.process(work_for(dialog))
    finally:
        stage.cfg = settings
    assert all(s.rejection is not None and s.rejection.reason == "language" for s in out.segments)
    assert out.segments[0].rejection.metrics["language"] == "en"


@pytest.fixture(scope="module")
def mandarin():
    return make_dialog(MANDARIN, seed=2)


def test_mandarin_goes_through_paraformer_with_character_times_and_pause_punctuation(models, mandarin):
    out = make_stage(models, language="zh").process(work_for(mandarin))
    vocabulary = set(json.loads((Path(models["paraformer"]) / "tokens.json").read_text()))
    for segment in out.segments:
        assert segment.language == "zh" and segment.asr.model == "paraformer-zh-tiny"
        assert "Whisper" in segment.asr.note  # language and confidences still come from Whisper
        assert segment.asr.avg_logprob is not None
        chars = [w.word for w in segment.words]
        assert len(chars) >= 3 and set(chars) <= vocabulary and set(chars) <= set(PARAFORMER_CHARS)
        starts = [w.start for w in segment.words]
        assert starts == sorted(starts)
        assert all(segment.start - 1e-3 <= w.start <= w.end <= segment.end + 0.1 for w in segment.words)
        assert segment.text == punctuate_by_gaps([(w.word, w.start, w.end) for w in segment.words], 0.5, 1.0)


def test_loading_paraformer_prints_nothing_and_leaves_logging_as_it_was(models):
    # FunASR configures the root logger at INFO on import and on every load, and prints its version: in a
    # worker that would reach the driver's console, in a job every library's INFO would. A fresh process,
    # where FunASR is not imported yet.
    script = ("import logging, sys; from pipeline.stages.transcribe import load_paraformer; "
              f"load_paraformer({models['paraformer']!r}, 'cpu', 1); root = logging.getLogger(); "
              "print(logging.getLevelName(root.level), root.handlers)")
    result = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).parents[3], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout == "WARNING []\n"


def test_without_a_paraformer_model_mandarin_keeps_whisper_text_and_says_so(models, mandarin):
    out = make_stage(models, language="zh", paraformer=ParaformerSettings(model=None)).process(work_for(mandarin))
    for segment in out.segments:
        assert segment.asr.model == "whisper-tiny.en-ct2"
        assert segment.asr.note == "zh through Whisper: no Paraformer model configured"
        assert AsrInfo.from_dict(segment.asr.to_dict()) == segment.asr  # the note survives the record round trip
