import io
import tarfile

import pytest

from pipeline.shards import DatasetLayout
from pipeline.shards.verify import verify_dataset


def first_shard(root):
    return DatasetLayout.of(root).committed_shards()[0]


def messages(root):
    checked, problems = verify_dataset(DatasetLayout.of(root))
    return checked, [str(p) for p in problems]


def rewrite_tar(path, keep=lambda info: True):
    with tarfile.open(path) as src:
        members = [(m, src.extractfile(m).read()) for m in src.getmembers() if keep(m)]
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as dst:
        for info, data in members:
            dst.addfile(info, io.BytesIO(data))


def test_clean_dataset_has_no_problems(built_dataset):
    checked, problems = messages(built_dataset)
    assert checked > 0 and problems == []


def test_truncated_tar_is_reported(dataset_copy):
    shard = first_shard(dataset_copy)
    tar = dataset_copy / "shards" / f"{shard}.tar"
    tar.write_bytes(tar.read_bytes()[: tar.stat().st_size // 2])
    _, problems = messages(dataset_copy)
    assert any(shard in p and "truncated" in p for p in problems)
    assert any(shard in p and "missing member" in p for p in problems)  # samples past the cut


def test_flipped_byte_is_reported_with_its_key(dataset_copy):
    shard = first_shard(dataset_copy)
    tar = dataset_copy / "shards" / f"{shard}.tar"
    with tarfile.open(tar) as t:
        victim = next(m for m in t.getmembers() if m.name.endswith(".flac"))
    data = bytearray(tar.read_bytes())
    data[victim.offset_data + victim.size // 2] ^= 0xFF
    tar.write_bytes(bytes(data))
    _, problems = messages(dataset_copy)
    key = victim.name.split(".")[0]
    assert problems == [f"{shard}/{key}: sha256 mismatch in {victim.name}"]


def test_missing_member_is_reported(dataset_copy):
    shard = first_shard(dataset_copy)
    tar = dataset_copy / "shards" / f"{shard}.tar"
    with tarfile.open(tar) as t:
        dropped = next(m.name for m in t.getmembers() if m.name.endswith(".tok.npy"))
    rewrite_tar(tar, keep=lambda m: m.name != dropped)
    _, problems = messages(dataset_copy)
    assert problems == [f"{shard}/{dropped.split('.')[0]}: missing member {dropped}"]


def test_manifest_without_tar_is_reported(dataset_copy):
    shard = first_shard(dataset_copy)
    (dataset_copy / "shards" / f"{shard}.tar").unlink()
    _, problems = messages(dataset_copy)
    assert len(problems) == 1 and "is missing" in problems[0] and shard in problems[0]


def test_extra_member_is_reported(dataset_copy):
    shard = first_shard(dataset_copy)
    tar = dataset_copy / "shards" / f"{shard}.tar"
    with tarfile.open(tar, "a") as t:
        info = tarfile.TarInfo("../../escape.flac")
        info.size = 3
        t.addfile(info, io.BytesIO(b"abc"))
    _, problems = messages(dataset_copy)
    assert any("'../../escape.flac' is not in the manifest" in p for p in problems)


@pytest.mark.parametrize("wrong_count", [1, 500])
def test_token_count_against_duration(tmp_path, dialogs, wrong_count):
    import dataclasses

    import numpy as np

    from pipeline.shards import ShardWriter, TokenInfo, iter_samples
    from tests.conftest import SAMPLE_RATE, dialog_samples

    source, dialog = dialogs[0]
    samples, _ = dialog_samples(source, dialog)
    bad = samples[0]
    bad = dataclasses.replace(bad, record=dataclasses.replace(bad.record, tokens=TokenInfo(count=wrong_count)),
                              tokens=np.zeros(wrong_count, dtype=np.int32))
    with ShardWriter(tmp_path / "ds", sample_rate=SAMPLE_RATE) as w:
        w.add_recording([bad, *samples[1:]])
    assert len(list(iter_samples(tmp_path / "ds"))) == len(samples)
    _, problems = messages(tmp_path / "ds")
    assert len(problems) == 1 and f"{wrong_count} tokens" in problems[0] and bad.record.key in problems[0]
