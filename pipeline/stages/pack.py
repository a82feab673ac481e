"""Stage 7 (worker side), pack: turn a finished recording into encoded shard members and ledger rows,
so the writers (stage 8, pipeline/stages/write.py) only append bytes. Segment times become seconds
relative to the source."""
from __future__ import annotations

import time
from dataclasses import dataclass, fields, replace
from typing import Optional

from pipeline.capacity import TaskResources
from pipeline.shards.schema import (
    AudioInfo, FailedRecord, PipelineInfo, RejectedRecord, SegmentRecord, TokenInfo, printable, segment_key,
)
from pipeline.shards.writer import EncodedSample, SegmentSample, encode_sample
from pipeline.stages.work import RecordingWork, SegmentDraft


PACK_RESOURCES = TaskResources(num_cpus=1, memory_mb=2048)


@dataclass(frozen=True)
class PackedRecording:
    """Everything the writer needs for one recording: exactly one of the three outcomes."""
    source: str
    recording_id: str
    seconds: float
    source_seconds: float
    samples: tuple[EncodedSample, ...] = ()
    rejected: tuple[RejectedRecord, ...] = ()
    failure: Optional[FailedRecord] = None
    stage_seconds: tuple[tuple[str, float], ...] = ()

    @property
    def outcome(self) -> str:
        return "failed" if self.failure else ("committed" if self.samples else "rejected")


# What the stages label a segment with and the record keeps as it is: every field the two share by name,
# less those pack derives (times relative to the source, tokens as a count): a label added to both flows through.
_DERIVED = {"start", "end", "words", "tokens"}
_LABELS = tuple(sorted({f.name for f in fields(SegmentDraft)} & {f.name for f in fields(SegmentRecord)} - _DERIVED))


def labels_of(segment: SegmentDraft) -> dict:
    return {name: getattr(segment, name) for name in _LABELS}


def pack_recording(work: RecordingWork, pipeline: PipelineInfo) -> PackedRecording:
    started = time.perf_counter()
    packed = _pack(work, pipeline)
    return replace(packed, stage_seconds=packed.stage_seconds + (("pack", time.perf_counter() - started),))


def _pack(work: RecordingWork, pipeline: PipelineInfo) -> PackedRecording:
    work = replace(work, source=printable(work.source))  # what records and ledgers say; the id has the bytes
    common = dict(source=work.source, recording_id=work.recording_id, seconds=work.seconds,
                  source_seconds=work.source_seconds or 0.0, stage_seconds=work.stage_seconds)
    if work.failure is not None:
        f = work.failure
        return PackedRecording(**common, failure=FailedRecord(work.source, work.recording_id, f.stage, f.error_type,
                                                               printable(f.message)))
    if work.rejection is not None:
        r = work.rejection
        return PackedRecording(**common, rejected=(RejectedRecord(
            source=work.source, recording_id=work.recording_id, stage=r.stage, reason=r.reason, metrics=r.metrics,
            duration=work.seconds),))
    sr, samples, rejected, previous_end = work.sample_rate, [], [], None
    for index, seg in enumerate(work.segments):
        key = segment_key(work.recording_id, index)
        if seg.rejection is not None:
            rejected.append(RejectedRecord(source=work.source, recording_id=work.recording_id, key=key,
                                           stage=seg.rejection.stage, reason=seg.rejection.reason,
                                           metrics=seg.rejection.metrics, duration=seg.duration))
            continue
        first, last = round(seg.start * sr), round(seg.end * sr)
        start, end = work.offset + first / sr, work.offset + last / sr
        record = SegmentRecord(
            **labels_of(seg), recording_id=work.recording_id, source=work.source, segment_index=index,
            start=start, end=end, gap_before=None if previous_end is None else max(0.0, start - previous_end),
            words=tuple(replace(w, start=w.start + work.offset, end=w.end + work.offset) for w in seg.words),
            audio=AudioInfo(sr, last - first, has_enhanced=work.enhanced is not None),
            tokens=None if seg.tokens is None else TokenInfo(count=len(seg.tokens), model=seg.token_model),
            pipeline=pipeline)
        previous_end = end
        samples.append(encode_sample(SegmentSample(
            record=record, audio=work.audio[first:last],
            enhanced=None if work.enhanced is None else work.enhanced[first:last], tokens=seg.tokens)))
    return PackedRecording(**common, samples=tuple(samples), rejected=tuple(rejected))
