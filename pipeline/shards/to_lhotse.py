"""A curated dataset as a lhotse CutSet, reading the audio where it lies: no copy, no re-encoding.

One cut per sample: its Recording is the segment's `KEY.flac` member, its supervision the segment
(text, speaker, language, and the word alignment with times relative to the segment). Lhotse reads a
Recording from a file, a URL, memory, a Shar tar or a shell `command`; our FLAC sits at a byte offset
inside an uncompressed tar, so the source is a command that yields exactly those bytes: `dd` of the
member's range for a local dataset (lhotse then decodes the FLAC itself), and `audiomill-shards export
URL KEY --out -` (our checked reader, WAV on standard output) for one on object storage. Lhotse Shar
was the other choice: it is a tar layout of its own (each audio member followed by its lhotse JSON,
cut fields in tars of their own), so reading our tars as Shar is impossible and writing Shar is a
second copy of every byte.

Only samples that count are exported (superseded duplicates of a retried writer are not), and every
member is checked against its manifest row before its offset is trusted.
"""
from __future__ import annotations

import json
import shlex
import tarfile
from pathlib import Path

from pipeline.shards.layout import DatasetError, DatasetLayout
from pipeline.shards.manifest import MEMBER_AUDIO, MEMBER_META, SHA_COLUMNS, read_manifest, rows_by_shard
from pipeline.shards.members import iter_members, member_limits, member_problem
from pipeline.shards.schema import SegmentRecord, parse_record
from pipeline.shards.storage import LocalStorage


def scan_local_tar(tar_path: str, limits: dict[str, int], keys: set[str]) -> tuple[dict[str, bytes], dict]:
    """One pass over a local tar for the samples `keys`: their KEY.json bytes, and the byte range (offset,
    size) of their KEY.flac, each member checked against its manifest row first; audio is seeked past."""
    metas, offsets = {}, {}
    try:
        with tarfile.open(tar_path, mode="r:") as tar:
            for info in tar:
                key, _, suffix = info.name.partition(".")
                if key not in keys or suffix not in (MEMBER_AUDIO, MEMBER_META):
                    continue
                problem = member_problem(info, limits)
                if problem is not None:
                    raise DatasetError(f"{tar_path}: {problem}")
                if suffix == MEMBER_AUDIO:
                    offsets[info.name] = (info.offset_data, info.size)
                else:
                    metas[info.name] = tar.extractfile(info).read()
    except (tarfile.TarError, EOFError) as e:
        raise DatasetError(f"{tar_path}: damaged tar ({e})") from None
    return metas, offsets


def scan_remote_tar(layout: DatasetLayout, tar: str, limits: dict[str, int], keys: set[str]) -> dict[str, bytes]:
    """The KEY.json bytes of the samples `keys`, from one stream of a tar on object storage."""
    metas = {}
    with layout.storage.open_read(tar) as stream:
        for member in iter_members(stream, limits):
            key, _, suffix = member.name.partition(".")
            if key in keys and suffix == MEMBER_META:
                if member.data is None:
                    raise DatasetError(f"{layout.storage.show(tar)}: {member.problem}")
                metas[member.name] = member.data
    return metas


def audio_command(layout: DatasetLayout, tar: str, key: str, offsets: dict[str, tuple[int, int]]) -> str:
    """The shell command lhotse runs to read one sample's audio."""
    if isinstance(layout.storage, LocalStorage):
        offset, size = offsets[f"{key}.{MEMBER_AUDIO}"]
        return (f"dd if={shlex.quote(tar)} iflag=skip_bytes,count_bytes skip={offset} count={size} bs=1M "
                f"status=none")
    return f"audiomill-shards export {shlex.quote(layout.url)} {shlex.quote(key)} --out -"


def sample_cut(record: SegmentRecord, command: str):
    """A lhotse MonoCut of one sample: the whole segment, one supervision, word alignment."""
    from lhotse import AudioSource, MonoCut, Recording, SupervisionSegment
    from lhotse.supervision import AlignmentItem

    audio = record.audio
    recording = Recording(id=record.key, sources=[AudioSource(type="command", channels=[0], source=command)],
                          sampling_rate=audio.sample_rate, num_samples=audio.num_samples, duration=audio.seconds)
    words = [AlignmentItem(symbol=w.word, start=round(w.start - record.start, 3),
                           duration=round(w.end - w.start, 3), score=w.score) for w in record.words]
    supervision = SupervisionSegment(
        id=record.key, recording_id=record.key, start=0.0, duration=audio.seconds, channel=0, text=record.text,
        language=record.language, speaker=record.speaker, alignment={"word": words} if words else None,
        custom={"source": record.source, "audiomill_recording_id": record.recording_id,
                "segment_index": record.segment_index, "start_in_source": record.start})
    return MonoCut(id=record.key, start=0.0, duration=audio.seconds, channel=0, recording=recording,
                   supervisions=[supervision])


def dataset_cuts(layout: DatasetLayout) -> list:
    """Every sample that counts as a cut, shard by shard in name order, samples in shard order."""
    rows = rows_by_shard(read_manifest(layout, columns=["key", "shard", "size_bytes", *SHA_COLUMNS]))
    local = isinstance(layout.storage, LocalStorage)
    cuts = []
    for shard in sorted(rows):
        tar, limits = layout.shard_tar(shard), member_limits(rows[shard])
        keys = {row["key"] for row in rows[shard]}
        if local:
            metas, offsets = scan_local_tar(tar, limits, keys)
        else:
            metas, offsets = scan_remote_tar(layout, tar, limits, keys), {}
        for data in metas.values():
            record = parse_record(json.loads(data))
            cuts.append(sample_cut(record, audio_command(layout, tar, record.key, offsets)))
    return cuts


def write_cutset(layout: DatasetLayout, out: Path) -> tuple[Path, int]:
    """`OUT/cuts.jsonl.gz`, lhotse's own manifest format (`CutSet.from_file`), and how many cuts it holds."""
    from lhotse import CutSet

    cuts = CutSet.from_cuts(dataset_cuts(layout))
    out.mkdir(parents=True, exist_ok=True)
    path = out / "cuts.jsonl.gz"
    cuts.to_file(path)
    return path, len(cuts)
