"""Pretraining: curated shards -> checkpoints, with the report's task mixture, under torchrun.

    torchrun --nproc-per-node 2 -m jobs.pretrain --config configs/pretrain/tiny.yaml run_dir=runs/tiny \
        data.dataset=demo_out/curated data.text_tokenizer=... model.whisper=... [key=value ...]

Resumes from the latest complete checkpoint in run_dir. SIGTERM saves a checkpoint and exits.
"""
from __future__ import annotations

import dataclasses
import math
import os
import signal
import sys
import time

import torch
import torch.distributed as dist
from omegaconf import OmegaConf

from trainer.console import missing_accelerations, quiet_library_notices

quiet_library_notices()  # first: megatron-core and torch announce what this machine lacks as they are imported

from jobs.cli import parse_job_args  # noqa: E402
from model.cpu_compat import cuda_tensors_on_cpu  # noqa: E402
from model.flops import gpu_peak_tflops, model_flops  # noqa: E402
from model.parallel import init_parallel, shutdown_parallel  # noqa: E402
from trainer.build import (  # noqa: E402
    build_loader, build_run_model, dataset_specs, parallel_ranks, special_ids, text_encoder, use_deterministic_kernels,
)
from trainer.checkpointing import latest_checkpoint, load_training_checkpoint, save_training_checkpoint  # noqa: E402
from trainer.checks import run_problems  # noqa: E402
from trainer.config import PretrainConfig  # noqa: E402
from trainer.data.reshard import reader_count, resumed_loader_state  # noqa: E402
from trainer.data.errors import DataError  # noqa: E402
from trainer.data.shard_order import dataset_shards  # noqa: E402
from trainer.data.stream import DatasetSpec  # noqa: E402
from trainer.data.tasks import TASKS  # noqa: E402
from trainer.metrics import (  # noqa: E402
    MetricsLog, SampleRecord, dataset_figures, dataset_metrics, print_dataset_summary, throughput, throughput_line,
)
from trainer.optim import build_training, freeze_whisper_for_this_step  # noqa: E402
from trainer.step import collective_device, forward_backward  # noqa: E402


def all_reduce_sum(values: list[float]) -> list[float]:
    from megatron.core import parallel_state as ps

    t = torch.tensor(values, dtype=torch.float64, device=collective_device())
    dist.all_reduce(t, group=ps.get_data_parallel_group())
    return t.tolist()


def any_rank(flag: bool) -> bool:
    """True on every rank when it is true on one: all ranks must stop (and save) at the same step."""
    t = torch.tensor([float(flag)], device=collective_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def evaluate(cfg, ddp_model, model, ids, encode, dp_rank, dp_size) -> float:
    """Mean loss over `eval_batches` micro-batches of the held-out dataset (the same ones every time)."""
    loader = build_loader(cfg, [DatasetSpec(cfg.train.eval_dataset)], ids, encode, dp_rank, dp_size,
                          seed=cfg.seed + 1)
    ddp_model.eval()
    with torch.no_grad():
        out = forward_backward(ddp_model, model, [loader.next_batch() for _ in range(cfg.train.eval_batches)],
                               whisper_frozen=True, normalisation=cfg.train.loss_normalisation,
                               audio_offset=ids.audio_offset, forward_only=True)
    ddp_model.train()
    return all_reduce_sum([out.loss])[0] / dp_size


def main(cfg: PretrainConfig, job: str = "pretrain") -> int:
    """Check everything first (no model, no process group), then train; a data error is one line, exit 2."""
    problems = run_problems(cfg, int(os.environ.get("WORLD_SIZE", "1")))
    if problems:
        if os.environ.get("RANK", "0") == "0":  # every rank finds the same: one copy on the console
            for line in problems:
                print(f"{job}: error: {line}", file=sys.stderr, flush=True)
        return 2
    try:
        return train(cfg, job)
    except DataError as e:
        print(f"{job}: error: rank {os.environ.get('RANK', '0')}: {data_error_line(e)}", file=sys.stderr, flush=True)
        return 2


def data_error_line(e: DataError) -> str:
    """The message alone: from a loader worker, torch wraps it in the worker's traceback."""
    text = str(e).strip()
    marker = "DataError: "
    return text[text.rindex(marker) + len(marker):].strip() if marker in text else text.splitlines()[0]


def train(cfg: PretrainConfig, job: str) -> int:
    torch.set_num_threads(cfg.train.threads)
    if cfg.train.deterministic:
        use_deterministic_kernels()
    init_parallel(cfg.parallel.tensor, cfg.parallel.pipeline, seed=cfg.seed)
    dp_rank, dp_size, keeps_loader_state = parallel_ranks()
    rank0 = dist.get_rank() == 0
    t = cfg.train
    accumulation, rest = divmod(t.global_batch_rows, cfg.data.micro_batch_rows * dp_size)
    if rest or not accumulation:
        raise SystemExit(f"train.global_batch_rows={t.global_batch_rows} is not a multiple of micro_batch_rows x "
                         f"data parallel ({cfg.data.micro_batch_rows} x {dp_size})")

    if rank0:
        p = cfg.parallel
        print(f"{job}: {dist.get_world_size()} process(es) = tensor {p.tensor} x pipeline {p.pipeline} x data "
              f"{dp_size}; model {cfg.model.preset}; {t.steps} steps of {t.global_batch_rows} rows x "
              f"{cfg.data.seq_len} tokens", flush=True)
        missing = missing_accelerations()
        if missing and not torch.cuda.is_available():
            print(f"{job}: on CPU without {' or '.join(missing)}: megatron-core's local implementations", flush=True)
    model = build_run_model(cfg)
    training = build_training(model, cfg.optim, t.steps)
    ids, encode = special_ids(cfg, model.cfg), text_encoder(cfg.data.text_tokenizer)
    specs = dataset_specs(cfg.data)
    listings = [dict(zip(("owners", "shards"), dataset_shards(spec.url))) for spec in specs]
    loader = build_loader(cfg, specs, ids, encode, dp_rank, dp_size, seed=cfg.seed, listings=listings)
    workers, readers = cfg.data.num_workers, dp_size * max(1, cfg.data.num_workers)

    step = 0
    seen = {"tokens": 0, "audio_hours": 0.0, "datasets": {s.name: [0, 0.0, 0] for s in specs}}
    resume = latest_checkpoint(cfg.run_dir)
    if resume is not None:
        state, saved_loaders = load_training_checkpoint(resume, model, training)
        step, seen = state["step"], {**seen, **state["seen"]}
        loader.load_state(resumed_loader_state(
            saved_loaders, (state["data_parallel_size"], state.get("num_workers")), (dp_size, workers), dp_rank,
            [listing["shards"] for listing in listings], cfg.seed, salt=step))
        if rank0:
            was = reader_count(saved_loaders)
            print(f"{job}: resumed from {resume} at step {step}" + (
                "" if was == readers else f" on {readers} reader(s), was {was}: the rest of the epochs in flight "
                "dealt to the new readers"), flush=True)
    metrics = MetricsLog(cfg.run_dir, enabled=rank0, resume_step=step)
    record = SampleRecord(cfg.run_dir, dp_rank, enabled=cfg.data.record_samples and keeps_loader_state)
    if rank0:
        OmegaConf.save(OmegaConf.structured(cfg), f"{cfg.run_dir}/config.yaml")
        if cfg.data.record_samples:
            record.cut_back(step)
    dist.barrier()  # no rank records before the files are cut back to the checkpoint

    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))  # checkpoint at the step boundary, exit

    def checkpoint() -> None:
        record.flush()
        save_training_checkpoint(cfg.run_dir, step, model, training, loader.state(), dp_rank, keeps_loader_state,
                                 {"seen": seen, "data_parallel_size": dp_size, "num_workers": workers,
                                  "datasets": [{"url": spec.url, "weight": spec.weight, "name": spec.name,
                                                "shards": len(listing["shards"])}
                                               for spec, listing in zip(specs, listings)],
                                  "config": dataclasses.asdict(cfg)}, keep=t.keep_checkpoints)

    frozen_steps = math.ceil(t.whisper_frozen_fraction * t.steps)
    # MFU against one GPU's bf16 peak: only a bf16 run on a GPU whose peak is known, or a given peak
    peak = t.peak_tflops or (gpu_peak_tflops() if cfg.model.params_dtype == "bfloat16" else None)
    window_started, window_tokens, window_flops, wait_before = time.perf_counter(), 0, 0.0, loader.wait_seconds
    ddp_model = training.ddp_model
    stopping = False  # agreed by all ranks; stop["now"] is this rank's signal handler alone
    while step < t.steps and not stopping:
        whisper_frozen = step < frozen_steps
        ddp_model.zero_grad_buffer()
        training.optimizer.zero_grad()
        batches = [loader.next_batch() for _ in range(accumulation)]
        for batch in batches:
            record.add(step + 1, [spec.name for spec in specs], batch.origins)
        out = forward_backward(ddp_model, model, batches,
                               whisper_frozen=whisper_frozen, normalisation=t.loss_normalisation,
                               audio_offset=ids.audio_offset)
        ddp_model.finish_grad_sync()
        if whisper_frozen:
            freeze_whisper_for_this_step(training)
        with cuda_tensors_on_cpu():
            _, grad_norm, _ = training.optimizer.step()
        training.scheduler.step(increment=1)
        step += 1

        audio_loss, text_loss, tokens, squared_lengths, audio_positions, *figures = all_reduce_sum(
            [out.audio / dp_size, out.text / dp_size, out.tokens, out.squared_lengths, out.audio_positions,
             *out.task_loss_sums, *out.task_targets, *dataset_figures(batches, len(specs))])
        task_sums, task_targets = figures[:len(TASKS)], figures[len(TASKS):2 * len(TASKS)]
        dataset_sums = figures[2 * len(TASKS):]
        for d, spec in enumerate(specs):  # samples, audio hours, tokens
            samples, seconds, sample_tokens = dataset_sums[3 * d:3 * d + 3]
            counters = seen["datasets"][spec.name]
            counters[:] = counters[0] + int(samples), counters[1] + seconds / 3600, counters[2] + int(sample_tokens)
        per_task = {task: total / n for task, total, n in zip(TASKS, task_sums, task_targets) if n}
        # every target token of both heads weighs the same: unlike the head means, this does not jump when
        # a step happens to hold no audio targets on some rank
        token_loss = sum(task_sums) / max(sum(task_targets), 1.0)
        seen["tokens"] += int(tokens)
        seen["audio_hours"] += audio_positions / 12.5 / 3600
        window_tokens += tokens
        window_flops += model_flops(model.cfg, tokens, squared_lengths)
        if step % t.log_every == 0 or step == t.steps:
            skipped_shards, skipped_segments = all_reduce_sum(list(loader.skipped()))
            elapsed = time.perf_counter() - window_started
            wait = (loader.wait_seconds - wait_before) / elapsed
            lr = training.optimizer.param_groups[0]["lr"]
            rates = throughput(window_tokens, window_flops, elapsed, dist.get_world_size(), peak)
            values = {"train/loss": audio_loss + text_loss, "train/token_loss": token_loss,
                      "train/loss_audio": audio_loss,
                      "train/loss_text": text_loss, "train/lr": lr, "train/grad_norm": float(grad_norm or 0.0),
                      **rates, "train/data_wait_fraction": wait,
                      "train/audio_hours_seen": seen["audio_hours"], "train/tokens_seen": seen["tokens"],
                      "data/skipped_shards": skipped_shards, "data/skipped_segments": skipped_segments,
                      **{f"task/{k}": v for k, v in per_task.items()}, **dataset_metrics(seen["datasets"])}
            if t.eval_every and t.eval_dataset and step % t.eval_every == 0:
                values["eval/loss"] = evaluate(cfg, ddp_model, model, ids, encode, dp_rank, dp_size)
            metrics.log(step, values, console=(
                f"step {step:>6}/{t.steps}  loss {audio_loss + text_loss:.4f} (audio {audio_loss:.4f} text "
                f"{text_loss:.4f})  lr {lr:.2e}  grad {float(grad_norm or 0):.3f}  {throughput_line(rates)}  "
                f"data wait {wait:.1%}  audio {seen['audio_hours']:.3f} h"
                + ("  whisper frozen" if whisper_frozen else "")
                + (f"  skipped shards {skipped_shards:.0f}" if skipped_shards else "")))
            window_started, window_tokens, window_flops = time.perf_counter(), 0, 0.0
            wait_before = loader.wait_seconds
        stopping = any_rank(stop["now"])  # a SIGTERM may reach the ranks on either side of a step boundary
        if step % t.save_every == 0 or step == t.steps or stopping:
            checkpoint()
    metrics.close()
    if rank0:
        print_dataset_summary(job, specs, seen["datasets"])
        curve = metrics.plot_loss_curve(title=f"{job}: loss")
        print(f"{job}: {'stopped by SIGTERM' if stopping else 'done'} at step {step}; "
              f"checkpoints in {cfg.run_dir}/checkpoints, loss curve {curve}", flush=True)
    shutdown_parallel()
    return 0


if __name__ == "__main__":  # dist checkpoint saving re-imports __main__ in helper processes
    sys.exit(main(parse_job_args(__doc__.splitlines()[0], PretrainConfig, name="pretrain")))
