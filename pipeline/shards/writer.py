"""ShardWriter: whole recordings in, committed WebDataset shards and Parquet manifests out.

Commit protocol per shard, on any storage (the curation job's protocol is in pipeline/stages/write.py):
the tar becomes `shards/NAME.tar` whole (local: temp name, fsync, rename; object store: one upload);
rejected rows tied to the shard go to `rejected/`; last the manifest part becomes `manifest/NAME.parquet`
the same way. The manifest's presence is the commit: readers list shards from manifests, so a crash at
any point leaves nothing half visible.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import tarfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import IO, Mapping, Optional, Sequence

import numpy as np

from pipeline import __version__
from pipeline.shards.codec import encode_flac, encode_npy
from pipeline.shards.layout import DatasetLayout
from pipeline.shards.manifest import (
    FAILED_SCHEMA, MEMBER_AUDIO, MEMBER_ENHANCED, MEMBER_META, MEMBER_TOKENS, REJECTED_SCHEMA,
    failed_rows, manifest_row, manifest_schema, rejected_rows, rows_to_table, write_parquet,
)
from pipeline.shards.schema import SCHEMA_VERSION, FailedRecord, RejectedRecord, SchemaError, SegmentRecord
from pipeline.shards.stats import dataset_totals


@dataclass(frozen=True)
class SegmentSample:
    """A record with its audio (float32 mono in [-1, 1] at the record's sample rate) and optional tokens."""
    record: SegmentRecord
    audio: np.ndarray
    enhanced: Optional[np.ndarray] = None
    tokens: Optional[np.ndarray] = None


@dataclass(frozen=True)
class EncodedSample:
    """A record with its members already encoded: (suffix, bytes) in write order."""
    record: SegmentRecord
    members: tuple[tuple[str, bytes], ...]

    @property
    def num_bytes(self) -> int:
        return sum(len(data) for _, data in self.members)


def encode_sample(sample: SegmentSample) -> EncodedSample:
    """Encode one sample's members (FLAC, JSON, .npy), checked against its record.

    Runs wherever the sample is made (a Ray worker), so the writer only appends bytes.
    """
    rec = sample.record
    if sample.audio.ndim != 1 or len(sample.audio) != rec.audio.num_samples:
        raise SchemaError("audio.num_samples", f"record says {rec.audio.num_samples}, audio has shape "
                          f"{sample.audio.shape}")
    if (sample.enhanced is not None) != rec.audio.has_enhanced:
        raise SchemaError("audio.has_enhanced", f"record says {rec.audio.has_enhanced}, enhanced audio "
                          f"{'given' if sample.enhanced is not None else 'missing'}")
    if (sample.tokens is not None) != (rec.tokens is not None):
        raise SchemaError("tokens", "record and token array must be given together")
    if sample.tokens is not None and len(sample.tokens) != rec.tokens.count:
        raise SchemaError("tokens.count", f"record says {rec.tokens.count}, array has {len(sample.tokens)}")
    members = [(MEMBER_AUDIO, encode_flac(sample.audio, rec.audio.sample_rate))]
    if sample.enhanced is not None:
        if sample.enhanced.shape != sample.audio.shape:
            raise SchemaError("audio.has_enhanced", "enhanced audio differs in length from the original")
        members.append((MEMBER_ENHANCED, encode_flac(sample.enhanced, rec.audio.sample_rate)))
    members.append((MEMBER_META, json.dumps(rec.to_dict(), ensure_ascii=False).encode("utf-8")))
    if sample.tokens is not None:
        members.append((MEMBER_TOKENS, encode_npy(sample.tokens)))
    return EncodedSample(rec, tuple(members))


_HASH_APART_BYTES = 1 << 18  # a sample this large is hashed in the writer's thread (_OpenShard.add)
_COPY_BYTES = 1 << 22  # a member in one write or a few, where tarfile would make 16 KB ones
_hasher: list[ThreadPoolExecutor] = []  # made on first use; a forked child, whose copy has no thread, makes its own
os.register_at_fork(after_in_child=_hasher.clear)


def hashing_thread() -> ThreadPoolExecutor:
    if not _hasher:
        _hasher.append(ThreadPoolExecutor(1, thread_name_prefix="shard-hashes"))
    return _hasher[0]


def member_digests(members: Sequence[tuple[str, bytes]]) -> dict[str, str]:
    return {suffix: hashlib.sha256(data).hexdigest() for suffix, data in members}


class _OpenShard:
    """A tar being written where nobody reads it (a temp name, or a local staging file for an object
    store), with the manifest rows of what it holds."""

    def __init__(self, layout: DatasetLayout, name: str):
        self.name = name
        self._staged = contextlib.ExitStack()
        self.file: IO[bytes] = self._staged.enter_context(layout.storage.open_atomic(layout.shard_tar(name)))
        self.tar = tarfile.open(fileobj=self.file, mode="w", format=tarfile.USTAR_FORMAT, copybufsize=_COPY_BYTES)
        self.rows: list[dict] = []
        self.record_type: type = SegmentRecord  # a conversation dataset's manifest has its extra columns
        self.rejected: list[RejectedRecord] = []
        self.recording_ids: set[str] = set()
        self.num_bytes = 0

    def add(self, sample: EncodedSample) -> None:
        # a large sample's members are hashed in a thread while this one writes them (hashlib releases the GIL,
        # as do writes); a small one's here, where the hand-over would cost more than it saves
        size, record = sample.num_bytes, sample.record
        hashing = hashing_thread().submit(member_digests, sample.members) if size >= _HASH_APART_BYTES else None
        for suffix, data in sample.members:
            info = tarfile.TarInfo(f"{record.key}.{suffix}")
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            self.tar.addfile(info, io.BytesIO(data))
        digests = member_digests(sample.members) if hashing is None else hashing.result()
        self.rows.append(manifest_row(record, self.name, digests, size))
        self.record_type = type(record)
        self.recording_ids.add(record.recording_id)
        self.num_bytes += size

    def close_tar(self) -> None:
        """Make the tar visible under its final name (rename, or one upload)."""
        self.tar.close()
        self._staged.close()

    def abandon(self) -> None:
        try:
            self.tar.close()
        finally:
            self._staged.__exit__(RuntimeError, RuntimeError("abandoned"), None)  # drops the temp file


class ShardWriter:
    """Writes recordings into shards of about `target_bytes` or `target_samples`, whichever comes first.

    A recording never spans shards; a shard holds at least one recording even when that one alone
    exceeds the targets. Names are `{prefix}-{writer_id}-{seq:06d}` with a random writer id, so concurrent
    writers never collide.

    >>> with ShardWriter("out", config={"shards": {...}}) as w:       # doctest: +SKIP
    ...     w.add_recording(samples, rejected=[...])
    """

    def __init__(self, root: str | os.PathLike, *, target_bytes: int = 1 << 30, target_samples: int = 10_000,
                 sample_rate: int = 16000, prefix: str = "shard", clean_orphans: bool = True,
                 config: Optional[dict] = None, models: Optional[dict] = None,
                 storage_options: Optional[Mapping] = None):
        if target_bytes <= 0 or target_samples <= 0:
            raise ValueError("target_bytes and target_samples must be positive")
        self.layout = DatasetLayout.of(root, storage_options)
        self.layout.create()
        if clean_orphans:
            self.layout.remove_orphans()
        self.target_bytes, self.target_samples = target_bytes, target_samples
        self.sample_rate = sample_rate
        self.config, self.models = config or {}, models or {}
        # 48 random bits: unique across concurrent writers on any number of hosts without coordination.
        self.writer_id = uuid.uuid4().hex[:12]
        self.prefix = prefix
        self._seq = 0
        self._part_seq = 0
        self._shard: Optional[_OpenShard] = None
        self._loose_rejected: list[RejectedRecord] = []
        self._failed: list[FailedRecord] = []
        self.committed: list[str] = []

    # -- input ---------------------------------------------------------------------------------

    def add_recording(self, samples: Sequence[SegmentSample], rejected: Sequence[RejectedRecord] = ()) -> None:
        """Add all kept segments of one recording (in time order) and the rows of its dropped segments."""
        self.add_encoded_recording([encode_sample(s) for s in samples], rejected)

    def add_encoded_recording(self, samples: Sequence[EncodedSample], rejected: Sequence[RejectedRecord] = ()) -> None:
        """`add_recording` for samples encoded elsewhere (see encode_sample)."""
        if not samples:
            self.add_rejected(rejected)
            return
        recording_ids = {s.record.recording_id for s in samples} | {r.recording_id for r in rejected}
        if len(recording_ids) != 1:
            raise ValueError(f"one recording per call, got {sorted(recording_ids)}")
        indices = [s.record.segment_index for s in samples]
        if indices != sorted(set(indices)):
            raise ValueError(f"segments must be in order without repeats, got indices {indices}")
        for s in samples:
            if s.record.audio.sample_rate != self.sample_rate:
                raise SchemaError("audio.sample_rate", f"{s.record.audio.sample_rate} Hz, the dataset is "
                                  f"{self.sample_rate} Hz")
        size = sum(s.num_bytes for s in samples)
        shard = self._shard
        if shard is not None and shard.rows and (shard.num_bytes + size > self.target_bytes
                                                 or len(shard.rows) + len(samples) > self.target_samples):
            self.flush()
        shard = self._shard or self._open()
        for sample in samples:
            shard.add(sample)
        shard.rejected.extend(rejected)
        if shard.num_bytes >= self.target_bytes or len(shard.rows) >= self.target_samples:
            self.flush()

    def add_rejected(self, records: Sequence[RejectedRecord]) -> None:
        """Record recordings or segments dropped whole (not tied to a shard)."""
        self._loose_rejected.extend(records)

    def add_failed(self, records: Sequence[FailedRecord]) -> None:
        self._failed.extend(records)

    # -- output --------------------------------------------------------------------------------

    def _open(self) -> _OpenShard:
        name = f"{self.prefix}-{self.writer_id}-{self._seq:06d}"
        self._seq += 1
        self._shard = _OpenShard(self.layout, name)
        return self._shard

    def _part_name(self) -> str:
        self._part_seq += 1
        return f"{self.writer_id}-{self._part_seq:06d}.parquet"

    def flush(self) -> None:
        """Commit the open shard (tar, its rejected rows, then manifest) and write pending ledger parts."""
        shard, self._shard = self._shard, None
        if shard is not None:
            try:
                shard.close_tar()
            except BaseException:
                shard.abandon()
                raise
            tied = [replace(r, shard=shard.name) for r in shard.rejected]
            if tied:
                self._write_part(self.layout.rejected, rows_to_table(rejected_rows(tied), REJECTED_SCHEMA))
            write_parquet(self.layout.storage, self.layout.shard_manifest(shard.name),
                          rows_to_table(shard.rows, manifest_schema(shard.record_type)))  # the commit
            self.committed.append(shard.name)
        if self._loose_rejected:
            self._write_part(self.layout.rejected, rows_to_table(rejected_rows(self._loose_rejected), REJECTED_SCHEMA))
            self._loose_rejected = []
        if self._failed:
            self._write_part(self.layout.failed, rows_to_table(failed_rows(self._failed), FAILED_SCHEMA))
            self._failed = []

    def _write_part(self, directory: str, table) -> None:
        write_parquet(self.layout.storage, self.layout.part(directory, self._part_name()), table)

    def close(self, summary: Optional[dict] = None) -> None:
        """Commit everything pending and rewrite dataset.json with totals over all committed data
        (and the summary of the run that wrote it, when given)."""
        self.flush()
        write_dataset_info(self.layout, self.config, self.models, summary)

    def abort(self) -> None:
        """Drop the open shard without committing it (its recordings will be redone by a rerun)."""
        if self._shard is not None:
            self._shard.abandon()
            self._shard = None

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_dataset_info(layout: DatasetLayout, config: dict, models: dict, summary: Optional[dict] = None) -> dict:
    """Write dataset.json: schema version, resolved config, models, and totals from the manifests."""
    info = {
        "schema_version": SCHEMA_VERSION,
        "pipeline_version": __version__,
        "updated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "config": config,
        "models": models,
        "totals": dataset_totals(layout),
        "last_run": summary,
    }
    layout.storage.write_bytes(layout.info, json.dumps(info, indent=2, sort_keys=True).encode("utf-8"))
    return info
