"""Stage 8 (worker side), write: packed recordings in, committed shards on the dataset's storage out.

This module is the reference for how the curation job commits data (README, "The curated dataset").

Writers run in the Ray workers as tasks, at most `resources.write.concurrency` at once; each takes a
batch of `resources.write.batch_size` whole recordings, fills shards with them (a recording never spans
shards, its segments stay in order) and commits every shard before it returns, so nothing is left open
when the stream ends and nothing is kept from one batch to the next. The driver gets back one small `RecordingOutcome` per recording, never audio.

Commit, per shard, on every backend (pipeline/shards/storage.py):
1. the tar becomes `shards/NAME.tar` whole: on a local disk through a temp name, fsync and rename; on an
   object store by one upload under its final name (a PUT, or a completed multipart upload, is atomic);
2. the rejected rows of its recordings go to `rejected/`;
3. last, its manifest part `manifest/NAME.parquet`: the manifest is the commit. A tar without one is
   an orphan, invisible to every reader.

Names never collide: NAME is `shard-{12 random hex}-{sequence}`, one random id per batch.

Retries never make a recording visible twice. A worker that dies after a manifest landed has its batch
retried by Ray, and the retry commits the same recordings again in new shards. Both manifests are
valid, so every reader applies one rule (`manifest.duplicate_owners`): a recording's rows count only in
the first shard by name that holds it; its rows elsewhere are superseded duplicates, skipped by the
ledger, stats, verify, the reader and the trainer alike (rejected rows tied to a superseded shard and
repeated loose rejected rows likewise; failed rows count only for recordings without another outcome).
The winner is a pure function of the set of committed manifests, so every reader, at any time, agrees.
`audiomill-shards gc` deletes orphans older than a grace period and shards holding only superseded
rows; it never deletes anything a counted manifest row references. Orphans are otherwise removed once
at job start, before any writer runs, never under a live writer.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Optional, Sequence

from pipeline.capacity import WriteResources
from pipeline.shards.writer import ShardWriter
from pipeline.stages.pack import PackedRecording


@dataclass(frozen=True)
class ShardTargets:
    """The `shards` section: a shard is closed at the first recording that takes it past either target."""
    target_bytes: int = 1 << 30
    target_samples: int = 10000

    def problems(self) -> list[str]:
        return [f"shards.{name}={getattr(self, name)} must be a positive integer"
                for name in ("target_bytes", "target_samples") if getattr(self, name) < 1]


# each call's whole recordings become shards; batch_size recordings per call
WRITE_RESOURCES = WriteResources(concurrency=16, num_cpus=1, memory_mb=4096, batch_size=8)


@dataclass(frozen=True)
class WriteSettings:
    """Where and how the write stage commits (from `output`, `shards`, `sample_rate`, `storage_options`)."""
    output: str
    target_bytes: int
    target_samples: int
    sample_rate: int
    storage_options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class RecordingOutcome:
    """What the driver learns of one written recording: counts, durations and reasons, no audio."""
    source: str
    recording_id: str
    outcome: str                                   # committed, rejected or failed
    seconds: float
    seconds_out: float = 0.0
    segments: int = 0
    rejected: tuple[str, ...] = ()                 # "stage/reason" per rejected row
    failed: Optional[str] = None                   # "stage/error_type"
    stage_seconds: tuple[tuple[str, float], ...] = ()
    bytes_written: int = 0


def outcome_of(packed: PackedRecording, write_seconds: float) -> RecordingOutcome:
    f = packed.failure
    return RecordingOutcome(
        source=packed.source, recording_id=packed.recording_id, outcome=packed.outcome, seconds=packed.seconds,
        seconds_out=sum(s.record.duration for s in packed.samples), segments=len(packed.samples),
        rejected=tuple(f"{r.stage}/{r.reason}" for r in packed.rejected),
        failed=None if f is None else f"{f.stage}/{f.error_type}",
        stage_seconds=packed.stage_seconds + (("write", write_seconds),),
        bytes_written=sum(s.num_bytes for s in packed.samples))


def write_recordings(packed: Sequence[PackedRecording], settings: WriteSettings) -> list[RecordingOutcome]:
    """Commit a batch of whole recordings (shards, rejected and failed parts) and say what became of each."""
    started = time.perf_counter()
    writer = ShardWriter(settings.output, target_bytes=settings.target_bytes, target_samples=settings.target_samples,
                         sample_rate=settings.sample_rate, clean_orphans=False,
                         storage_options=settings.storage_options)
    try:
        for p in packed:
            if p.failure:
                writer.add_failed([p.failure])
            elif p.samples:
                writer.add_encoded_recording(p.samples, p.rejected)
            else:
                writer.add_rejected(list(p.rejected))
        writer.flush()
    except BaseException:
        writer.abort()
        raise
    per_recording = (time.perf_counter() - started) / max(1, len(packed))
    return [outcome_of(p, per_recording) for p in packed]
