"""Parquet manifests: one flat row per sample, so stats and selection never open a tar.

Also the Parquet schemas of the `rejected/` and `failed/` parts.
"""
from __future__ import annotations

import json
import time
from typing import Iterable, Optional, Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.shards.layout import DatasetError, DatasetLayout
from pipeline.shards.storage import Storage
from pipeline.shards.schema import KEY_PATTERN, FailedRecord, RejectedRecord, SegmentRecord, columns_of

# Member suffixes in a shard, in the order they are written for each key.
MEMBER_AUDIO = "flac"
MEMBER_ENHANCED = "enh.flac"
MEMBER_META = "json"
MEMBER_TOKENS = "tok.npy"
MEMBER_SUFFIXES = (MEMBER_AUDIO, MEMBER_ENHANCED, MEMBER_META, MEMBER_TOKENS)


def sha_column(suffix: str) -> str:
    """Manifest column holding the sha256 of one member, e.g. `sha256_enh_flac`."""
    return "sha256_" + suffix.replace(".", "_")


SHA_COLUMNS = tuple(sha_column(s) for s in MEMBER_SUFFIXES)


def manifest_schema(record_type: type = SegmentRecord) -> pa.Schema:
    """One column per scalar of the record (SegmentRecord.columns(): its fields, nested ones flattened,
    and key, duration, num_words), plus the shard, the sample's size and each member's sha256."""
    columns = [(c.name, getattr(pa, c.arrow)()) for c in record_type.columns()]
    return pa.schema([columns[0], ("shard", pa.string()), *columns[1:], ("size_bytes", pa.int64()),
                      *[(sha_column(s), pa.string()) for s in MEMBER_SUFFIXES]])


MANIFEST_SCHEMA = manifest_schema()

REJECTED_SCHEMA = pa.schema([
    ("source", pa.string()), ("recording_id", pa.string()), ("key", pa.string()), ("stage", pa.string()),
    ("reason", pa.string()), ("metrics", pa.string()), ("duration", pa.float64()), ("shard", pa.string()),
])

FAILED_SCHEMA = pa.schema([
    ("source", pa.string()), ("recording_id", pa.string()), ("stage", pa.string()),
    ("error_type", pa.string()), ("message", pa.string()), ("failed_at", pa.string()),
])


def manifest_row(record: SegmentRecord, shard: str, member_sha256: dict[str, str], size_bytes: int) -> dict:
    """Flatten a record into its manifest row; `member_sha256` maps member suffix to hex digest."""
    row = {c.name: c.value(record) for c in columns_of(type(record))}
    row.update(shard=shard, size_bytes=size_bytes)
    for suffix in MEMBER_SUFFIXES:
        row[sha_column(suffix)] = member_sha256.get(suffix)
    return row


def expected_members(row: dict) -> dict[str, str]:
    """Member file names a manifest row promises, mapped to their sha256."""
    return {f"{row['key']}.{s}": row[sha_column(s)] for s in MEMBER_SUFFIXES if row[sha_column(s)] is not None}


def rows_to_table(rows: Sequence[dict], schema: pa.Schema) -> pa.Table:
    return pa.Table.from_pylist(list(rows), schema=schema)


def rejected_rows(records: Iterable[RejectedRecord]) -> list[dict]:
    return [{"source": r.source, "recording_id": r.recording_id, "key": r.key, "stage": r.stage,
             "reason": r.reason, "metrics": json.dumps(r.metrics, sort_keys=True), "duration": r.duration,
             "shard": r.shard} for r in records]


def failed_rows(records: Iterable[FailedRecord]) -> list[dict]:
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return [{"source": r.source, "recording_id": r.recording_id, "stage": r.stage,
             "error_type": r.error_type, "message": r.message, "failed_at": now} for r in records]


def check_part_schema(source, schema: pa.Schema, name: str) -> None:
    """DatasetError naming the file unless its columns include `schema`'s, with the same types."""
    try:
        found = pq.read_schema(source)
    except (pa.ArrowInvalid, OSError) as e:
        raise DatasetError(f"{name}: not a readable Parquet file ({e})") from None
    for field in schema:
        index = found.get_field_index(field.name)
        if index < 0:
            raise DatasetError(f"{name}: not a part of this kind (no column {field.name!r})")
        if not found.field(index).type.equals(field.type):
            raise DatasetError(f"{name}: column {field.name!r} is {found.field(index).type}, expected {field.type}")


def _read_part(layout: DatasetLayout, path: str, schema: pa.Schema, columns: Sequence[str]) -> pa.Table:
    name = layout.storage.show(path)
    try:
        data = pa.BufferReader(layout.storage.read_bytes(path))  # parts are small: one GET, then parse
    except OSError as e:
        raise DatasetError(f"{name}: cannot read ({e})") from None
    check_part_schema(data, schema, name)
    try:
        return pq.read_table(data, columns=list(columns), use_threads=False)  # small parts: no thread pool
    except (pa.ArrowInvalid, OSError) as e:
        raise DatasetError(f"{name}: cannot read ({e})") from None


def _read_parts(layout: DatasetLayout, directory: str, schema: pa.Schema,
                columns: Optional[Sequence[str]]) -> pa.Table:
    """The parts' rows, each part's schema checked first (a foreign Parquet file is named, not read as ours)."""
    columns = list(columns) if columns else schema.names
    tables = [_read_part(layout, p, schema, columns) for p in layout.parts(directory)]
    return pa.concat_tables(tables) if tables else schema.empty_table().select(columns)


def _read_manifest_part(layout: DatasetLayout, name: str, columns: Sequence[str]) -> pa.Table:
    """One manifest part, refused unless every row names this shard and carries a valid sample key:
    the shard column becomes a tar path and the key a member name, so neither is taken on trust."""
    wanted = list(dict.fromkeys([*columns, "shard", "key"]))
    path = layout.shard_manifest(name)
    table = _read_part(layout, path, MANIFEST_SCHEMA, wanted)
    def every(condition) -> bool:  # a null counts against it
        return table.num_rows == 0 or pc.all(pc.fill_null(condition, False)).as_py()

    if not every(pc.equal(table.column("shard"), name)):
        raise DatasetError(f"{layout.storage.show(path)}: rows name another shard than {name!r}")
    if not every(pc.match_substring_regex(table.column("key"), KEY_PATTERN)):
        raise DatasetError(f"{layout.storage.show(path)}: holds a key that is not a sample key (RECORDINGID_NNNNNN)")
    return table.select(list(columns))


def _manifest_rows(layout: DatasetLayout, columns: Sequence[str], shards: Sequence[str]) -> pa.Table:
    wanted = list(dict.fromkeys([*columns, "recording_id", "shard"]))
    tables = [_read_manifest_part(layout, n, wanted) for n in shards]
    return pa.concat_tables(tables) if tables else MANIFEST_SCHEMA.empty_table().select(wanted)


def duplicate_owners(layout: DatasetLayout) -> dict[str, str]:
    """Recording id -> the one shard whose rows of it count, for each recording held by more than one
    committed shard (usually none): the first by name among those holding it.

    A writer that died after its manifest landed is retried, and the retry commits the same recordings in
    other shards; both manifests are valid, so every reader applies this rule and sees each recording
    once. Readers of many shards (the trainer) compute it once and pass it on."""
    return _owners_in(_manifest_rows(layout, [], layout.committed_shards()))


def _owners_in(table: pa.Table) -> dict[str, str]:
    """`duplicate_owners` of rows already read from every committed part."""
    if not table.num_rows:
        return {}
    grouped = table.select(["recording_id", "shard"]).group_by("recording_id").aggregate(
        [("shard", "count_distinct"), ("shard", "min")])
    held_twice = grouped.filter(pc.greater(grouped.column("shard_count_distinct"), 1))
    return dict(zip(held_twice.column("recording_id").to_pylist(), held_twice.column("shard_min").to_pylist()))


def _superseded_mask(table: pa.Table, owners: dict[str, str]) -> pa.ChunkedArray:
    """Rows of a recording held twice that are not in its owning shard."""
    if not owners:
        return pa.chunked_array([pa.array([False] * table.num_rows, type=pa.bool_())])
    held_twice = pc.is_in(table.column("recording_id"), value_set=pa.array(list(owners), type=pa.string()))
    pairs = pc.binary_join_element_wise(table.column("recording_id"), table.column("shard"), "\x00")
    owned = pc.is_in(pairs, value_set=pa.array([f"{r}\x00{s}" for r, s in owners.items()], type=pa.string()))
    return pc.and_(held_twice, pc.invert(owned))


def read_manifest(layout: DatasetLayout, columns: Optional[Sequence[str]] = None,
                  shards: Optional[Sequence[str]] = None, superseded: bool = False,
                  owners: Optional[dict[str, str]] = None) -> pa.Table:
    """Committed manifest rows that count (or those of the named shards), as one Arrow table.

    Rows of a recording in any shard but its owner (`duplicate_owners`, computed here unless given) are
    superseded duplicates and left out; `superseded=True` returns only those instead (verify, gc)."""
    columns = list(columns) if columns else MANIFEST_SCHEMA.names
    table = _manifest_rows(layout, columns, layout.select_shards(shards))
    if owners is None:  # every part read already holds them; a subset needs the other parts' ids too
        owners = _owners_in(table) if shards is None else duplicate_owners(layout)
    dropped = _superseded_mask(table, owners)
    return table.filter(dropped if superseded else pc.invert(dropped)).select(columns)


def rows_by_shard(table: pa.Table) -> dict[str, list[dict]]:
    grouped: dict[str, list[dict]] = {}
    for row in table.to_pylist():
        grouped.setdefault(row["shard"], []).append(row)
    return grouped


def read_rejected(layout: DatasetLayout, columns: Optional[Sequence[str]] = None) -> pa.Table:
    """Rejected rows that count, once each: those not tied to a shard, or tied to the shard that owns
    their recording. A retried writer writes its rows again; repeats of the same row are dropped."""
    table = _read_parts(layout, layout.rejected, REJECTED_SCHEMA, None)
    if table.num_rows:
        committed, owners = set(layout.committed_shards()), duplicate_owners(layout)
        seen, keep = set(), []
        for i, row in enumerate(table.select(["recording_id", "key", "stage", "shard"]).to_pylist()):
            shard = row["shard"]
            tied_ok = shard is None or (shard in committed and owners.get(row["recording_id"], shard) == shard)
            identity = (row["recording_id"], row["key"], row["stage"])
            if tied_ok and identity not in seen:
                seen.add(identity)
                keep.append(i)
        table = table.take(pa.array(keep, type=pa.int64()))
    return table.select(list(columns)) if columns else table


def read_failed(layout: DatasetLayout, columns: Optional[Sequence[str]] = None) -> pa.Table:
    """Failed rows that count: the latest failure of each recording that has no other outcome.

    A retried input (`retry_failed=true`) that then committed or was rejected supersedes its failed rows,
    and one that failed again keeps only its newest row, so stats count each lost input once."""
    table = _read_parts(layout, layout.failed, FAILED_SCHEMA, None)
    if not table.num_rows:
        return table.select(list(columns)) if columns else table
    settled = set(read_manifest(layout, columns=["recording_id"]).column("recording_id").to_pylist())
    settled.update(read_rejected(layout, columns=["recording_id"]).column("recording_id").to_pylist())
    settled.update(rid.split("-s")[0] for rid in list(settled))  # a whole recording done session by session
    latest: dict[str, tuple[str, int]] = {}  # recording id -> (failed_at, row)
    for i, row in enumerate(table.select(["recording_id", "failed_at"]).to_pylist()):
        when = row["failed_at"] or ""
        if row["recording_id"] not in settled and when >= latest.get(row["recording_id"], ("", -1))[0]:
            latest[row["recording_id"]] = (when, i)
    table = table.take(sorted(i for _, i in latest.values()))
    return table.select(list(columns)) if columns else table


def write_parquet(storage: Storage, path: str, table: pa.Table) -> None:
    """Write a Parquet part atomically on any storage (see storage.Storage.open_atomic)."""
    storage.write_atomic(path, lambda f: pq.write_table(table, f, compression="zstd"))
