import os
import threading

import numpy as np
import pyarrow.parquet as pq
import pytest
from pathlib import Path

from pipeline.ledger import done_recordings
from pipeline.shards import DatasetLayout, SchemaError, ShardWriter, iter_samples
from pipeline.shards.manifest import read_manifest, read_rejected
from tests.conftest import SAMPLE_RATE, dialog_samples, write_dataset

QUANTISATION = 2.0 / 32768  # FLAC stores 16-bit PCM


def expected_samples(dialogs):
    return {s.record.key: s for source, dialog in dialogs for s in dialog_samples(source, dialog)[0]}


def test_round_trip_gives_back_records_audio_and_tokens(built_dataset, dialogs):
    expected = expected_samples(dialogs)
    read = list(iter_samples(built_dataset, audio="both"))
    assert [s.key for s in read] == sorted(expected, key=list(expected).index)  # written order
    for sample in read:
        want = expected[sample.key]
        assert sample.record == want.record
        np.testing.assert_allclose(sample.audio, want.audio, atol=QUANTISATION)
        np.testing.assert_allclose(sample.enhanced, want.enhanced, atol=QUANTISATION)
        np.testing.assert_array_equal(sample.tokens, want.tokens)


def test_enhanced_selection_returns_the_enhanced_audio(built_dataset, dialogs):
    expected = expected_samples(dialogs)
    for sample in iter_samples(built_dataset, audio="enhanced"):
        np.testing.assert_allclose(sample.audio, expected[sample.key].enhanced, atol=QUANTISATION)
        assert sample.enhanced is None


def test_recordings_stay_whole_and_in_order_within_one_shard(built_dataset):
    table = read_manifest(DatasetLayout.of(built_dataset)).to_pylist()
    shards_of = {}
    for row in table:
        shards_of.setdefault(row["recording_id"], set()).add(row["shard"])
    assert all(len(s) == 1 for s in shards_of.values())
    assert len({row["shard"] for row in table}) >= 2  # target_samples=5 forces several shards
    for rid in shards_of:
        indices = [r["segment_index"] for r in table if r["recording_id"] == rid]
        assert indices == sorted(indices)


def test_selecting_shards_reads_only_those(built_dataset):
    layout = DatasetLayout.of(built_dataset)
    first = layout.committed_shards()[0]
    keys = {s.key for s in iter_samples(built_dataset, shards=[first])}
    manifest_keys = set(read_manifest(layout, shards=[first]).column("key").to_pylist())
    assert keys == manifest_keys and keys


def test_layout_and_dataset_json(built_dataset, dialogs):
    import json

    info = json.loads((built_dataset / "dataset.json").read_text())
    n_kept = len(expected_samples(dialogs))
    assert info["schema_version"] == 1
    assert info["totals"]["segments"] == n_kept
    assert info["totals"]["recordings"] == len(dialogs)
    assert info["totals"]["rejected"] == sum(len(dialog_samples(s, d)[1]) for s, d in dialogs)
    assert info["config"] == {"test": True}
    for shard in DatasetLayout.of(built_dataset).committed_shards():
        assert (built_dataset / "shards" / f"{shard}.tar").is_file()


def test_rejected_rows_are_tied_to_the_shard_of_their_recording(built_dataset):
    layout = DatasetLayout.of(built_dataset)
    rejected = read_rejected(layout).to_pylist()
    assert rejected, "the fixture has short turns"
    committed = set(layout.committed_shards())
    assert all(r["shard"] in committed for r in rejected)
    assert done_recordings(layout) == set(read_manifest(layout).column("recording_id").to_pylist())


def test_crash_before_manifest_rename_leaves_no_visible_shard(tmp_path, dialogs, monkeypatch):
    source, dialog = dialogs[0]
    samples, rejected = dialog_samples(source, dialog)
    real_replace = os.replace

    def crash_on_manifest(src, dst, *a, **k):
        if "/manifest/" in str(dst):
            raise KeyboardInterrupt("killed before the manifest rename")
        return real_replace(src, dst, *a, **k)

    writer = ShardWriter(tmp_path / "ds", sample_rate=SAMPLE_RATE)
    writer.add_recording(samples, rejected)
    monkeypatch.setattr(os, "replace", crash_on_manifest)
    with pytest.raises(KeyboardInterrupt):
        writer.flush()
    monkeypatch.setattr(os, "replace", real_replace)

    layout = DatasetLayout.of(tmp_path / "ds")
    assert list(Path(layout.shards).glob("*.tar")), "the tar was renamed into place before the crash"
    assert layout.committed_shards() == []
    assert list(iter_samples(layout.root)) == []
    assert done_recordings(layout) == set()  # its rejected rows do not count without the manifest
    assert read_rejected(layout).num_rows == 0

    with ShardWriter(layout.root, sample_rate=SAMPLE_RATE) as again:  # the next start cleans up
        assert not list(Path(layout.shards).glob("*.tar"))
        assert not list(Path(layout.manifest).glob(".tmp-*"))
        again.add_recording(samples, rejected)
    assert [s.key for s in iter_samples(layout.root)] == [s.record.key for s in samples]
    assert read_rejected(layout).num_rows == len(rejected)


def test_concurrent_writers_never_collide(tmp_path, dialogs):
    def write(part):
        write_dataset(tmp_path / "ds", part, target_samples=2, clean_orphans=False)

    threads = [threading.Thread(target=write, args=([d],)) for d in dialogs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    keys = [s.key for s in iter_samples(tmp_path / "ds")]
    assert sorted(keys) == sorted(expected_samples(dialogs))
    assert len(keys) == len(set(keys))


def test_writer_refuses_inconsistent_input(tmp_path, dialogs):
    source, dialog = dialogs[0]
    samples, _ = dialog_samples(source, dialog)
    with ShardWriter(tmp_path / "ds", sample_rate=22050) as writer:
        with pytest.raises(SchemaError, match="audio.sample_rate"):
            writer.add_recording(samples)
    with ShardWriter(tmp_path / "ds2", sample_rate=SAMPLE_RATE) as writer:
        with pytest.raises(ValueError, match="in order"):
            writer.add_recording(samples[::-1])
        other_source, other = dialogs[1]
        with pytest.raises(ValueError, match="one recording"):
            writer.add_recording(samples + dialog_samples(other_source, other)[0])
    assert read_manifest(DatasetLayout.of(tmp_path / "ds2")).num_rows == 0


def test_manifest_is_parquet_readable_by_any_tool(built_dataset):
    part = next((built_dataset / "manifest").glob("*.parquet"))
    table = pq.read_table(part)
    assert {"key", "shard", "duration", "sha256_flac", "sha256_tok_npy"} <= set(table.column_names)


def test_failed_inputs_are_recorded_and_counted(tmp_path):
    from pipeline.shards import FailedRecord
    from pipeline.shards.manifest import read_failed
    from pipeline.shards.stats import dataset_stats

    with ShardWriter(tmp_path / "ds", sample_rate=SAMPLE_RATE) as writer:
        writer.add_failed([FailedRecord(source="/x/bad.wav", recording_id="0123456789abcdef", stage="decode",
                                        error_type="DecodeError", message="not audio")])
    layout = DatasetLayout.of(tmp_path / "ds")
    assert read_failed(layout, columns=["source", "recording_id", "stage", "error_type", "message"]
                       ).to_pylist() == [{"source": "/x/bad.wav", "recording_id": "0123456789abcdef",
                                                "stage": "decode", "error_type": "DecodeError",
                                                "message": "not audio"}]
    assert done_recordings(layout) == {"0123456789abcdef"}
    stats = dataset_stats(layout)
    assert stats["totals"]["failed"] == 1
    assert stats["failed_by_stage"] == [{"stage": "decode", "error_type": "DecodeError", "count": 1}]


def test_large_samples_are_hashed_beside_their_writes_also_in_a_forked_child(tmp_path, dialogs):
    """A sample of 256 KB or more is hashed in the writer's thread while its members are written; a process
    forked after that thread started has no copy of it and starts its own (the parent's would never run)."""
    import dataclasses
    import signal

    from pipeline.shards import AudioInfo, SegmentSample
    from pipeline.shards.verify import verify_dataset

    source, dialog = dialogs[0]
    first = dialog_samples(source, dialog)[0][0].record
    seconds = 12  # 16-bit white noise: about 380 KB of FLAC
    record = dataclasses.replace(first, end=first.start + seconds, words=(), tokens=None,
                                 audio=AudioInfo(sample_rate=SAMPLE_RATE, num_samples=seconds * SAMPLE_RATE))
    noise = np.random.default_rng(0).uniform(-0.9, 0.9, seconds * SAMPLE_RATE).astype(np.float32)

    def write_and_verify(root: Path) -> list:
        with ShardWriter(root, sample_rate=SAMPLE_RATE, target_bytes=10_000_000, target_samples=5) as writer:
            writer.add_recording([SegmentSample(record=record, audio=noise)])
        layout = DatasetLayout.of(root)
        assert read_manifest(layout, columns=["size_bytes"]).column("size_bytes")[0].as_py() >= 1 << 18
        return verify_dataset(layout)[1]

    assert write_and_verify(tmp_path / "parent") == []
    child = os.fork()
    if child == 0:  # the child reports through its exit status, never returning into pytest
        signal.alarm(30)  # a child waiting on the parent's thread would hang: SIGALRM ends it instead
        status = 1
        try:
            status = 0 if write_and_verify(tmp_path / "child") == [] else 1
        finally:
            os._exit(status)
    assert os.waitpid(child, 0)[1] == 0
