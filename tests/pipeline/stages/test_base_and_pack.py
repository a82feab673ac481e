"""Failure isolation in run_stage, and pack: source-relative times, the three outcomes."""
from dataclasses import replace

import numpy as np

from pipeline.shards import PipelineInfo
from pipeline.stages.base import Stage, run_stage
from pipeline.stages.pack import pack_recording
from pipeline.stages.work import Failure, RecordingWork, Rejection, SegmentDraft


class HalvesAudio(Stage):
    """Fails on recordings whose source ends in 'bad.wav', like a model choking on one input."""
    name = "halve"

    def process(self, work):
        if work.source.endswith("bad.wav"):
            raise RuntimeError("cannot handle this one")
        return replace(work, audio=work.audio / 2)


def work(source, seconds=2.0, **changes):
    fields = {"recording_id": "0123456789abcdef", "audio": np.ones(int(seconds * 16000), dtype=np.float32)}
    return RecordingWork(source=source, **{**fields, **changes})


def test_one_bad_recording_fails_alone_and_the_rest_go_on():
    works = [work("a.wav"), work("bad.wav"), work("c.wav"), work("d.wav", failure=Failure("decode", "X", "y"))]
    out = run_stage(HalvesAudio(), works)
    assert [w.failure.stage if w.failure else None for w in out] == [None, "halve", None, "decode"]
    assert out[1].failure.message == "cannot handle this one" and out[1].audio is None
    assert out[0].audio.max() == 0.5 and out[2].audio.max() == 0.5
    assert [name for name, _ in out[0].stage_seconds] == ["halve"] and out[3].stage_seconds == ()


PIPELINE = PipelineInfo("0.1.0", "abc")


def test_pack_makes_source_relative_samples_and_rejected_rows():
    segments = (SegmentDraft(0.5, 1.5, "S0", text="one"),
                SegmentDraft(1.6, 1.8, "S0", rejection=Rejection("diarize", "too_short", {"duration": 0.2})),
                SegmentDraft(2.0, 3.5, "S1", text="two"))
    packed = pack_recording(work("long.wav", seconds=4.0, session=2, offset=120.0, segments=segments,
                                 recording_id="0123456789abcdef-s0002"), PIPELINE)
    assert packed.outcome == "committed"
    records = [s.record for s in packed.samples]
    assert [(r.segment_index, r.start, r.end) for r in records] == [(0, 120.5, 121.5), (2, 122.0, 123.5)]
    assert records[1].gap_before == 0.5 and records[0].audio.num_samples == 16000
    assert [r.key for r in packed.rejected] == ["0123456789abcdef-s0002_000001"]
    assert packed.rejected[0].reason == "too_short" and packed.rejected[0].metrics == {"duration": 0.2}


def test_pack_failed_and_wholly_rejected_recordings():
    failed = pack_recording(work("x.wav", failure=Failure("decode", "DecodeError", "empty")), PIPELINE)
    assert failed.outcome == "failed" and failed.failure.message == "empty" and not failed.samples
    rejected = pack_recording(work("s.wav", rejection=Rejection("diarize", "no_speech")), PIPELINE)
    assert rejected.outcome == "rejected" and rejected.rejected[0].key is None
    assert rejected.rejected[0].reason == "no_speech"
