"""`python -m jobs.demo` end to end on a small config: generated speech -> curation job -> inspection ->
evaluation -> pretraining and fine-tuning. That a rerun adds nothing is each job's own test (test_curate,
test_prepare_sft, the trainer's resume tests)."""
import json
import subprocess
import sys

from pipeline.shards import DatasetLayout
from pipeline.shards.manifest import read_manifest
from tests.jobs.conftest import REPO, ray_env

OVERRIDES = ["recordings=2", "long_recordings=1", "long_recording_minutes=0.6", "turns_per_recording=[3,4]",
             "curate.overrides=[decode.max_session_minutes=0.4,decode.split_search_seconds=10,"
             "quality.dnsmos=false,ray.progress_bars=false,shards.target_samples=4]",
             "train.pretrain.overrides=[train.steps=16,train.log_every=1,train.eval_every=0]",
             "train.sft.overrides=[train.steps=8,train.log_every=2,train.eval_every=0,data.seq_len=512]",
             "evaluate.ablate=false", "conversations.exchanges=2"]


def run_demo(workdir, ray_cluster):
    env = {**ray_env(), "RAY_ADDRESS": ray_cluster[0]}  # the session's cluster, not a second embedded Ray
    return subprocess.run([sys.executable, "-m", "jobs.demo", "--config", "configs/demo.yaml",
                           f"workdir={workdir}", *OVERRIDES], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=900)


def test_demo_curates_evaluates_and_trains_on_generated_speech(tmp_path, ray_cluster):
    first = run_demo(tmp_path, ray_cluster)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    out = first.stdout
    assert "curation summary" in out and "0 problems" in out, out[-3000:]
    dataset = tmp_path / "curated"
    # the labels scored against the generated truth (jobs.evaluate), both generated recordings and the long one
    report = json.loads((tmp_path / "evaluation" / "report.json").read_text())
    assert [r["name"] for r in report["recordings"]] == ["dialog-000", "dialog-001", "long-000"]
    assert 0 <= report["overall"]["der"] <= 1 and 0 <= report["overall"]["wer"] <= 1
    assert "overall " in out and (tmp_path / "evaluation" / "evaluation.png").is_file()
    rows = read_manifest(DatasetLayout.of(dataset)).to_pylist()
    sessions = {r["recording_id"] for r in rows if r["source"].endswith("long-000.wav")}
    assert len(sessions) >= 2 and all("-s" in s for s in sessions), (sessions, out[-3000:])  # split in sessions
    assert len(list((tmp_path / "plots").glob("*.png"))) == 4, out[-3000:]
    # the tiny model trained on the curated shards under torchrun, then fine-tuned
    pretrain = next(line for line in out.splitlines() if line.startswith("pretraining: loss"))
    first, last = (float(x) for x in pretrain.split("token ")[1].split(";")[0].split(" -> "))
    assert 6.5 < first < 7.5 and last < 0.85 * first, pretrain  # from about ln(1024): the tiny vocabulary
    assert (tmp_path / "runs" / "pretrain" / "loss_curve.png").is_file()
    assert (tmp_path / "runs" / "sft" / "checkpoints" / "step-00000008").is_dir()
    # fine-tuning mixed the curated ASR data with the prepared conversations (which conversation types a
    # few steps draw depends on how the shards were filled; each type's layout has its own tests)
    # 2 questions, 2 turns to transcribe, 2 spoken exchanges
    assert "prepare_sft: 6 conversations" in out, out[-3000:]
    prepared = read_manifest(DatasetLayout.of(tmp_path / "sft-conversations")).to_pylist()
    assert len({r["recording_id"] for r in prepared}) == 6, out[-3000:]  # every one prepared, none failed
    by_task = next(line for line in out.splitlines() if line.startswith("fine-tuning by task:"))
    assert "sft_asr" in by_task and ("sft_understanding" in by_task or "sft_speech2speech" in by_task), by_task
