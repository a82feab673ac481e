"""`audiomill-shards lhotse`: the real lhotse reads our samples in place, on a local disk and on S3."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.inspect import main as shards_cli
from pipeline.shards import iter_samples
from tests.conftest import write_dataset


@pytest.mark.parametrize("storage", ["local", "s3"])
def test_lhotse_loads_every_sample_with_our_audio_and_labels(storage, request, built_dataset, dialogs, tmp_path,
                                                            monkeypatch, capsys):
    from lhotse import CutSet

    if storage == "s3":
        dataset = write_dataset(request.getfixturevalue("s3_server").url("ds"), dialogs)
        # the cuts read each sample with `audiomill-shards export URL KEY --out -`, found on the PATH as users have it
        monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    else:
        dataset = built_dataset
    assert shards_cli(["lhotse", str(dataset), "--out", str(tmp_path / "lhotse")]) == 0
    assert "cuts" in capsys.readouterr().out

    cuts = CutSet.from_file(tmp_path / "lhotse" / "cuts.jsonl.gz")
    ours = {s.key: s for s in iter_samples(dataset)}
    assert sorted(c.id for c in cuts) == sorted(ours)
    for cut in cuts:
        sample, supervision = ours[cut.id], cut.supervisions[0]
        audio = cut.load_audio()
        assert audio.shape == (1, len(sample.audio))
        np.testing.assert_array_equal(audio[0], sample.audio)
        assert cut.sampling_rate == sample.record.audio.sample_rate
        assert (supervision.text, supervision.speaker, supervision.language) == (
            sample.record.text, sample.record.speaker, sample.record.language)
        words = supervision.alignment["word"]
        assert [w.symbol for w in words] == [w.word for w in sample.record.words]
        assert words[0].start == pytest.approx(sample.record.words[0].start - sample.record.start, abs=1e-3)
