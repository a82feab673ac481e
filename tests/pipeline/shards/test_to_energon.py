"""`audiomill-shards energon`: the real megatron-energon accepts the dataset and yields our samples."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from pipeline.inspect import main as shards_cli
from pipeline.shards import iter_samples
from pipeline.shards.layout import DatasetError, DatasetLayout
from pipeline.shards.to_energon import write_energon_meta


def energon_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from megatron.energon.cli.main import main; main()", *map(str, args)],
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(params=["local", "s3"])
def energon_dataset(request, dataset_copy, dialogs):
    """The dataset's URL and the path energon reads it by: a local folder, or one on the test S3 server
    (energon through multi-storage-client's implicit profile, told only by the AWS_* environment)."""
    if request.param == "local":
        return str(dataset_copy), str(dataset_copy)
    from tests.conftest import write_dataset

    url = write_dataset(request.getfixturevalue("s3_server").url("ds"), dialogs)
    bucket, prefix = url.split("://", 1)[1].split("/", 1)
    return url, f"msc://_s3-{bucket}/{prefix}"


def test_energon_info_lint_and_loader_yield_our_samples(energon_dataset, capsys):
    from megatron.energon import WorkerConfig, get_loader, get_val_dataset

    url, path = energon_dataset
    assert shards_cli(["energon", url]) == 0
    assert f"energon reads it as {path}" in capsys.readouterr().out
    info = energon_cli("info", path)
    assert info.returncode == 0 and "AudiomillSample" in info.stdout, info.stdout + info.stderr
    lint = energon_cli("lint", path, "--split-parts", "train")  # loads every sample
    assert lint.returncode == 0, lint.stdout[-2000:] + lint.stderr[-2000:]

    ours = {s.key: s for s in iter_samples(url, audio="both")}
    dataset = get_val_dataset(path, split_part="train", batch_size=1,
                              worker_config=WorkerConfig(rank=0, world_size=1, num_workers=0))
    seen = []
    for batch in get_loader(dataset):
        key = batch.__key__[0]
        sample = ours[key]
        seen.append(key)
        np.testing.assert_array_equal(batch.audio[0][0].numpy(), sample.audio)
        np.testing.assert_array_equal(batch.enhanced[0][0].numpy(), sample.enhanced)
        np.testing.assert_array_equal(batch.tokens[0], sample.tokens)
        # energon's default batching collates the record dicts field by field
        assert batch.record["text"] == [sample.record.text] and batch.sample_rate == [16000]
        assert [w["word"] for w in batch.record["words"][0]] == [w.word for w in sample.record.words]
    assert sorted(seen) == sorted(ours)  # every sample once


def test_an_object_store_msc_cannot_reach_is_refused_with_the_reason():
    with pytest.raises(DatasetError, match="no implicit profile for memory://"):
        write_energon_meta(DatasetLayout.of("memory://bucket/ds"))
