"""Check every committed shard against its manifest: members, checksums, audio, schema, token counts."""
from __future__ import annotations

import hashlib
import json
import tarfile
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from pipeline.shards.codec import decode_audio, decode_npy
from pipeline.shards.layout import DatasetLayout
from pipeline.shards.manifest import (
    MEMBER_ENHANCED, MEMBER_META, MEMBER_TOKENS, duplicate_owners, expected_members, read_manifest, rows_by_shard,
)
from pipeline.shards.members import iter_members, member_limits
from pipeline.shards.schema import SchemaError, expected_tokens, parse_record

# Stored audio may differ from end-start by rounding to whole samples at both ends.
DURATION_TOLERANCE_SAMPLES = 2


@dataclass(frozen=True)
class Problem:
    shard: str
    key: Optional[str]
    message: str

    def __str__(self) -> str:
        return f"{self.shard}{'/' + self.key if self.key else ''}: {self.message}"


def check_sample(row: dict, members: dict[str, bytes]) -> list[str]:
    """What is wrong with one sample's members against its manifest row (empty list: nothing)."""
    key, problems = row["key"], []
    for name, digest in expected_members(row).items():
        if name not in members:
            problems.append(f"missing member {name}")
        elif hashlib.sha256(members[name]).hexdigest() != digest:
            problems.append(f"sha256 mismatch in {name}")
    if problems:
        return problems  # decoding damaged bytes would only repeat the same finding
    try:
        record = parse_record(json.loads(members[f"{key}.{MEMBER_META}"]))
    except (ValueError, SchemaError) as e:
        return [f"invalid metadata: {e}"]
    if record.key != key:
        problems.append(f"metadata key {record.key} differs from manifest key")
    for suffix in ("flac", MEMBER_ENHANCED):
        name = f"{key}.{suffix}"
        if name not in members:
            continue
        try:
            audio, sample_rate = decode_audio(members[name])
        except Exception as e:  # soundfile raises its own error types for undecodable bytes
            problems.append(f"{name} does not decode: {e}")
            continue
        if sample_rate != record.audio.sample_rate or len(audio) != record.audio.num_samples:
            problems.append(f"{name}: {len(audio)} samples at {sample_rate} Hz, record says "
                            f"{record.audio.num_samples} at {record.audio.sample_rate} Hz")
        elif abs(len(audio) - record.duration * sample_rate) > DURATION_TOLERANCE_SAMPLES:
            problems.append(f"{name}: {len(audio) / sample_rate:.4f} s of audio for a "
                            f"{record.duration:.4f} s segment")
    token_name = f"{key}.{MEMBER_TOKENS}"
    if record.tokens is not None:
        if token_name not in members:
            problems.append(f"record has tokens but no {token_name}")
        else:
            try:
                tokens = decode_npy(members[token_name])
            except ValueError as e:
                return problems + [f"{token_name} does not decode: {e}"]
            expected = expected_tokens(record)
            if tokens.ndim != 1 or not np.issubdtype(tokens.dtype, np.integer):
                problems.append(f"{token_name}: expected a 1-D integer array, got {tokens.dtype} {tokens.shape}")
            elif len(tokens) != record.tokens.count or len(tokens) != expected:
                problems.append(f"{token_name}: {len(tokens)} tokens, record says {record.tokens.count}, "
                                f"12.5 Hz over {record.audio.seconds:.3f} s of audio gives {expected}")
    return problems


def verify_shard(layout: DatasetLayout, shard: str, rows: list[dict], superseded: list[dict] = ()) -> list[Problem]:
    """Stream one tar, checking each sample as soon as its members are read (memory: one sample);
    samples of `superseded` rows (duplicates another shard owns) are passed over."""
    path = layout.shard_tar(shard)
    if not layout.storage.is_file(path):
        return [Problem(shard, None, f"manifest has {len(rows)} samples but {layout.storage.show(path)} is missing")]
    rows_by_key = {row["key"]: row for row in rows}
    # a member the manifest does not promise, or larger than promised, is never read
    limits = member_limits(rows, superseded)
    problems: list[Problem] = []
    current_key, current = None, {}

    def finish_sample() -> None:
        if current_key in rows_by_key:
            row = rows_by_key.pop(current_key)
            problems.extend(Problem(shard, row["key"], m) for m in check_sample(row, current))

    try:
        with layout.storage.open_read(path) as stream:
            for member in iter_members(stream, limits):
                if member.problem:
                    problems.append(Problem(shard, None, member.problem))
                    continue
                key = member.name.split(".", 1)[0]
                if key != current_key:
                    finish_sample()
                    current_key, current = key, {}
                current[member.name] = member.data
    except (tarfile.TarError, EOFError, OSError) as e:
        problems.append(Problem(shard, None, f"tar is truncated or unreadable: {e}"))
    finish_sample()
    for row in rows_by_key.values():  # samples whose members never came
        problems.extend(Problem(shard, row["key"], m) for m in check_sample(row, {}))
    return problems


def verify_dataset(layout: DatasetLayout, progress: Callable[[int, int, str], None] = lambda i, n, s: None
                   ) -> tuple[int, list[Problem]]:
    """Verify every committed shard; returns (samples checked, problems)."""
    owners = duplicate_owners(layout.require())
    table = read_manifest(layout, owners=owners)
    rows = rows_by_shard(table)
    superseded = rows_by_shard(read_manifest(layout, superseded=True, owners=owners))
    shards = layout.committed_shards()
    problems = []
    for i, shard in enumerate(shards):
        progress(i, len(shards), shard)
        problems += verify_shard(layout, shard, rows.get(shard, []), superseded.get(shard, []))
    return table.num_rows, problems
