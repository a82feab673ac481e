"""Shard format benchmark: writer and reader against bare tarfile/webdataset, and stats on 1M rows.

    python -m bench.shards [--minutes 20] [--rows 1000000] [--workdir bench_out/shards]

Each figure is printed beside a reference measured in the same run, as a ratio of the medians of three
alternating passes (bench/timing.py; targets from issue 2:
writer and reader at least 0.8 of the bare library; stats under 3 s on a million rows, no tar opened).
"""
from __future__ import annotations

import argparse
import io
import json
import shutil
import tarfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import soundfile as sf
import webdataset as wds

from bench.timing import alternating_medians, passes_text, seconds_of
from pipeline import __version__
from pipeline.shards import (
    AudioInfo, DatasetLayout, PipelineInfo, SegmentRecord, SegmentSample, ShardWriter, TokenInfo,
    expected_token_count, iter_samples, recording_id_for,
)
from pipeline.shards.manifest import MANIFEST_SCHEMA, write_parquet
from pipeline.shards.stats import QUALITY_COLUMNS, dataset_stats, format_stats
from pipeline.synthetic import make_dialog

SAMPLE_RATE = 16000
SEGMENTS_PER_RECORDING = 8
SHARD_BYTES = 64 << 20


def make_recordings(minutes: float) -> list[list[SegmentSample]]:
    """Recordings of generated speech (one espeak dialog reused with a different gain per recording)."""
    dialog = make_dialog([("a", "en-us", "The quick brown fox jumps over the lazy dog near the river bank."),
                          ("b", "en-gb", "Please call me when you arrive at the station tomorrow morning.")] * 4,
                         sample_rate=SAMPLE_RATE, noise_level=0.002)
    pipeline = PipelineInfo.for_config(__version__, {"bench": True})
    recordings, total, i = [], 0.0, 0
    rng = np.random.default_rng(0)
    while total < minutes * 60:
        source = f"/bench/rec-{i:05d}.wav"
        rid = recording_id_for(source)
        samples = []
        for j, turn in enumerate(dialog.turns[:SEGMENTS_PER_RECORDING]):
            first, last = round(turn.start * SAMPLE_RATE), round(turn.end * SAMPLE_RATE)
            audio = dialog.audio[first:last] * (0.5 + 0.5 * rng.random())
            n_tok = expected_token_count(last - first, SAMPLE_RATE)
            record = SegmentRecord(recording_id=rid, source=source, segment_index=j, start=first / SAMPLE_RATE,
                                   end=last / SAMPLE_RATE, speaker=turn.speaker, language="en", text=turn.text,
                                   audio=AudioInfo(SAMPLE_RATE, last - first), pipeline=pipeline,
                                   tokens=TokenInfo(n_tok))
            samples.append(SegmentSample(record, audio.astype(np.float32),
                                         tokens=rng.integers(0, 16384, n_tok).astype(np.int32)))
            total += (last - first) / SAMPLE_RATE
        recordings.append(samples)
        i += 1
    return recordings


def bench_writer(recordings, workdir: Path) -> tuple[float, float, list, Path]:
    """Seconds for ShardWriter, and for bare tarfile writing the same members (same encodings): medians of
    alternating passes and the passes; each warmed first on one recording (imports, first calls), so the
    figures are per-hour rates, not start-up."""
    write_ours(recordings[:1], workdir / "warm-ours")
    write_bare(recordings[:1], workdir / "warm-bare.tar")

    def ours() -> float:
        shutil.rmtree(workdir / "ours", ignore_errors=True)  # each pass writes a new dataset
        return seconds_of(lambda: write_ours(recordings, workdir / "ours"))

    ours_seconds, bare_seconds, passes = alternating_medians(
        ours, lambda: seconds_of(lambda: write_bare(recordings, workdir / "bare.tar")))
    return ours_seconds, bare_seconds, passes, workdir / "ours"


def write_ours(recordings, root: Path) -> None:
    with ShardWriter(root, target_bytes=SHARD_BYTES, target_samples=10**9, sample_rate=SAMPLE_RATE) as writer:
        for samples in recordings:
            writer.add_recording(samples)


def write_bare(recordings, path: Path) -> None:
    with tarfile.open(path, "w") as tar:
        for samples in recordings:
            for s in samples:
                flac, meta, tok = io.BytesIO(), json.dumps(s.record.to_dict()).encode(), io.BytesIO()
                sf.write(flac, s.audio, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
                np.save(tok, s.tokens)
                for suffix, data in (("flac", flac.getvalue()), ("json", meta), ("tok.npy", tok.getvalue())):
                    info = tarfile.TarInfo(f"{s.record.key}.{suffix}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))


def bench_reader(dataset: Path) -> tuple[float, float, list, int]:
    """Seconds for iter_samples, and for a bare webdataset iteration decoding the same FLAC members: medians
    of alternating passes, the passes, and the number of samples (the same in both)."""
    urls = [str(p) for p in sorted((dataset / "shards").glob("*.tar"))]
    counts = set()

    def ours() -> None:
        counts.add(sum(1 for _ in iter_samples(dataset)))

    def bare() -> None:
        counts.add(sum(1 for _ in wds.WebDataset(urls, shardshuffle=False, empty_check=False).map(
            lambda s: sf.read(io.BytesIO(s["flac"]), dtype="float32"))))

    ours_seconds, bare_seconds, passes = alternating_medians(lambda: seconds_of(ours), lambda: seconds_of(bare))
    [n] = counts
    return ours_seconds, bare_seconds, passes, n


def make_big_manifest(root: Path, rows: int, parts: int = 100) -> None:
    """A dataset of `rows` synthetic manifest rows and no tars at all: stats must not need them."""
    layout = DatasetLayout.of(root)
    layout.create()
    rng = np.random.default_rng(0)
    per_part = rows // parts
    for p in range(parts):
        n = per_part
        recording = rng.integers(0, rows // 20, n)
        columns = {name: pa.nulls(n, type=MANIFEST_SCHEMA.field(name).type) for name in MANIFEST_SCHEMA.names}
        columns.update({
            "key": pa.array([f"{r:016x}_{i:06d}" for i, r in enumerate(recording)]),
            "shard": pa.array([f"shard-{p:06d}"] * n), "recording_id": pa.array([f"{r:016x}" for r in recording]),
            "duration": pa.array(rng.uniform(1, 27, n)), "speaker": pa.array([f"S{k}" for k in rng.integers(0, 4, n)]),
            "language": pa.array(rng.choice(["en", "zh"], n)), "size_bytes": pa.array(rng.integers(1e4, 1e6, n)),
            **{c: pa.array(rng.normal(3, 0.5, n).astype(np.float32)) for c in QUALITY_COLUMNS},
        })
        table = pa.table({name: columns[name].cast(MANIFEST_SCHEMA.field(name).type) for name in MANIFEST_SCHEMA.names})
        write_parquet(layout.storage, layout.shard_manifest(f"shard-{p:06d}"), table)


def bench_stats(root: Path) -> tuple[float, float]:
    """Seconds for the stats report, and for pyarrow only reading the same columns."""
    import pyarrow.dataset as pads

    start = time.perf_counter()
    report = format_stats(dataset_stats(DatasetLayout.of(root)))
    stats_seconds = time.perf_counter() - start
    assert "segments" in report
    start = time.perf_counter()
    pads.dataset(str(root / "manifest"), format="parquet").to_table(
        columns=["shard", "recording_id", "speaker", "language", "duration", "size_bytes", *QUALITY_COLUMNS])
    return stats_seconds, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=20.0, help="audio minutes for writer/reader")
    parser.add_argument("--rows", type=int, default=1_000_000, help="manifest rows for stats")
    parser.add_argument("--workdir", default="bench_out/shards")
    args = parser.parse_args()
    workdir = Path(args.workdir)
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)

    recordings = make_recordings(args.minutes)
    audio_seconds = sum(s.record.duration for r in recordings for s in r)
    ours, bare, passes, dataset = bench_writer(recordings, workdir)
    print(f"writer : {audio_seconds / ours:8.0f} audio-s/s   bare tarfile {audio_seconds / bare:8.0f} audio-s/s   "
          f"ratio {bare / ours:.2f} (target >= 0.8; seconds, {passes_text(passes, '.2f')})")
    ours, bare, passes, n = bench_reader(dataset)
    print(f"reader : {audio_seconds / ours:8.0f} audio-s/s   bare webdataset {audio_seconds / bare:8.0f} audio-s/s   "
          f"ratio {bare / ours:.2f} (target >= 0.8; seconds, {passes_text(passes, '.2f')})   [{n} samples]")
    make_big_manifest(workdir / "big", args.rows)
    ours, bare = bench_stats(workdir / "big")
    print(f"stats  : {ours:.2f} s on {args.rows} rows (target < 3 s)   bare column read {bare:.2f} s   "
          f"ratio {ours / bare:.1f}x the read   tars opened: {len(list((workdir / 'big' / 'shards').glob('*')))}")


if __name__ == "__main__":
    main()
