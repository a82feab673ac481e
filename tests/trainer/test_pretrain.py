"""`jobs.pretrain` under real torchrun on CPU: data parallel, tensor parallel, two nodes, exact resume."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import psutil
import pytest

from bench.local_s3 import upload_folder
from tests.trainer.conftest import pretrain_overrides
from trainer.checkpointing import latest_checkpoint

REPO = Path(__file__).parents[2]
SHORT = ["train.steps=12", "train.log_every=1", "train.save_every=4", "train.eval_every=6",
         "train.whisper_frozen_fraction=0.25", "data.record_samples=true"]


def torchrun_cmd(inputs, run_dir, *extra, nproc=2, launcher=("--standalone",)):
    return [sys.executable, "-m", "torch.distributed.run", *launcher, "--nproc-per-node", str(nproc),
            "-m", "jobs.pretrain", "--config", "configs/pretrain/tiny.yaml", *pretrain_overrides(inputs, run_dir),
            f"train.eval_dataset={inputs['dataset']}", *SHORT, *extra]


def env():
    e = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        e.pop(key, None)  # a process group of the test process is not the job's
    return e


def run(cmd, timeout=400) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, cwd=REPO, env=env(), capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result


def model_flops_per_token_in_range(row: dict, ranks: int) -> bool:
    """A log row's model FLOPs per token (its TFLOP/s per rank over its tokens/s) lie between those of
    one-token samples and of whole rows of the tiny config's 256 (model.flops): what packed rows must cost."""
    from model.config import model_preset
    from model.flops import model_flops

    per_token = row["train/model_tflops_per_rank"] * 1e12 * ranks / row["train/tokens_per_s"]
    cfg = model_preset("tiny")
    return model_flops(cfg, 1, 1) <= per_token * (1 + 1e-9) and per_token <= model_flops(cfg, 1, 256) * (1 + 1e-9)


def losses(run_dir) -> dict[int, float]:
    rows = [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["train/loss"] for r in rows}


@pytest.fixture(scope="module")
def uninterrupted(training_inputs, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "uninterrupted"
    result = run(torchrun_cmd(training_inputs, run_dir))
    return run_dir, result


def test_two_processes_train_and_the_loss_falls(uninterrupted):
    run_dir, result = uninterrupted
    loss = losses(run_dir)
    assert sorted(loss) == list(range(1, 13))
    assert loss[12] < 0.75 * loss[1], loss
    assert "whisper frozen" in result.stdout  # the first 25% of steps
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["train/token_loss"] < 0.85 * rows[0]["train/token_loss"]  # per target token, both heads
    evals = [r["eval/loss"] for r in rows if "eval/loss" in r]
    assert len(evals) == 2 and evals[1] < evals[0]  # held-out loss at steps 6 and 12
    assert (run_dir / "loss_curve.png").stat().st_size > 10_000
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert all(model_flops_per_token_in_range(r, ranks=2) and "train/mfu" not in r for r in rows)  # no peak on CPU
    assert "GFLOP/s per rank" in result.stdout and "MFU" not in result.stdout
    latest = run_dir / "checkpoints" / (run_dir / "checkpoints" / "latest").read_text()
    assert latest.name == "step-00000012" and sorted(p.name for p in (latest / "loader").iterdir()) == [
        "dp00000.json", "dp00001.json"]
    # the console: the job's own lines, once, not the libraries' routine notices
    assert result.stdout.count("pretrain: 2 process(es) = tensor 1 x pipeline 1 x data 2") == 1
    assert "[Gloo]" not in result.stdout + result.stderr
    for notice in ("not installed", "is deprecated", "ShardedTensor", "No CUDA runtime"):
        assert notice not in result.stderr, result.stderr[-3000:]


@pytest.fixture(scope="module")
def killed(training_inputs, tmp_path_factory):
    """A two-rank run SIGKILLed (the whole process tree, as a lost node) after its step-8 checkpoint."""
    run_dir = tmp_path_factory.mktemp("runs") / "killed"
    sigkill_after_checkpoint(torchrun_cmd(training_inputs, run_dir), run_dir, 8)
    assert max(losses(run_dir)) < 12, "the kill must land before the end"
    return run_dir


def sigkill_after_checkpoint(cmd, run_dir: Path, step: int) -> None:
    """Start a run and SIGKILL it as soon as its step-`step` checkpoint is the latest."""
    proc = subprocess.Popen(cmd, cwd=REPO, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    marker, deadline = run_dir / "checkpoints" / "latest", time.time() + 300
    while time.time() < deadline and not (marker.exists() and marker.read_text() == f"step-{step:08d}"):
        time.sleep(0.02)
    # torchrun puts its workers in sessions of their own: kill the whole tree, as a lost node would
    for process in [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]:
        process.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)


def recorded(run_dir) -> list[dict]:
    """Every (step, dataset, epoch, key) the ranks recorded, over all ranks' files."""
    return [{"step": line["step"], "epoch": sample["epoch"], "key": key}
            for path in sorted((Path(run_dir) / "samples").glob("dp-*.jsonl"))
            for line in map(json.loads, path.read_text().splitlines())
            for sample in line["samples"] for key in sample.get("keys", [])]


def test_sigkill_and_resume_gives_the_same_losses(uninterrupted, killed, training_inputs, tmp_path):
    run_dir = shutil.copytree(killed, tmp_path / "killed")
    resumed = run(torchrun_cmd(training_inputs, run_dir))
    resumed_line = [line for line in resumed.stdout.splitlines() if "resumed from" in line]
    assert resumed_line and resumed_line[0].endswith("step-00000008 at step 8"), resumed.stdout[-3000:]
    assert losses(run_dir) == losses(uninterrupted[0])  # bit-identical: same batches, same updates
    assert recorded(run_dir) == recorded(uninterrupted[0])  # the killed steps' records were cut back


def settled_epochs(checkpoint: Path) -> int:
    """Epochs below this are over for every reader of the checkpoint: none is still in one or buffers one."""
    from trainer.data.reshard import readers_of

    readers = readers_of([json.loads(p.read_text()) for p in sorted((checkpoint / "loader").glob("dp*.json"))])
    return min(min([r["stream"]["datasets"][0]["epoch"], *(o["epoch"] for o in r["waiting_origins"] if "epoch" in o)])
               for r in readers)


def test_resumed_on_one_rank_then_on_two_every_segment_is_trained_once_per_epoch(killed, training_inputs, tmp_path):
    """DP=2 (in-process loaders) killed at step 8 -> DP=1 with a loader worker, stopped by SIGTERM -> DP=2 to
    step 18."""
    from tests.trainer.data.test_reshard import all_keys

    run_dir = shutil.copytree(killed, tmp_path / "resharded")
    # one rank, one loader worker process, stopped by SIGTERM (torchrun passes it on; the trainer saves at the
    # step boundary and its workers ignore it)
    fewer = subprocess.Popen(torchrun_cmd(training_inputs, run_dir, "data.num_workers=1", "train.eval_every=0",
                                          "train.steps=16", "train.save_every=100", nproc=1),
                             cwd=REPO, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    metrics = run_dir / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and not (len(metrics.read_text().splitlines()) >= 10 or fewer.poll() is not None):
        time.sleep(0.02)
    fewer.send_signal(signal.SIGTERM)
    out = fewer.communicate(timeout=120)[0]
    assert "at step 8 on 1 reader(s), was 2" in out and "stopped by SIGTERM" in out, out[-3000:]
    stopped = max(losses(run_dir))
    assert 10 <= stopped < 16 and (run_dir / "checkpoints" / f"step-{stopped:08d}").is_dir()
    more = run(torchrun_cmd(training_inputs, run_dir, "train.steps=18", "train.eval_every=0", nproc=2))
    assert f"at step {stopped} on 2 reader(s), was 1" in more.stdout, more.stdout[-2000:]
    assert sorted(losses(run_dir)) == list(range(1, 19))

    rows = recorded(run_dir)
    assert sorted({r["step"] for r in rows}) == list(range(1, 19))
    settled = settled_epochs(run_dir / "checkpoints" / "step-00000018")
    keys = sorted(all_keys(training_inputs["dataset"]))
    across = {8: 0, stopped: 0}  # epochs trained on both sides of each resume
    for epoch in range(settled):
        trained = [r for r in rows if r["epoch"] == epoch]
        counts = Counter(r["key"] for r in trained)
        assert sorted(counts) == keys and set(counts.values()) == {1}, (epoch, counts)
        steps = [r["step"] for r in trained]
        across = {b: n + (min(steps) <= b < max(steps)) for b, n in across.items()}
    assert settled >= 2 and all(across.values()), (settled, across)

    # what fixes the data order may not change on resume: refused before the model is built
    result = subprocess.run([sys.executable, "-m", "jobs.pretrain", "--config", "configs/pretrain/tiny.yaml",
                             *pretrain_overrides(training_inputs, run_dir, "seed=1", "tasks.asr=3")],
                            cwd=REPO, env=env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "seed=1 differs from 1234" in result.stderr, result.stderr[-2000:]
    assert "tasks (asr) differ" in result.stderr

    # a checkpoint of the distributed optimizer (written on GPUs) resumes only at its tensor x pipeline
    # layout, and not on CPU at all: refused before any work, not deep inside megatron's loader
    state_file = latest_checkpoint(run_dir) / "trainer_state.json"
    assert json.loads(state_file.read_text())["optimizer_layout"] == "per_parameter"
    state_file.write_text(json.dumps({**json.loads(state_file.read_text()), "optimizer_layout": "dp_reshardable"}))
    result = subprocess.run([sys.executable, "-m", "jobs.pretrain", "--config", "configs/pretrain/tiny.yaml",
                             *pretrain_overrides(training_inputs, run_dir, "parallel.tensor=2")],
                            cwd=REPO, env=env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "holds optimizer state in the dp_reshardable layout" in result.stderr
    assert "resumes only at the tensor x pipeline layout it was saved at" in result.stderr, result.stderr[-2000:]


def sft_cmd(training_inputs, conversations, checkpoint, run_dir):
    """Fine-tuning from a pretraining checkpoint on a blend: the curated shards (sft_asr, its instruction
    drawn from the pools) and prepared conversations (understanding and speech2speech)."""
    blend = (f"data.datasets=[{{url: {training_inputs['dataset']}, weight: 1, name: asr}}, "
             f"{{url: {conversations}, weight: 2, name: conversations}}]")
    cmd = torchrun_cmd(training_inputs, run_dir, f"model.init_checkpoint={checkpoint}", "train.steps=6",
                       "data.dataset=null", blend, "train.eval_dataset=null", "train.save_every=3")
    cmd[cmd.index("jobs.pretrain")], cmd[cmd.index("configs/pretrain/tiny.yaml")] = "jobs.sft", "configs/sft/tiny.yaml"
    return cmd


def test_fine_tuning_mixes_asr_and_conversations_and_resumes_exactly_after_sigkill(
        uninterrupted, training_inputs, conversation_dataset, tmp_path):
    checkpoint = uninterrupted[0] / "checkpoints" / "step-00000012"
    whole = tmp_path / "sft"
    run(sft_cmd(training_inputs, conversation_dataset, checkpoint, whole))
    loss = losses(whole)
    assert loss[6] < 0.95 * loss[1], loss
    rows = [json.loads(line) for line in (whole / "metrics.jsonl").read_text().splitlines()]
    seen = {k for r in rows for k in r if k.startswith("task/")}
    assert seen == {"task/sft_asr", "task/sft_understanding", "task/sft_speech2speech"}  # loss per task type
    assert any(r["train/loss_audio"] > 0 for r in rows)  # the spoken answers train the audio head

    killed = tmp_path / "killed"
    sigkill_after_checkpoint(sft_cmd(training_inputs, conversation_dataset, checkpoint, killed), killed, 3)
    assert max(losses(killed)) < 6, "the kill must land before the end"
    run(sft_cmd(training_inputs, conversation_dataset, checkpoint, killed))
    assert losses(killed) == loss  # bit-identical: the same mixture, batches and updates


def test_tensor_parallel_two_processes_on_a_blend_of_two_datasets(training_inputs, tmp_path):
    podcasts = shutil.copytree(training_inputs["dataset"], tmp_path / "podcasts")
    blend = f"data.datasets=[{{url: {training_inputs['dataset']}, weight: 3, name: books}}, {{url: {podcasts}}}]"
    run_dir = tmp_path / "tp2"
    result = run(torchrun_cmd(training_inputs, run_dir, "parallel.tensor=2", "train.steps=8",
                              "train.global_batch_rows=2", "data.dataset=null", blend, "train.peak_tflops=0.5"))
    loss = losses(run_dir)
    assert loss[8] < 0.85 * loss[1], loss
    last = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()][-1]
    # two tensor-parallel ranks share one replica's work; MFU against the given peak
    assert model_flops_per_token_in_range(last, ranks=2)
    assert last["train/mfu"] == pytest.approx(last["train/model_tflops_per_rank"] / 0.5)
    assert f"(MFU {last['train/mfu']:.1%})" in result.stdout
    books, podcasts = last["data/books/samples"], last["data/podcasts/samples"]
    # weights 3:1 (the drawn fractions are checked against the weights over 800 draws in test_reshard.py)
    assert books > podcasts > 0 and last["data/books/share"] == pytest.approx(books / (books + podcasts))
    assert last["data/books/audio_hours"] > 0 and last["data/podcasts/tokens"] > 0
    table = [line for line in result.stdout.splitlines() if line.startswith("pretrain: books ")]
    assert table and f"{books:,}" in table[0], result.stdout[-2000:]


def test_pipeline_parallel_two_stages_trains_as_one_process_does(uninterrupted, training_inputs, tmp_path):
    # the same start (a pretraining checkpoint, Whisper included) and the same data (one data-parallel rank):
    # two pipeline stages must compute what one process computes
    start = f"model.init_checkpoint={uninterrupted[0] / 'checkpoints' / 'step-00000012'}"
    run(torchrun_cmd(training_inputs, tmp_path / "pp2", start, "parallel.pipeline=2", "train.steps=6",
                     "train.global_batch_rows=4"))
    run(torchrun_cmd(training_inputs, tmp_path / "pp1", start, "train.steps=6", "train.global_batch_rows=4",
                     nproc=1))
    pipelined, whole = losses(tmp_path / "pp2"), losses(tmp_path / "pp1")
    assert sorted(pipelined) == list(range(1, 7))
    assert pipelined == pytest.approx(whole, rel=1e-5)
    assert pipelined[6] < pipelined[1]
    latest = tmp_path / "pp2" / "checkpoints" / "step-00000006"
    assert [p.name for p in (latest / "loader").iterdir()] == ["dp00000.json"]  # one data-parallel rank
    assert json.loads((latest / "model_config.json").read_text())["pipeline_parallel"] == 2


def test_two_nodes_of_one_process_read_a_dataset_on_s3_with_a_corrupt_shard(training_inputs, s3_server, tmp_path):
    """Each node streams its shards from the S3 server (no local copy); a truncated tar is skipped and counted."""
    dataset = shutil.copytree(training_inputs["dataset"], tmp_path / "dataset")
    victim = sorted((dataset / "shards").glob("*.tar"))[0]
    victim.write_bytes(victim.read_bytes()[:3000])
    inputs = {**training_inputs, "dataset": upload_folder(dataset, s3_server.url("training"))}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run_dir = tmp_path / "two-nodes"
    nodes = [subprocess.Popen(torchrun_cmd(inputs, run_dir, "train.steps=8", nproc=1, launcher=(
        "--nnodes", "2", "--node-rank", str(rank), "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}")),
        cwd=REPO, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for rank in range(2)]
    outputs = [node.communicate(timeout=400)[0] for node in nodes]
    assert [n.returncode for n in nodes] == [0, 0], "\n".join(o[-3000:] for o in outputs)
    loss = losses(run_dir)
    assert loss[8] < 0.85 * loss[1], loss
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["data/skipped_shards"] >= 1  # counted, and training went on
    skipped = [line for o in outputs for line in o.splitlines() if "skipping unreadable shard" in line]
    assert skipped and all(f"{inputs['dataset']}/shards/{victim.name}" in line for line in skipped), skipped


def untokenized_dataset(root, dialogs):
    from pipeline.shards import ShardWriter
    from tests.conftest import SAMPLE_RATE, dialog_samples

    with ShardWriter(root, sample_rate=SAMPLE_RATE, target_samples=4) as writer:
        for source, dialog in dialogs:
            writer.add_recording(*dialog_samples(source, dialog, tokens=False))
    return root


def test_every_bad_training_setting_is_named_before_the_model_is_built(training_inputs, dialogs, tmp_path):
    base = [sys.executable, "-m", "jobs.pretrain", "--config", "configs/pretrain/tiny.yaml"]
    not_a_dataset = ["data.micro_batch_rows=0", "train.log_every=0", f"data.dataset={tmp_path}"]
    untokenized = [f"data.dataset={untokenized_dataset(tmp_path / 'untokenized', dialogs)}",
                   "train.global_batch_rows=3"]
    cases = {  # several problems a run, each named
        tuple(not_a_dataset): ["data.micro_batch_rows=0 must be >= 1", "train.log_every=0 must be >= 1",
                               "not an audiomill dataset"],
        tuple(untokenized): ["have no semantic tokens", "train.global_batch_rows=3 is not a multiple"],
    }
    for overrides, messages in cases.items():
        started = time.perf_counter()
        # -X importtime lists every import on stderr: checking a config never loads megatron-core (nor does
        # the helper process megatron's checkpoint writer spawns, which re-imports the job's module)
        result = subprocess.run([sys.executable, "-X", "importtime", *base[1:],
                                 *pretrain_overrides(training_inputs, tmp_path / "run", *overrides)], cwd=REPO,
                                env=env(), capture_output=True, text=True, timeout=120)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
        assert "| trainer.checks" in result.stderr and "megatron" not in result.stderr
        ours = [line for line in result.stderr.splitlines() if line.startswith("pretrain: error: ")]
        assert len(ours) == len(messages) and all(any(m in line for line in ours) for m in messages), ours
        assert not (tmp_path / "run").exists()  # nothing was started
        print(f"{overrides}: refused in {time.perf_counter() - started:.1f} s")
    # all at once, under torchrun: one copy of each line, from rank 0
    result = subprocess.run(torchrun_cmd(training_inputs, tmp_path / "run", "data.seq_len=1", "train.steps=0",
                                         "train.global_batch_rows=3"), cwd=REPO, env=env(), capture_output=True,
                            text=True, timeout=300)
    assert result.returncode != 0
    for message in ("data.seq_len=1 cannot hold one text_only", "data.seq_len=1 cannot hold one asr sample",
                    "train.steps=0 must be >= 1"):
        assert result.stderr.count(message) == 1, result.stderr[-3000:]


def test_a_dataset_with_every_shard_unreadable_stops_with_one_error(training_inputs, tmp_path):
    dataset = Path(shutil.copytree(training_inputs["dataset"], tmp_path / "broken"))
    for tar in (dataset / "shards").glob("*.tar"):
        tar.write_bytes(tar.read_bytes()[:1000])  # cut inside the first header's data
    result = subprocess.run(torchrun_cmd({**training_inputs, "dataset": dataset}, tmp_path / "run",
                                         "train.eval_dataset=null", "data.strict=false"),
                            cwd=REPO, env=env(), capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "yielded nothing: every one is unreadable" in result.stderr, result.stderr[-3000:]
    tars = len(list((dataset / "shards").glob("*.tar")))
    assert result.stderr.count("skipping unreadable shard") <= 2 * tars  # once per shard and rank
