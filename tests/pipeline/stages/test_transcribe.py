"""Transcription with the real Whisper tiny.en weights and word alignment through whisperx on a tiny
random wav2vec2 CTC folder (the real loading and alignment code; the times are meaningless)."""
import pytest
from omegaconf import OmegaConf

from jobs.build_models import build_nltk_punkt_tab, build_wav2vec2_ctc_tiny, build_whisper_tiny_en
from pipeline.stages.transcribe import TranscribeStage
from pipeline.stages.work import RecordingWork, Rejection, SegmentDraft
from pipeline.synthetic import make_dialog

LINES = [("a", "en-us", "The weather will be cold and windy tomorrow morning."),
         ("b", "en-gb", "Please call me when you arrive at the station.")]


@pytest.fixture(scope="module")
def stage(tmp_path_factory):
    out = tmp_path_factory.mktemp("models")
    cfg = OmegaConf.create(dict(
        enabled=True, model=str(build_whisper_tiny_en(out)), device="cpu", compute_type="int8", cpu_threads=2,
        batch_size=2, beam_size=1, languages=["en", "zh"], english_only_language="en",
        align_models={"en": str(build_wav2vec2_ctc_tiny(out)), "zh": None}, nltk_data=str(build_nltk_punkt_tab(out))))
    s = TranscribeStage(cfg)
    s.setup()
    return s


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
    stage.cfg.languages = ["zh"]
    try:
        out = stage.process(work_for(dialog))
    finally:
        stage.cfg.languages = ["en", "zh"]
    assert all(s.rejection is not None and s.rejection.reason == "language" for s in out.segments)
    assert out.segments[0].rejection.metrics["language"] == "en"
