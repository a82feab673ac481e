"""Read samples of a curated dataset through `webdataset`, decoding members ourselves (never unpickling).

Tars are expanded by `members.iter_members` (names, types and sizes checked against the manifest before
anything is read), then grouped into samples by webdataset. The trainer and tools call `iter_samples`.
"""
from __future__ import annotations

import json
import os
import tarfile
from dataclasses import dataclass
from typing import Callable, Iterator, Literal, Mapping, Optional, Sequence

import numpy as np
import webdataset as wds
from webdataset.tariterators import group_by_keys

from pipeline.shards.codec import decode_audio, decode_npy
from pipeline.shards.layout import DatasetError, DatasetLayout
from pipeline.shards.manifest import (
    MEMBER_AUDIO, MEMBER_ENHANCED, MEMBER_META, MEMBER_TOKENS, SHA_COLUMNS, duplicate_owners, read_manifest,
    rows_by_shard,
)
from pipeline.shards.members import iter_members, member_limits
from pipeline.shards.schema import SegmentRecord, parse_record
from pipeline.shards.storage import Storage

AudioChoice = Literal["original", "enhanced", "both"]


@dataclass(frozen=True)
class Sample:
    """A decoded sample: its record, audio (float32 mono at `record.audio.sample_rate`) and tokens.

    With `audio="both"`, `audio` is the original and `enhanced` the enhanced copy (None when not stored).
    """
    record: SegmentRecord
    audio: np.ndarray
    shard: str
    enhanced: Optional[np.ndarray] = None
    tokens: Optional[np.ndarray] = None

    @property
    def key(self) -> str:
        return self.record.key


def decode_sample(raw: dict, audio: AudioChoice = "original") -> Sample:
    """Turn webdataset's raw `{extension: bytes}` dict into a Sample."""
    key = raw.get("__key__", "?")
    if MEMBER_META not in raw:
        raise DatasetError(f"{key}: no {MEMBER_META} member")
    record = parse_record(json.loads(raw[MEMBER_META]))
    if audio == "enhanced":
        if MEMBER_ENHANCED not in raw:
            raise DatasetError(f"{key}: no enhanced audio stored (was enhancement on?)")
        main, enhanced = decode_audio(raw[MEMBER_ENHANCED])[0], None
    else:
        if MEMBER_AUDIO not in raw:
            raise DatasetError(f"{key}: no {MEMBER_AUDIO} member")
        main = decode_audio(raw[MEMBER_AUDIO])[0]
        enhanced = decode_audio(raw[MEMBER_ENHANCED])[0] if audio == "both" and MEMBER_ENHANCED in raw else None
    tokens = decode_npy(raw[MEMBER_TOKENS]) if MEMBER_TOKENS in raw else None
    shard = os.path.splitext(os.path.basename(raw.get("__url__", "")))[0]
    return Sample(record=record, audio=main, shard=shard, enhanced=enhanced, tokens=tokens)


def shard_urls(layout: DatasetLayout, shards: Optional[Sequence[str]] = None) -> list[str]:
    """Paths of committed shard tars (all, or the named ones) on the layout's storage, in name order."""
    return [layout.shard_tar(n) for n in layout.select_shards(shards)]


def _tar_opener(storage: Storage):
    """A webdataset stage: {url} -> {url, stream}, each tar streamed through the dataset's storage
    (a local file, or an object read in order without a local copy)."""
    def open_tars(sources, handler=wds.reraise_exception):
        for source in sources:
            url = source["url"]
            try:
                stream = storage.open_read(url)
            except OSError as e:
                if handler(DatasetError(f"{storage.show(url)}: cannot open ({e})")):
                    continue
                break
            yield {**source, "stream": stream}
    return open_tars


def _checked_tar_members(limits_by_url: dict[str, dict[str, int]], show: Callable[[str], str]):
    """A webdataset stage: opened tar streams -> {fname, data, __url__}, refusing what the manifest does not promise."""
    def expand(streams, handler=wds.reraise_exception):
        for source in streams:
            url = source["url"]
            shown = show(url)
            try:
                for member in iter_members(source["stream"], limits_by_url[url]):
                    if member.problem:
                        raise DatasetError(f"{shown}: {member.problem}")
                    yield {"fname": member.name, "data": member.data, "__url__": url}
            except (tarfile.TarError, EOFError, OSError, DatasetError) as e:
                error = e if isinstance(e, DatasetError) else DatasetError(
                    f"{shown}: tar is truncated or unreadable ({e})")
                if not handler(error):
                    break
            finally:
                source["stream"].close()
    return expand


def sample_pipeline(layout: DatasetLayout, shards: Optional[Sequence[str]] = None, audio: AudioChoice = "original",
                    handler: Callable = wds.reraise_exception,
                    owners: Optional[dict[str, str]] = None) -> wds.DataPipeline:
    """A webdataset pipeline over the committed shards (all, or the named ones) yielding Samples;
    `handler` is webdataset's error policy; `owners` is `duplicate_owners(layout)` when the caller has it."""
    names = layout.select_shards(shards)
    columns = ["key", "shard", "size_bytes", *SHA_COLUMNS]
    owners = duplicate_owners(layout) if owners is None else owners
    rows = rows_by_shard(read_manifest(layout, columns=columns, shards=names, owners=owners))
    superseded = rows_by_shard(read_manifest(layout, columns=columns, shards=names, superseded=True, owners=owners))
    limits = {layout.shard_tar(n): member_limits(rows.get(n, []), superseded.get(n, [])) for n in names}
    return wds.DataPipeline(
        wds.SimpleShardList(list(limits)),
        wds.pipelinefilter(_tar_opener(layout.storage))(handler=handler),
        wds.pipelinefilter(_checked_tar_members(limits, layout.storage.show))(handler=handler),
        wds.pipelinefilter(group_by_keys)(handler=handler),
        wds.map(lambda raw: decode_sample(raw, audio), handler=handler),
    )


def iter_samples(root: str | os.PathLike, shards: Optional[Sequence[str]] = None, audio: AudioChoice = "original",
                 storage_options: Optional[Mapping] = None,
                 owners: Optional[dict[str, str]] = None) -> Iterator[Sample]:
    """Every sample of a dataset (or of the named shards), in shard order and time order within a shard.

    >>> for s in iter_samples("out/ds", audio="enhanced"):     # doctest: +SKIP
    ...     print(s.key, s.record.text, s.audio.shape)
    """
    layout = DatasetLayout.of(root, storage_options).require()
    if layout.select_shards(shards):  # webdataset's shard list refuses an empty list
        yield from sample_pipeline(layout, shards, audio, owners=owners)
