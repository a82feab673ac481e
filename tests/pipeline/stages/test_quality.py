"""The quality stage's speech ratio: from the diarization's Silero regions where it ran them, otherwise
from the VAD on the segment's own audio; both measure the same speech."""
from dataclasses import replace

import pytest

from jobs.cli import load_settings
from pipeline.config import CurateConfig
from pipeline.stages.diarize import DiarizeStage
from pipeline.stages.quality import QualityStage, overlap_seconds
from pipeline.stages.work import RecordingWork
from pipeline.synthetic import make_dialog

LINES = [("alice", "en-us+f4", "The quick brown fox jumps over the lazy dog."),
         ("carol", "en-029", "Please call me when you arrive at the station tomorrow."),
         ("alice", "en-us+f4", "We measured the signal at three different frequencies.")]


def test_overlap_seconds():
    regions = [(1.0, 2.0), (3.0, 5.0)]
    assert overlap_seconds(0.0, 10.0, regions) == 3.0
    assert overlap_seconds(1.5, 4.0, regions) == pytest.approx(1.5)
    assert overlap_seconds(2.0, 3.0, regions) == 0.0


@pytest.mark.parametrize("backend", ["vad", "fixed"])
def test_the_speech_ratio_reuses_the_diarizations_vad_where_it_ran(backend):
    dialog = make_dialog(LINES, seed=5, noise_level=0.002, gap_seconds=1.5)
    cfg = load_settings(CurateConfig, "configs/curate/demo.yaml", [
        "output=x", f"diarize.backend={backend}", "diarize.segment_merging=false", "quality.dnsmos=false"])
    diarize = DiarizeStage(cfg.diarize, 16000)
    diarize.setup()
    work = diarize.process(RecordingWork(source="x.wav", recording_id="0123456789abcdef", audio=dialog.audio))
    quality = QualityStage(cfg.quality, cfg.diarize.vad, 16000)
    quality.setup()
    if backend == "fixed":  # no Silero pass in diarization (as with pyannote): the segments go through the VAD
        assert work.speech_regions is None and quality.process(work).segments[0].quality.speech_ratio > 0.5
        return
    assert work.speech_regions and len(work.speech_regions) >= 3  # Silero's speech, kept for the quality stage
    reused = quality.process(work)
    alone = quality.process(replace(work, speech_regions=None))
    for segment, again in zip(reused.segments, alone.segments):
        assert segment.quality.speech_ratio == pytest.approx(
            min(1.0, overlap_seconds(segment.start, segment.end, work.speech_regions) / segment.duration))
        # the VAD run on the segment alone finds nearly the same speech
        assert segment.quality.speech_ratio == pytest.approx(again.quality.speech_ratio, abs=0.15)
