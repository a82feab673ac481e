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


def test_energon_info_lint_and_loader_yield_our_samples(dataset_copy, capsys):
    from megatron.energon import WorkerConfig, get_loader, get_val_dataset

    assert shards_cli(["energon", str(dataset_copy)]) == 0
    assert "indexed" in capsys.readouterr().out
    info = energon_cli("info", dataset_copy)
    assert info.returncode == 0 and "AudiomillSample" in info.stdout, info.stdout + info.stderr
    lint = energon_cli("lint", dataset_copy, "--split-parts", "train")  # loads every sample
    assert lint.returncode == 0, lint.stdout[-2000:] + lint.stderr[-2000:]

    ours = {s.key: s for s in iter_samples(dataset_copy, audio="both")}
    dataset = get_val_dataset(str(dataset_copy), split_part="train", batch_size=1,
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


def test_a_dataset_on_object_storage_is_refused_with_the_reason(s3_server, dialogs):
    from tests.conftest import write_dataset

    url = write_dataset(s3_server.url("ds"), dialogs)
    with pytest.raises(DatasetError, match="local dataset"):
        write_energon_meta(DatasetLayout.of(url))
