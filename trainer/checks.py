"""Checks of a training config and its data before any rank builds the model: every problem, one line each.

Reads only manifests and folder listings (seconds, no model, no process group), so a run that cannot
train stops in the time it takes to start Python, with everything wrong at once.
"""
from __future__ import annotations

import os

import numpy as np
import pyarrow.compute as pc

from trainer.config import LOSS_NORMALISATIONS, DataSettings, PretrainConfig
from trainer.data.tasks import (
    CONVERSATION_TASKS, TASKS, TASKS_NEEDING_TEXT, SegmentInput, SpecialIds, build_task, build_text_only,
)


def run_problems(cfg: PretrainConfig, world_size: int) -> list[str]:
    """What stops this config from training on `world_size` processes (empty: nothing)."""
    problems: list[str] = cfg.optim.problems() + model_problems(cfg)
    add = problems.append
    d, t, p = cfg.data, cfg.train, cfg.parallel
    for name, value in (("data.seq_len", d.seq_len), ("data.micro_batch_rows", d.micro_batch_rows),
                        ("data.max_window_segments", d.max_window_segments), ("train.steps", t.steps),
                        ("train.global_batch_rows", t.global_batch_rows), ("train.log_every", t.log_every),
                        ("train.save_every", t.save_every), ("parallel.tensor", p.tensor),
                        ("parallel.pipeline", p.pipeline)):
        if value < 1:
            add(f"{name}={value} must be >= 1")
    if d.num_workers < 0:
        add(f"data.num_workers={d.num_workers} must be >= 0")
    if not 0 <= d.enhanced_fraction <= 1:
        add(f"data.enhanced_fraction={d.enhanced_fraction} must be in [0, 1]")
    weights = dict(cfg.tasks)
    unknown = sorted(set(weights) - set(TASKS))
    if unknown:
        add(f"tasks: unknown task(s) {', '.join(unknown)} (the tasks are {', '.join(TASKS)})")
    if any(w < 0 for w in weights.values()) or not sum(weights.values()) > 0:
        add("tasks: weights must be >= 0 with at least one > 0")
    model_parallel = max(1, p.tensor) * max(1, p.pipeline)
    if world_size % model_parallel:
        add(f"{world_size} processes do not divide into tensor x pipeline = {p.tensor} x {p.pipeline}")
    dp = max(1, world_size // model_parallel)
    if d.micro_batch_rows >= 1 and t.global_batch_rows >= 1 and t.global_batch_rows % (d.micro_batch_rows * dp):
        add(f"train.global_batch_rows={t.global_batch_rows} is not a multiple of data.micro_batch_rows x data "
            f"parallel ({d.micro_batch_rows} x {dp})")
    for setting, folder in (("data.text_tokenizer", d.text_tokenizer), ("model.whisper", cfg.model.whisper),
                            ("model.init_checkpoint", cfg.model.init_checkpoint)):
        if folder and not os.path.isdir(folder):
            add(f"{setting}: no folder {folder}")
    if weights.get("text_only", 0) > 0:
        if not d.text_corpus:
            add("tasks.text_only has weight but no text corpus is configured (data.text_corpus)")
        problems += [f"data.text_corpus: no file {c}" for c in d.text_corpus if not os.path.isfile(c)]
    if d.instructions and not os.path.isfile(d.instructions):
        add(f"data.instructions: no file {d.instructions}")
    elif d.instructions and weights.get("sft_asr", 0) > 0:
        from trainer.build import instruction_pool

        if not instruction_pool(cfg):
            add(f"data.instruction_pool={d.instruction_pool!r}: no such pool (or an empty one) in {d.instructions}")
    readers = dp * max(1, d.num_workers)
    shortest, shard_counts = None, {}
    for setting, spec in blend_problems(add, d):
        found = dataset_problems(add, setting, spec.url, readers)
        if found is not None:
            shortest = found[0] if shortest is None else min(shortest, found[0])
            shard_counts[spec.name] = found[1]
    if t.eval_every and t.eval_dataset:
        dataset_problems(add, "train.eval_dataset", t.eval_dataset, dp)
    if shortest is not None and d.seq_len >= 1 and sum(weights.values()) > 0:
        problems += seq_len_problems(cfg, weights, shortest)
    problems += resume_problems(cfg, shard_counts)
    return problems


def model_problems(cfg: PretrainConfig) -> list[str]:
    from model.config import PRESETS
    from model.specs import SPECS, cpu_training_problem, transformer_engine_problem

    m, problems = cfg.model, []
    if problem := cpu_training_problem():
        problems.append(problem)
    if m.preset not in PRESETS and not m.init_checkpoint:
        problems.append(f"model.preset={m.preset!r} is not one of {', '.join(PRESETS)}")
    if m.spec not in SPECS:
        problems.append(f"model.spec={m.spec!r} must be local, te or auto")
    elif m.spec == "te" and (problem := transformer_engine_problem()):
        problems.append(f"model.spec=te: {problem}")
    if m.params_dtype not in ("float32", "bfloat16"):
        problems.append(f"model.params_dtype={m.params_dtype!r} must be float32 or bfloat16")
    if cfg.train.loss_normalisation not in LOSS_NORMALISATIONS:
        problems.append(f"train.loss_normalisation={cfg.train.loss_normalisation!r} must be one of "
                        f"{', '.join(LOSS_NORMALISATIONS)}")
    if not 0 <= cfg.train.whisper_frozen_fraction <= 1:
        problems.append(f"train.whisper_frozen_fraction={cfg.train.whisper_frozen_fraction:g} must be in [0, 1]")
    if cfg.train.peak_tflops < 0:
        problems.append(f"train.peak_tflops={cfg.train.peak_tflops:g} must be >= 0 (0: from the GPU's name)")
    return problems


def blend_problems(add, data: DataSettings) -> list[tuple[str, object]]:
    """The datasets to check, as (setting, spec); a blend's own problems added."""
    from trainer.build import dataset_specs

    if data.dataset and data.datasets:
        add("data.dataset and data.datasets are both set: give one dataset or a blend, not both")
        return []
    if not data.dataset and not data.datasets:
        add("no training data: set data.dataset (a path or URL) or data.datasets (a weighted blend)")
        return []
    for i, entry in enumerate(data.datasets):
        if not entry.weight > 0:
            add(f"data.datasets[{i}].weight={entry.weight:g} must be a number > 0")
            return []
    specs = dataset_specs(data)
    return [("data.dataset" if data.dataset else f"data.datasets[{i}] ({spec.name})", spec)
            for i, spec in enumerate(specs)]


def resume_problems(cfg: PretrainConfig, shard_counts: dict[str, int]) -> list[str]:
    """A run resuming from a checkpoint must keep what fixes the data order: the seed, the task mixture,
    the datasets and their weights, and each dataset's shards. Data parallel and loader workers may change,
    and tensor and pipeline parallel too unless the checkpoint holds the distributed optimizer's state."""
    import json

    from trainer.build import dataset_specs
    from trainer.checkpointing import latest_checkpoint, optimizer_layout

    if not cfg.run_dir:
        return []
    folder = latest_checkpoint(cfg.run_dir)
    if folder is None:
        return []
    state = json.loads((folder / "trainer_state.json").read_text())
    saved = state.get("config", {})
    problems = []
    why = "fixes the data order; resume with the checkpoint's value, or start a new run_dir"
    if saved.get("seed") != cfg.seed:
        problems.append(f"seed={cfg.seed} differs from {saved.get('seed')} in {folder}: it {why}")
    if saved.get("tasks") != dict(cfg.tasks):
        changed = sorted(k for k in set(saved.get("tasks", {})) | set(cfg.tasks)
                         if saved.get("tasks", {}).get(k) != cfg.tasks.get(k))
        problems.append(f"tasks ({', '.join(changed)}) differ from {folder}: the task mixture {why}")
    before = [(d["url"], d["weight"]) for d in state.get("datasets", [])]
    now = [(spec.url, spec.weight) for spec in dataset_specs(cfg.data)]
    if before and before != now:
        problems.append(f"the datasets and weights {now} differ from {before} in {folder}: the blend {why}")
    saved_layout, layout = state.get("optimizer_layout"), optimizer_layout()
    if saved_layout and saved_layout != layout:
        problems.append(f"{folder} holds optimizer state in the {saved_layout} layout; this machine's optimizer "
                        f"({'distributed, on CUDA' if layout != 'per_parameter' else 'on CPU'}) reads {layout}: "
                        "resume where it was written, or start a new run_dir from its weights "
                        "(model.init_checkpoint)")
    model_parallel = {k: saved.get("parallel", {}).get(k) for k in ("tensor", "pipeline")}
    if saved_layout == "dp_reshardable" and model_parallel != {"tensor": cfg.parallel.tensor,
                                                                "pipeline": cfg.parallel.pipeline}:
        problems.append(f"parallel.tensor={cfg.parallel.tensor}, parallel.pipeline={cfg.parallel.pipeline} differ "
                        f"from {folder} ({model_parallel['tensor']}, {model_parallel['pipeline']}): the distributed "
                        "optimizer's state resumes only at the tensor x pipeline layout it was saved at (data "
                        "parallel may change)")
    for d in state.get("datasets", []):
        if d["name"] in shard_counts and shard_counts[d["name"]] != d["shards"]:
            problems.append(f"dataset {d['url']} has {shard_counts[d['name']]} shards, {d['shards']} when {folder} "
                            "was written: the epochs' shard order would change; resume on the data it was "
                            "written with")
    return problems


def dataset_problems(add, setting: str, dataset: str, readers: int) -> tuple[int, int] | None:
    """Check a dataset for training; returns (its shortest segment's token count, its shards), None when
    unusable."""
    from pipeline.shards import DatasetError, DatasetLayout
    from pipeline.shards.manifest import read_manifest

    try:
        table = read_manifest(DatasetLayout.of(dataset).require(), columns=["shard", "token_count"])
    except DatasetError as e:
        add(f"{setting}: {e}")
        return None
    if not table.num_rows:
        add(f"{setting}: {dataset} holds no committed samples")
        return None
    shards = pc.count_distinct(table.column("shard")).as_py()
    if shards < readers:
        add(f"{setting}: {shards} shard(s) for {readers} readers (data parallel x loader workers); every reader "
            f"needs at least one: write smaller shards (shards.target_samples) or use fewer workers")
    without = table.column("token_count").null_count
    if without:
        add(f"{setting}: {without} of {table.num_rows} samples have no semantic tokens (curate with tokenize.enabled "
            f"true)")
        return None
    return int(pc.min(table.column("token_count")).as_py()), shards


def seq_len_problems(cfg: PretrainConfig, weights: dict, shortest_tokens: int) -> list[str]:
    """Each weighted task must fit one sample of the dataset's shortest segment (with a one-token text) in a
    row; otherwise that task can never be built and the run would train on nothing."""
    tok = cfg.tokens
    ids = SpecialIds(blank=tok.blank, text_eos=tok.text_eos, media_begin=tok.media_begin, media_end=tok.media_end,
                     audio_offset=0, audio_delay=tok.audio_delay, user_start=tok.user_start,
                     assistant_start=tok.assistant_start, speech_ct=tok.speech_ct, msg_end=tok.msg_end,
                     speech_ctd=tok.speech_ctd)
    segment = SegmentInput(np.zeros(max(1, shortest_tokens), np.int64), [0], None)
    from trainer.build import instruction_pool

    pool = instruction_pool(cfg) if cfg.data.instructions and os.path.isfile(cfg.data.instructions) else []
    longest = max([len(text.split()) for text in [cfg.data.sft_instruction, *pool]])
    instruction = [0] * longest
    problems = []
    for task in TASKS:
        if weights.get(task, 0) <= 0 or task in CONVERSATION_TASKS:  # a conversation that does not fit is skipped
            continue
        sample = build_text_only([0], ids) if task == "text_only" else build_task(task, [segment], ids, instruction)
        if len(sample) > cfg.data.seq_len:
            needs = "a one-token document" if task == "text_only" else (
                f"the shortest segment ({shortest_tokens} semantic tokens"
                + (" and one text token)" if task in TASKS_NEEDING_TEXT else ")"))
            problems.append(f"data.seq_len={cfg.data.seq_len} cannot hold one {task} sample of {needs}: it needs "
                            f"{len(sample)} tokens")
    return problems
