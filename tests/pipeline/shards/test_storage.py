"""Datasets on object storage (a real S3-speaking server over HTTP) and the commit rule for retried writes."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from pipeline.ledger import done_recordings
from pipeline.shards import DatasetLayout, iter_samples
from pipeline.shards.manifest import read_manifest, read_rejected
from pipeline.shards.stats import dataset_totals
from pipeline.shards.verify import verify_dataset
from pipeline.shards.writer import encode_sample
from pipeline.stages.pack import PackedRecording
from pipeline.stages.write import WriteSettings, write_recordings
from tests.conftest import SAMPLE_RATE, dialog_samples, write_dataset


def shards_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.inspect", *map(str, args)], capture_output=True,
                          text=True, timeout=120)


def test_a_dataset_on_s3_reads_verifies_and_inspects_like_a_local_one(s3_server, dialogs, built_dataset, tmp_path):
    url = write_dataset(s3_server.url("ds"), dialogs)
    local = {s.key: s for s in iter_samples(built_dataset, audio="both")}
    remote = list(iter_samples(url, audio="both"))
    assert [s.key for s in remote] == list(local)
    for sample in remote:
        assert sample.record == local[sample.key].record
        np.testing.assert_array_equal(sample.audio, local[sample.key].audio)
        np.testing.assert_array_equal(sample.tokens, local[sample.key].tokens)
    layout = DatasetLayout.of(url)
    assert verify_dataset(layout) == (len(local), [])
    assert dataset_totals(layout) == dataset_totals(DatasetLayout.of(built_dataset))

    key = next(iter(local))
    for args in (("ls",), ("stats", "--json"), ("verify", "--quiet"), ("show", key),
                 ("export", key, "--out", tmp_path / "clip.wav")):
        result = shards_cli(args[0], url, *args[1:])
        assert result.returncode == 0, (args, result.stderr)
    assert (tmp_path / "clip.wav").stat().st_size > 44
    missing = shards_cli("stats", s3_server.url("nothing-here"))
    assert missing.returncode == 2 and "no such dataset" in missing.stderr


def packed_batch(dialogs) -> list[PackedRecording]:
    """What the pack stage hands the writers: whole recordings, encoded, with their rejected rows."""
    batch = []
    for source, dialog in dialogs:
        samples, rejected = dialog_samples(source, dialog)
        batch.append(PackedRecording(source=source, recording_id=samples[0].record.recording_id,
                                     seconds=len(dialog.audio) / SAMPLE_RATE, source_seconds=0.0,
                                     samples=tuple(encode_sample(s) for s in samples), rejected=tuple(rejected)))
    return batch


@pytest.mark.parametrize("backend", ["local", "s3"])
def test_a_retried_write_never_makes_a_recording_visible_twice(backend, request, dialogs, tmp_path):
    if backend == "s3":
        root = request.getfixturevalue("s3_server").url("retried")
    else:
        root = str(tmp_path / "retried")
    settings = WriteSettings(output=root, target_bytes=10_000_000, target_samples=3, sample_rate=SAMPLE_RATE)
    batch = packed_batch(dialogs)
    first = write_recordings(batch, settings)
    layout = DatasetLayout.of(root)
    once = sorted(read_manifest(layout, columns=["key"]).column("key").to_pylist())
    totals, rejected = dataset_totals(layout), read_rejected(layout).num_rows
    assert [o.outcome for o in first] == ["committed"] * len(dialogs) and rejected > 0

    # A worker that died after its manifests landed: Ray runs the same batch again, on another writer.
    write_recordings(batch, settings)
    assert len(layout.committed_shards()) == 2 * len(set(
        read_manifest(layout, columns=["shard"]).column("shard").to_pylist()))
    assert sorted(read_manifest(layout, columns=["key"]).column("key").to_pylist()) == once
    assert sorted(s.key for s in iter_samples(root)) == once
    assert dataset_totals(layout) == totals and read_rejected(layout).num_rows == rejected
    assert done_recordings(layout) == {p.recording_id for p in batch}
    assert verify_dataset(layout) == (len(once), [])
    assert read_manifest(layout, columns=["key"], superseded=True).num_rows == len(once)

    # gc: the duplicates' shards go (a dry run first), an orphan only once past its grace period.
    orphan = layout.shard_tar("shard-0123456789ab-000000")
    layout.storage.write_bytes(orphan, b"a tar whose writer died before its manifest")
    dry = shards_cli("gc", layout.url, "--dry-run")
    assert dry.returncode == 0 and dry.stdout.count("would remove") == len(layout.committed_shards())
    assert "0123456789ab" not in dry.stdout, "a fresh orphan may belong to a live writer"
    gc = shards_cli("gc", layout.url, "--grace-seconds", "0")
    assert gc.returncode == 0, gc.stderr
    assert not layout.storage.exists(orphan)
    assert read_manifest(layout, columns=["key"], superseded=True).num_rows == 0
    assert sorted(s.key for s in iter_samples(root)) == once and verify_dataset(layout) == (len(once), [])


def test_inputs_on_s3_are_listed_from_a_prefix_a_glob_or_a_list_file(s3_server):
    from pipeline.inputs import InputError, list_inputs
    from pipeline.shards.storage import storage_for

    root = s3_server.url("inputs")
    storage = storage_for(root)
    for name in ("a.wav", "b.FLAC", "notes.txt", "deep/c.wav"):
        storage.write_bytes(storage.join(storage.root, name), b"bytes")
    wav, flac, deep = f"{root}/a.wav", f"{root}/b.FLAC", f"{root}/deep/c.wav"
    assert list_inputs(root + "/", ["wav", "flac"]) == [wav, flac, deep]
    assert list_inputs(f"{root}/*.wav", ["wav"]) == [wav, deep]
    storage.write_bytes(storage.join(storage.root, "list.txt"), f"# chosen\n{deep}\n{wav}\n".encode())
    assert list_inputs(f"{root}/list.txt", ["wav"]) == [deep, wav]
    assert list_inputs(wav, ["wav"]) == [wav]
    with pytest.raises(InputError, match="no object under it"):
        list_inputs(s3_server.url("empty"), ["wav"])


def test_staging_left_by_killed_processes_is_removed_and_nobody_elses(tmp_path):
    """A SIGKILLed uploader leaves its part on the node's temp disk; the next process to stage removes it,
    and leaves running processes' staging, other PID namespaces' and foreign files alone."""
    from pipeline.shards.storage import INPUT_PREFIX, UPLOAD_PREFIX, remove_staging_of_dead_processes, staging_prefix

    killed = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    killed.kill()
    killed.wait()
    ours = staging_prefix(UPLOAD_PREFIX)
    namespace = ours[len(UPLOAD_PREFIX):].split("-")[0]
    dead_part = tmp_path / f"{UPLOAD_PREFIX}{namespace}-{killed.pid}-x1"
    dead_part.mkdir()
    (dead_part / "part").write_bytes(b"half a shard")
    dead_input = tmp_path / f"{INPUT_PREFIX}{namespace}-{killed.pid}-x2.flac"
    dead_input.write_bytes(b"a remote input")
    kept = [tmp_path / f"{ours}x3", tmp_path / f"{UPLOAD_PREFIX}1{namespace}-{killed.pid}-x4",
            tmp_path / f"{UPLOAD_PREFIX}old", tmp_path / "unrelated"]
    for path in kept:
        path.mkdir()
    assert sorted(remove_staging_of_dead_processes(str(tmp_path))) == sorted(map(str, (dead_part, dead_input)))
    assert sorted(tmp_path.iterdir()) == sorted(kept)
