"""The curation job end to end on a real Ray cluster: submitted, bad inputs, exactly once, transcripts."""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from pipeline.shards import DatasetLayout, iter_samples
from pipeline.shards.manifest import read_failed, read_manifest, read_rejected
from pipeline.shards.schema import printable, recording_id_for
from pipeline.shards.storage import UPLOAD_PREFIX
from pipeline.shards.verify import verify_dataset
from jobs import curate
from jobs.build_models import curate_overrides
from pipeline.summary import CurationSummary
from pipeline.synthetic import make_dialog
from tests.jobs.conftest import DIALOG_LINES, REPO, VENV_BIN, ray_env, write_silence


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


def upload_with_bad_inputs(folder: Path, url: str, scratch: Path) -> dict[str, str]:
    """The spoken inputs and one of each kind of bad object under a prefix, with the place each must end in."""
    import s3fs

    fs = s3fs.S3FileSystem()  # endpoint and credentials from the AWS_* environment, as users have them
    expect = {}
    for path in sorted(folder.glob("*.wav")):
        fs.put_file(str(path), f"{url}/{path.name}")
        expect[f"{url}/{path.name}"] = "committed"
    nan = np.full(16000, 0.1, dtype=np.float32)
    nan[5:50] = np.nan
    sf.write(scratch / "nan.wav", nan, 16000, subtype="FLOAT")
    bad = {"empty.wav": b"", "not-audio.mp3": b"plain text, certainly not audio " * 50,
           "nan.wav": (scratch / "nan.wav").read_bytes()}
    for name, data in bad.items():
        fs.pipe_file(f"{url}/{name}", data)
        expect[f"{url}/{name}"] = "failed"
    fs.put_file(str(write_silence(scratch / "silence.wav")), f"{url}/silence.wav")
    expect[f"{url}/silence.wav"] = "rejected"
    return expect


def test_job_submitted_to_a_two_node_cluster(ray_cluster, s3_server, spoken_inputs, offline_models, tmp_path):
    """`ray job submit` of the demo config: inputs listed from an S3 prefix (good and bad ones), shards
    committed by two writers straight to the store, then a rerun that adds nothing. Local inputs and
    outputs on the same cluster are the other tests' (test_every_input_ends_in_exactly_one_place)."""
    folder, truth = spoken_inputs
    raw, dataset = s3_server.url("raw"), s3_server.url("curated")
    expect, input_spec = upload_with_bad_inputs(folder, raw, tmp_path), raw + "/"
    truth = {f"{raw}/{Path(source).name}": text for source, text in truth.items()}
    args = curate_args(input_spec, dataset, offline_models, "resources.write.concurrency=2",
                       "resources.write.batch_size=2")  # committing side by side
    result = subprocess.run(
        [f"{VENV_BIN}/ray", "job", "submit", "--address", ray_cluster[1], "--working-dir", str(REPO), "--",
         "python", *args], cwd=REPO, env=ray_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "succeeded" in result.stdout + result.stderr
    assert "curation summary" in result.stdout
    # each operator named after its stage in Ray's plan; progress from the driver itself, not Ray's log blocks
    assert all(f"MapBatches({stage})" in result.stdout for stage in ("diarize", "transcribe", "quality", "tokenize"))
    assert re.search(r"^curate: (no recording finished yet|\d+ recording\(s\) done)", result.stdout, re.MULTILINE)
    assert "logging_progress" not in result.stdout
    # and none of Ray's routine notices: a dataset's start and end, bars it was told to leave off
    assert not re.search(r"Starting execution of Dataset|execution finished|Progress bars disabled", result.stdout)

    layout = DatasetLayout.of(dataset)
    checked, problems = verify_dataset(layout)
    assert checked > 0 and problems == []
    assert outcomes(dataset) == {source: [place] for source, place in expect.items()}
    info = layout.read_info()
    assert info["last_run"]["recordings"].get("committed") == len(truth)
    assert info["totals"]["segments"] == checked
    # no audio through the driver: it received outcome records only
    assert 0 < info["last_run"]["driver_bytes"] < 0.01 * info["last_run"]["bytes_committed"]
    failed = {r["source"]: r["message"] for r in read_failed(layout).to_pylist()}
    assert "empty (0 bytes)" in failed[f"{raw}/empty.wav"] and "NaN" in failed[f"{raw}/nan.wav"]
    manifests = layout.committed_shards()
    again = run_curate(ray_cluster, *args)  # exactly once: a rerun adds nothing
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"{len(expect)} already done, 0 to process" in again.stdout
    assert layout.committed_shards() == manifests

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
    latin1 = folder / os.fsdecode(b"caf\xe9.wav")  # not UTF-8: an input like any other
    shutil.copy(sorted(spoken_inputs[0].glob("*.wav"))[2], latin1)
    expect[printable(str(latin1))] = "committed"
    shutil.copy(sorted(spoken_inputs[0].glob("*.wav"))[3], tmp_path / "later.wav")  # not an input yet
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
    # where an input ends is decided by decode (failures) and diarization (no speech): the other model
    # stages only slow this test down (the two-node test runs them all)
    args = curate_args(folder, dataset, offline_models, "quality.dnsmos=false", "enhance.enabled=false",
                       "transcribe.enabled=false", "tokenize.enabled=false")
    first = run_curate(ray_cluster, *args)
    assert first.returncode == 0, first.stderr[-3000:]
    assert outcomes(dataset) == {source: [place] for source, place in expect.items()}

    failed = {r["source"]: r for r in read_failed(DatasetLayout.of(dataset)).to_pylist()}
    assert failed[str(folder / "a-folder.flac")]["message"].endswith("is a directory, not an audio file")
    assert "NaN" in failed[str(folder / "nan.wav")]["message"]
    assert {r["stage"] for r in failed.values()} == {"decode"}
    assert all(r["recording_id"] == recording_id_for(s) for s, r in failed.items())

    assert printable(str(folder / os.fsdecode(b"caf\xe9.wav"))).endswith("caf\\xe9.wav")
    assert recording_id_for(os.fsdecode(str(folder).encode() + b"/caf\xe9.wav")) in {
        r["recording_id"] for r in read_manifest(DatasetLayout.of(dataset)).to_pylist()}

    # A rerun adds nothing (the S3 variant of the submitted job checks that); a transient failure is not
    # forever: the folder becomes a real recording, and a retry commits it, superseding its failed row;
    # inputs that fail again count once, and everything done before is skipped.
    manifests = sorted(p.name for p in (dataset / "manifest").iterdir())
    (folder / "a-folder.flac").rmdir()
    shutil.copy(tmp_path / "later.wav", folder / "a-folder.flac")
    retried = run_curate(ray_cluster, *args, "retry_failed=true")
    assert retried.returncode == 0, retried.stderr[-3000:]
    assert f"{len(expect)} inputs, {len(expect) - 5} already done (failed ones retried), 5 to process" in retried.stdout
    assert set(manifests) < {p.name for p in (dataset / "manifest").iterdir()}  # the old ones untouched, one new
    expect[str(folder / "a-folder.flac")] = "committed"
    assert outcomes(dataset) == {source: [place] for source, place in expect.items()}
    assert DatasetLayout.of(dataset).is_ours() and json.loads((dataset / "dataset.json").read_text())[
        "totals"]["failed"] == 4


def test_configuration_error_stops_before_any_work(ray_cluster, spoken_inputs, offline_models, tmp_path):
    folder, _ = spoken_inputs
    result = run_curate(ray_cluster, *curate_args(folder, tmp_path / "out", offline_models,
                                                  "diarize.cluster_merge_threshold=3"))
    assert result.returncode == 2
    assert "cosine similarity" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def production_on_this_machine(models: dict) -> list[str]:
    """configs/curate/default.yaml run here: its model names resolved to the offline folders, its GPU stages
    on the CPU, and pools small enough for the test cluster's 3 CPUs. Every threshold stays the production one."""
    overrides = [*curate_overrides(models), "enhance.model=htdemucs_tiny", "transcribe.compute_type=int8"]
    for stage in ("enhance", "diarize", "transcribe", "tokenize"):
        device = "diarize.pyannote.device" if stage == "diarize" else f"{stage}.device"
        overrides += [f"{device}=cpu", f"resources.{stage}.num_gpus=0"]
    for stage in ("write", "enhance", "diarize", "transcribe", "quality", "tokenize"):
        overrides += [f"resources.{stage}.concurrency=1", f"resources.{stage}.num_cpus=0.25",
                      f"resources.{stage}.memory_mb=1024"]
    return [*overrides, "resources.decode.num_cpus=0.25", "resources.pack.num_cpus=0.25",
            "resources.decode.memory_mb=512", "resources.pack.memory_mb=512", "ray.progress_bars=false"]


def test_the_production_config_curates_trainable_data(ray_cluster, offline_models, tmp_path):
    from trainer.checks import dataset_problems

    lines = DIALOG_LINES[0] + DIALOG_LINES[1]
    dialog = make_dialog(lines, seed=7, noise_level=0.0)
    sf.write(tmp_path / "dialog.wav", dialog.audio, dialog.sample_rate, subtype="PCM_16")
    result = run_curate(ray_cluster, "-m", "jobs.curate", "--config", "configs/curate/default.yaml",
                        f"input={tmp_path / 'dialog.wav'}", f"output={tmp_path / 'curated'}",
                        *production_on_this_machine(offline_models))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    problems = []
    found = dataset_problems(problems.append, "data.dataset", str(tmp_path / "curated"), readers=1)
    assert problems == [] and found is not None  # committed samples, every one with semantic tokens
    samples = list(iter_samples(tmp_path / "curated", audio="both"))
    assert samples and all(s.tokens is not None and s.enhanced is not None and s.record.text for s in samples)


MODEL_FREE = ["enhance.enabled=false", "diarize.backend=fixed", "transcribe.enabled=false", "quality.enabled=false",
              "tokenize.enabled=false", "decode.max_session_minutes=0.1", "decode.split_search_seconds=2"]


def test_model_free_curation_packs_in_the_decode_tasks(ray_cluster, spoken_inputs, offline_models, tmp_path):
    """With no model stage, fixed windows and pack run in the decode tasks (no pool of their own; a task that
    holds 1.5 CPUs packs two sessions at a time): the shards hold byte for byte the FLAC the stage functions
    give in one process, for files split into 6 s sessions, read by libsndfile (16 kHz mono WAV) or by FFmpeg
    (a 44.1 kHz stereo FLAC, resampled and downmixed)."""
    from jobs.cli import load_settings
    from pipeline.config import CurateConfig
    from pipeline.shards import PipelineInfo
    from pipeline.stages.base import run_stage
    from pipeline.stages.decode import decode_sessions
    from pipeline.stages.diarize import DiarizeStage
    from pipeline.shards.manifest import MEMBER_AUDIO
    from pipeline.stages.pack import pack_recording

    folder, _ = spoken_inputs
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for path in sorted(folder.glob("*.wav"))[:2]:
        shutil.copy(path, inputs)
    subprocess.run(["sox", str(path), "-r", "44100", "-c", "2", str(inputs / "stereo-44k.flac")], check=True)
    dataset = tmp_path / "model-free"
    result = run_curate(ray_cluster, *curate_args(inputs, dataset, offline_models, *MODEL_FREE,
                                                  "resources.decode.num_cpus=1.5"))
    assert result.returncode == 0, result.stderr[-3000:]

    cfg = load_settings(CurateConfig, "configs/curate/demo.yaml", ["input=x", "output=x", *MODEL_FREE])
    assert "diarize" not in cfg.pools()
    windows, pipeline = DiarizeStage(cfg.diarize, cfg.sample_rate), PipelineInfo.for_config("test", {})
    expected = {}
    for source in sorted(inputs.iterdir()):
        for work in decode_sessions(str(source), cfg.decode, cfg.sample_rate):
            for sample in pack_recording(run_stage(windows, [work])[0], pipeline).samples:
                expected[sample.record.key] = hashlib.sha256(dict(sample.members)[MEMBER_AUDIO]).hexdigest()
    assert len({key.rsplit("_", 1)[0] for key in expected}) > len(list(inputs.iterdir()))  # split into sessions
    assert audio_hashes(dataset) == expected


def audio_hashes(dataset: Path | str) -> dict[str, str]:
    rows = read_manifest(DatasetLayout.of(dataset), columns=["key", "sha256_flac"]).to_pylist()
    keys = [r["key"] for r in rows]
    assert len(keys) == len(set(keys)), "duplicate sample keys"
    return {r["key"]: r["sha256_flac"] for r in rows}


FAULT_SETTINGS = ["quality.dnsmos=false", "shards.target_samples=1", "resources.transcribe.batch_size=1",
                  "resources.diarize.batch_size=1", "resources.quality.batch_size=1",
                  "resources.tokenize.batch_size=1"]


@pytest.fixture(scope="module")
def uninterrupted_reference(ray_cluster, spoken_inputs, offline_models, tmp_path_factory) -> Path:
    """The fault tests' settings, run once without faults, to a local directory."""
    reference = tmp_path_factory.mktemp("reference") / "uninterrupted"
    result = run_curate(ray_cluster, *curate_args(spoken_inputs[0], reference, offline_models, *FAULT_SETTINGS))
    assert result.returncode == 0, result.stderr[-3000:]
    return reference


def writer_processes() -> list:
    import psutil

    return [p for p in psutil.process_iter(["cmdline"]) if "MapBatches(write)" in " ".join(p.info["cmdline"] or [])]


def kill_a_writer_when(condition, deadline: float) -> str:
    """SIGKILL the writer actor process as soon as `condition()` holds; what it saw, for the failure message."""
    seen = None
    while time.time() < deadline:
        seen = condition()
        victims = writer_processes() if seen else []
        if victims:
            for victim in victims:
                victim.kill()
            return ""
        time.sleep(0.02)
    return f"condition {seen!r}, writer processes {[p.info['cmdline'] for p in writer_processes()]}"


def test_writers_killed_mid_shard_and_after_a_manifest_lose_and_repeat_nothing(
        ray_cluster, s3_server, spoken_inputs, offline_models, uninterrupted_reference):
    """SIGKILL of the writer actor while it stages a shard, then again right after one of its manifests
    landed on S3 with more of its batch to go: Ray restarts it and retries the batch, which commits the
    same recordings again; readers see each once, gc removes exactly what the faults left, and no staged
    part is left on the node's disk."""
    folder, truth = spoken_inputs
    dataset = DatasetLayout.of(s3_server.url("writer-faults"))
    staging = lambda: {str(p) for p in Path(tempfile.gettempdir()).glob(f"{UPLOAD_PREFIX}*")}  # noqa: E731
    before = staging()
    env = {**ray_env(), "RAY_ADDRESS": ray_cluster[0]}
    job = subprocess.Popen([sys.executable, *curate_args(folder, dataset.url, offline_models, *FAULT_SETTINGS,
                                                         "resources.write.batch_size=2")],
                           cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    assert not kill_a_writer_when(lambda: staging() - before, deadline)  # mid-shard
    assert not kill_a_writer_when(lambda: dataset.committed_shards(), deadline)  # right after a manifest
    output = job.communicate(timeout=600)[0]
    assert job.returncode == 0, output[-3000:]
    assert staging() - before == set()  # the restarted writer removed the killed one's part from the node's disk

    assert outcomes(dataset.url) == {source: ["committed"] for source in truth}
    assert audio_hashes(dataset.url) == audio_hashes(uninterrupted_reference)  # nothing lost, nothing twice
    assert sorted(s.key for s in iter_samples(dataset.url)) == sorted(audio_hashes(uninterrupted_reference))
    superseded = set(read_manifest(dataset, columns=["shard"], superseded=True).column("shard").to_pylist())
    counted = set(read_manifest(dataset, columns=["shard"]).column("shard").to_pylist())
    left_over = {*dataset.orphans(), *(f for s in superseded - counted
                                        for f in (dataset.shard_tar(s), dataset.shard_manifest(s)))}
    gc = subprocess.run([sys.executable, "-m", "pipeline.inspect", "gc", dataset.url, "--grace-seconds", "0"],
                        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert gc.returncode == 0, gc.stderr
    assert {line.split(" ", 1)[1] for line in gc.stdout.splitlines() if line.startswith("removed ")} == {
        dataset.storage.show(f) for f in left_over}
    assert dataset.orphans() == [] and read_manifest(dataset, columns=["key"], superseded=True).num_rows == 0
    assert audio_hashes(dataset.url) == audio_hashes(uninterrupted_reference)
    assert verify_dataset(dataset)[1] == []
    print(f"writer faults left {len(superseded)} superseded shards and {len(left_over)} files for gc")


def test_killed_job_resumes_to_the_same_dataset(ray_cluster, s3_server, spoken_inputs, offline_models,
                                                uninterrupted_reference):
    """SIGKILL of the driver mid-run, on S3 (no rename there: the manifest upload is the commit), then a
    rerun: the same samples, byte for byte, as an uninterrupted run to a local directory."""
    folder, truth = spoken_inputs
    extra = [*FAULT_SETTINGS, "resources.write.batch_size=1"]
    killed = DatasetLayout.of(s3_server.url("killed"))
    env = {**ray_env(), "RAY_ADDRESS": ray_cluster[0]}
    proc = subprocess.Popen([sys.executable, *curate_args(folder, killed.url, offline_models, *extra)], cwd=REPO,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not killed.committed_shards():
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    time.sleep(3)  # a writer already past its tar upload may still commit: the resume counts what is there
    committed_at_kill = len(set(read_manifest(killed, columns=["recording_id"]).column("recording_id").to_pylist()))
    assert 1 <= committed_at_kill < len(truth), "the kill must land mid-run"

    resumed = run_curate(ray_cluster, *curate_args(folder, killed.url, offline_models, *extra))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"{committed_at_kill} already done" in resumed.stdout
    assert audio_hashes(killed.url) == audio_hashes(uninterrupted_reference)
    assert verify_dataset(killed)[1] == []


def run_driver_alone(*args) -> subprocess.CompletedProcess:
    """The job with no cluster to attach to (an embedded Ray would start): for checks made before any work."""
    env = {k: v for k, v in ray_env().items() if k != "RAY_ADDRESS"}
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_every_bad_setting_is_named_before_any_work(spoken_inputs, offline_models, tmp_path):
    folder, _ = spoken_inputs
    result = run_driver_alone(*curate_args(folder, tmp_path / "out", offline_models, "sample_rate=-1",
                                           "shards.target_bytes=0", "diarize.cluster_merge_threshold=3",
                                           "transcribe.model=/nonexistent", "quality.limits.min_duration=50",
                                           "enhance.device=cuda"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert all(line.startswith("curate: error: ") for line in lines)
    for expected in ("sample_rate=-1", "shards.target_bytes=0", "cosine similarity", "no CTranslate2 model folder",
                     "min_duration", "enhance: device cuda but resources.enhance.num_gpus=0"):
        assert sum(expected in line for line in lines) == 1, (expected, lines)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("overrides, message", [
    (["shards.target_bytes=abc"], "shards.target_bytes='abc' must be an integer"),
    (["sample_rate=abc"], "sample_rate='abc' must be an integer"),
    (["sample_rate=22050"], "the model stages work at 16000 Hz"),
    (["resources.transcribe.num_cpus=64"], "one actor needs 64 CPU"),
    (["resources.quality.concurrency=9"], "the pools need 4 CPU together"),
    (["transcribe.device=cuda", "resources.transcribe.num_gpus=1"], "this machine has no CUDA device"),
])
def test_settings_an_embedded_ray_can_never_run_are_refused(spoken_inputs, offline_models, tmp_path, overrides,
                                                            message):
    folder, _ = spoken_inputs
    result = run_driver_alone(*curate_args(folder, tmp_path / "out", offline_models, *overrides))
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_a_cluster_that_cannot_hold_the_pools_is_reported(ray_cluster, spoken_inputs, offline_models, tmp_path):
    folder, _ = spoken_inputs
    result = run_curate(ray_cluster, *curate_args(folder, tmp_path / "out", offline_models,
                                                  "resources.transcribe.num_cpus=8", "ray.schedule_timeout_s=3"))
    assert result.returncode == 3, result.stderr[-2000:]
    assert "resources.transcribe: one actor needs 8 CPU" in result.stderr and "the cluster has 3" in result.stderr
    assert "waited 3 s" in result.stderr and "Traceback" not in result.stderr


def test_an_output_that_is_not_a_dataset_of_ours_is_never_touched(spoken_inputs, offline_models, tmp_path):
    folder, _ = spoken_inputs
    foreign = tmp_path / "theirs"
    (foreign / "shards").mkdir(parents=True)
    (foreign / "shards" / "other.tar").write_bytes(b"someone else's tar")
    (foreign / "shards" / "shard-0123456789ab-000000.tar").write_bytes(b"named like ours, still not ours")
    before = sorted(p.name for p in (foreign / "shards").iterdir())
    for extra in (["shards.target_bytes=abc"], []):
        result = run_driver_alone(*curate_args(folder, foreign, offline_models, *extra))
        assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "is not an audiomill dataset" in result.stderr
    assert sorted(p.name for p in (foreign / "shards").iterdir()) == before


def test_config_hash_covers_what_changes_the_data():
    from jobs.cli import load_settings
    from pipeline.config import CurateConfig, provenance_settings
    from pipeline.shards import PipelineInfo

    def config_hash(*overrides: str) -> str:
        cfg = load_settings(CurateConfig, "configs/curate/demo.yaml", ["input=a", "output=b", *overrides])
        return PipelineInfo.for_config("v", provenance_settings(cfg)).config_hash

    same = config_hash()
    assert config_hash("output=/elsewhere", "input=/other", "resources.transcribe.concurrency=4",
                       "ray.input_blocks=7", "retry_failed=true") == same
    assert config_hash("diarize.cluster_merge_threshold=0.7") != same
    assert config_hash("transcribe.model=other-model") != same


def test_a_job_waiting_for_its_first_outcome_still_shows_progress(monkeypatch, capsys):
    # the stream says None while nothing finishes (the demo's actors load their models for over a minute)
    monkeypatch.setattr(curate, "PROGRESS_EVERY_SECONDS", 0.0)
    assert curate.follow(iter([None, None]), CurationSummary(inputs=1, skipped_done=0), lambda totals: None,
                         print) == 0
    lines = capsys.readouterr().out.splitlines()
    assert sum(bool(re.fullmatch(r"curate: no recording finished yet, \d+ s", line)) for line in lines) == 2
