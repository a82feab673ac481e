"""The curation job end to end on a real Ray cluster: submitted, bad inputs, exactly once, transcripts."""
from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from pipeline.shards import DatasetLayout, iter_samples
from pipeline.shards.manifest import read_failed, read_manifest, read_rejected
from pipeline.shards.schema import recording_id_for
from pipeline.shards.verify import verify_dataset
from jobs.build_models import curate_overrides
from tests.jobs.conftest import REPO, VENV_BIN, ray_env, write_silence


def curate_args(input_spec, output, models, *extra) -> list[str]:
    return ["-m", "jobs.curate", "--config", "configs/curate/demo.yaml", f"input={input_spec}", f"output={output}",
            *curate_overrides(models), "ray.progress_bars=false", *extra]


def run_curate(ray_cluster, *args, timeout=600) -> subprocess.CompletedProcess:
    """The job's driver on this machine, attached to the shared cluster through RAY_ADDRESS."""
    env = {**ray_env(), "RAY_ADDRESS": ray_cluster[0]}
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


def outcomes(dataset: Path) -> dict[str, list[str]]:
    """For each source, the places it appears in: committed, rejected, failed."""
    layout = DatasetLayout.of(dataset)
    places: dict[str, list[str]] = {}
    for source in set(read_manifest(layout).column("source").to_pylist()):
        places.setdefault(source, []).append("committed")
    committed = set(places)
    for source in set(read_rejected(layout).column("source").to_pylist()) - committed:
        places.setdefault(source, []).append("rejected")
    for row in read_failed(layout).to_pylist():
        places.setdefault(row["source"], []).append("failed")
    return places


def words(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9' ]", " ", text.lower()).split()


def word_error_rate(reference: str, hypothesis: str) -> float:
    ref, hyp = words(reference), words(hypothesis)
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1] / max(1, len(ref))


def test_job_submitted_to_a_two_node_cluster(ray_cluster, spoken_inputs, offline_models, tmp_path):
    folder, truth = spoken_inputs
    dataset = tmp_path / "curated"
    result = subprocess.run(
        [f"{VENV_BIN}/ray", "job", "submit", "--address", ray_cluster[1], "--working-dir", str(REPO), "--",
         "python", *curate_args(folder, dataset, offline_models)],
        cwd=REPO, env=ray_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "succeeded" in result.stdout + result.stderr
    assert "curation summary" in result.stdout

    layout = DatasetLayout.of(dataset)
    checked, problems = verify_dataset(layout)
    assert checked > 0 and problems == []
    assert outcomes(dataset) == {source: ["committed"] for source in truth}
    info = json.loads((dataset / "dataset.json").read_text())
    assert info["last_run"]["recordings"] == {"committed": len(truth)}
    assert info["totals"]["segments"] == checked

    # Transcripts of clean generated speech by the real tiny.en model: measured word error rate.
    hypotheses: dict[str, list[str]] = {}
    for sample in iter_samples(dataset):
        hypotheses.setdefault(sample.record.source, []).append(sample.record.text)
        assert sample.record.quality.dnsmos_ovrl is not None and sample.record.language == "en"
        # semantic tokens from the tiny tokenizer, as many as the segment's duration calls for (12.5 Hz)
        assert sample.tokens is not None and len(sample.tokens) == sample.record.tokens.count
        assert abs(len(sample.tokens) - 12.5 * sample.record.duration) <= 1
    wers = [word_error_rate(truth[s], " ".join(hypotheses[s])) for s in truth]
    print(f"word error rate per recording: {[round(w, 3) for w in wers]}, mean {np.mean(wers):.3f}")
    assert np.mean(wers) < 0.30


@pytest.fixture
def mixed_inputs(spoken_inputs, tmp_path) -> tuple[Path, dict[str, str]]:
    """Two good dialogs and one of every kind of bad input, with the place each must end in."""
    folder = tmp_path / "inputs"
    folder.mkdir()
    expect = {}
    for good in sorted(spoken_inputs[0].glob("*.wav"))[:2]:
        expect[str(shutil.copy(good, folder / good.name))] = "committed"
    (folder / "empty.wav").write_bytes(b"")
    (folder / "not-audio.mp3").write_bytes(b"plain text, certainly not audio " * 50)
    (folder / "a-folder.flac").mkdir()
    sf.write(folder / "zero.wav", np.zeros(0, dtype=np.float32), 16000)
    nan = np.full(16000, 0.1, dtype=np.float32)
    nan[5:50] = np.nan
    sf.write(folder / "nan.wav", nan, 16000, subtype="FLOAT")
    for name in ("empty.wav", "not-audio.mp3", "a-folder.flac", "zero.wav", "nan.wav"):
        expect[str(folder / name)] = "failed"
    expect[str(write_silence(folder / "silence.wav"))] = "rejected"
    (folder / "notes.txt").write_text("not an input: wrong extension")
    return folder, expect


def test_every_input_ends_in_exactly_one_place(ray_cluster, mixed_inputs, offline_models, tmp_path):
    folder, expect = mixed_inputs
    dataset = tmp_path / "curated"
    args = curate_args(folder, dataset, offline_models, "quality.dnsmos=false")
    first = run_curate(ray_cluster, *args)
    assert first.returncode == 0, first.stderr[-3000:]
    assert outcomes(dataset) == {source: [place] for source, place in expect.items()}

    failed = {r["source"]: r for r in read_failed(DatasetLayout.of(dataset)).to_pylist()}
    assert failed[str(folder / "a-folder.flac")]["message"].endswith("is a directory, not an audio file")
    assert "NaN" in failed[str(folder / "nan.wav")]["message"]
    assert {r["stage"] for r in failed.values()} == {"decode"}
    assert all(r["recording_id"] == recording_id_for(s) for s, r in failed.items())

    manifests = sorted(p.name for p in (dataset / "manifest").iterdir())
    second = run_curate(ray_cluster, *args)
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"{len(expect)} already done, 0 to process" in second.stdout
    assert sorted(p.name for p in (dataset / "manifest").iterdir()) == manifests
    assert outcomes(dataset) == {source: [place] for source, place in expect.items()}


def test_configuration_error_stops_before_any_work(ray_cluster, spoken_inputs, offline_models, tmp_path):
    folder, _ = spoken_inputs
    result = run_curate(ray_cluster, *curate_args(folder, tmp_path / "out", offline_models,
                                                  "diarize.cluster_merge_threshold=3"))
    assert result.returncode == 2
    assert "cosine similarity" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def audio_hashes(dataset: Path) -> dict[str, str]:
    rows = read_manifest(DatasetLayout.of(dataset), columns=["key", "sha256_flac"]).to_pylist()
    keys = [r["key"] for r in rows]
    assert len(keys) == len(set(keys)), "duplicate sample keys"
    return {r["key"]: r["sha256_flac"] for r in rows}


def test_killed_job_resumes_to_the_same_dataset(ray_cluster, spoken_inputs, offline_models, tmp_path):
    folder, truth = spoken_inputs
    extra = ["quality.dnsmos=false", "shards.target_samples=1", "resources.transcribe.batch_size=1",
             "resources.diarize.batch_size=1", "resources.quality.batch_size=1", "resources.tokenize.batch_size=1"]
    reference = tmp_path / "uninterrupted"
    assert run_curate(ray_cluster, *curate_args(folder, reference, offline_models, *extra)).returncode == 0

    killed = tmp_path / "killed"
    env = {**ray_env(), "RAY_ADDRESS": ray_cluster[0]}
    proc = subprocess.Popen([sys.executable, *curate_args(folder, killed, offline_models, *extra)], cwd=REPO,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not list((killed / "manifest").glob("*.parquet")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    committed_at_kill = len(list((killed / "manifest").glob("*.parquet")))
    assert 1 <= committed_at_kill < len(truth), "the kill must land mid-run"

    resumed = run_curate(ray_cluster, *curate_args(folder, killed, offline_models, *extra))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"{committed_at_kill} already done" in resumed.stdout
    assert audio_hashes(killed) == audio_hashes(reference)
    assert verify_dataset(DatasetLayout.of(killed))[1] == []
