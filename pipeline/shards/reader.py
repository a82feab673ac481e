"""Read samples of a curated dataset through `webdataset`, decoding members ourselves (never unpickling).

The trainer composes `sample_pipeline` stages with its own shard splitting; tools call `iter_samples`.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Callable, Iterator, Literal, Optional, Sequence

import numpy as np
import webdataset as wds

from pipeline.shards.codec import decode_audio, decode_npy
from pipeline.shards.layout import DatasetError, DatasetLayout
from pipeline.shards.manifest import MEMBER_AUDIO, MEMBER_ENHANCED, MEMBER_META, MEMBER_TOKENS
from pipeline.shards.schema import SegmentRecord

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
    record = SegmentRecord.from_dict(json.loads(raw[MEMBER_META]))
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
    """Paths of committed shard tars (all, or the named ones), in name order."""
    return [str(layout.shard_tar(n)) for n in layout.select_shards(shards)]


def sample_pipeline(urls: Sequence[str], audio: AudioChoice = "original",
                    handler: Callable = wds.reraise_exception) -> wds.DataPipeline:
    """A webdataset pipeline over the given tars yielding Samples; `handler` is webdataset's error policy."""
    return wds.DataPipeline(
        wds.SimpleShardList(list(urls)),
        wds.tarfile_to_samples(handler=handler),
        wds.map(lambda raw: decode_sample(raw, audio), handler=handler),
    )


def iter_samples(root: str | os.PathLike, shards: Optional[Sequence[str]] = None,
                 audio: AudioChoice = "original") -> Iterator[Sample]:
    """Every sample of a dataset (or of the named shards), in shard order and time order within a shard.

    >>> for s in iter_samples("out/ds", audio="enhanced"):     # doctest: +SKIP
    ...     print(s.key, s.record.text, s.audio.shape)
    """
    urls = shard_urls(DatasetLayout.of(root).require(), shards)
    if urls:  # webdataset's shard list refuses an empty list
        yield from sample_pipeline(urls, audio)
