"""Checks of a curation config that stop the job before any work: every problem at once, one line each."""
from __future__ import annotations

import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from jobs.cli import ConfigError
from pipeline.capacity import embedded_capacity, stage_demands, unschedulable
from pipeline.stages.diarize import BACKENDS

# Whisper, Silero VAD, the GE2E embedder and the semantic tokenizer all take 16 kHz, and the shards store
# what the stages saw: the working rate is pinned rather than resampled per stage.
WORKING_SAMPLE_RATE = 16000


def validate(cfg: DictConfig) -> None:
    """ConfigError listing every problem of a config that cannot run (nothing when it can)."""
    problems = config_problems(cfg)
    if problems:
        raise ConfigError("\n".join(problems))


def config_problems(cfg: DictConfig) -> list[str]:
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        return [f"missing required setting(s): {', '.join(missing)} (give them as key=value)"]
    problems: list[str] = []
    add = problems.append
    if cfg.sample_rate != WORKING_SAMPLE_RATE:
        add(f"sample_rate={cfg.sample_rate!r}: the model stages work at {WORKING_SAMPLE_RATE} Hz (Whisper, VAD, "
            f"speaker embeddings, semantic tokens); inputs at any rate are resampled to it on decode")
    for name in ("target_bytes", "target_samples"):
        value = cfg.shards[name]
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            add(f"shards.{name}={value!r} must be a positive integer")
    d, t = cfg.diarize, cfg.transcribe
    if d.backend not in BACKENDS:
        add(f"diarize.backend={d.backend!r} is not available; choose one of {', '.join(BACKENDS)}")
    for name in ("cluster_merge_threshold", "chunk_reassign_threshold"):
        if not -1.0 <= d[name] <= 1.0:
            add(f"diarize.{name}={d[name]} is not a cosine similarity in [-1, 1]")
    if not 0 < d.min_segment_seconds <= d.max_segment_seconds:
        add("diarize: need 0 < min_segment_seconds <= max_segment_seconds")
    if d.max_gap_seconds < 0 or d.chunk_seconds <= 0:
        add("diarize: max_gap_seconds must be >= 0 and chunk_seconds > 0")
    if t.enabled:
        model_reference(add, "transcribe.model", t.model, "model.bin", "CTranslate2 model folder")
        for language, name in t.align_models.items():
            if name:
                model_reference(add, f"transcribe.align_models.{language}", name, "config.json", "wav2vec2 CTC folder")
        if t.paraformer.model:
            model_reference(add, "transcribe.paraformer.model", t.paraformer.model, "config.yaml",
                            "FunASR Paraformer folder")
        if not 0 <= t.paraformer.comma_gap <= t.paraformer.period_gap:
            add("transcribe.paraformer: need 0 <= comma_gap <= period_gap (seconds of pause)")
        if t.nltk_data and not os.path.isdir(os.path.join(t.nltk_data, "tokenizers", "punkt_tab")):
            add(f"transcribe.nltk_data: no tokenizers/punkt_tab under {t.nltk_data}")
    if d.backend == "pyannote":
        model_reference(add, "diarize.pyannote.pipeline", d.pyannote.pipeline, "config.yaml",
                        "pyannote pipeline folder")
    if cfg.tokenize.enabled:
        model_reference(add, "tokenize.model", cfg.tokenize.model, "config.json", "semantic tokenizer folder")
    e = cfg.enhance
    if e.enabled and e.repo is not None:
        repo = Path(e.repo)
        if not ((repo / f"{e.model}.yaml").is_file() or list(repo.glob(f"{e.model}*.th"))):
            add(f"enhance.repo: no demucs model {e.model!r} ({e.model}.yaml or {e.model}.th) in {repo}")
    problems += storage_problems(cfg)
    limits = cfg.quality.limits
    for low, high in (("min_chars_per_sec", "max_chars_per_sec"), ("min_duration", "max_duration")):
        if limits[low] is not None and limits[high] is not None and limits[low] > limits[high]:
            add(f"quality.limits.{low} > quality.limits.{high}")
    problems += resource_problems(cfg)
    return problems


def storage_problems(cfg: DictConfig) -> list[str]:
    """`storage_options` maps a protocol to fsspec options, and the input's and output's protocols have a
    backend installed here (the workers need the same)."""
    from pipeline.shards.storage import protocol_of

    problems = []
    options = cfg.storage_options
    if not isinstance(options, DictConfig) or any(not isinstance(v, DictConfig) for v in options.values()):
        problems.append("storage_options must map a protocol to its options, e.g. {s3: {endpoint_url: ...}}")
    for setting in ("input", "output"):
        protocol = protocol_of(str(cfg[setting]))
        if protocol == "file":
            continue
        import fsspec

        try:
            fsspec.get_filesystem_class(protocol)
        except (ImportError, ValueError) as e:
            problems.append(f"{setting}={cfg[setting]}: no filesystem for {protocol}:// here ({e})")
    return problems


def stage_devices(cfg: DictConfig) -> dict[str, str]:
    """The device each enabled model stage runs its model on."""
    d = cfg.diarize
    devices = {"enhance": cfg.enhance.device} if cfg.enhance.enabled else {}
    if d.backend in ("pyannote", "embedding"):
        devices["diarize"] = d.pyannote.device if d.backend == "pyannote" else d.embedding.device
    if cfg.transcribe.enabled:
        devices["transcribe"] = cfg.transcribe.device
    if cfg.tokenize.enabled:
        devices["tokenize"] = cfg.tokenize.device
    return devices


def resource_problems(cfg: DictConfig) -> list[str]:
    """Pool sizes, device against GPUs, and (on an embedded Ray) whether the pools fit this machine at all."""
    problems = []
    for name, r in cfg.resources.items():
        if not r.num_cpus or r.num_cpus <= 0:
            problems.append(f"resources.{name}.num_cpus={r.num_cpus} must be > 0")
        if "batch_size" in r and r.batch_size < 1:
            problems.append(f"resources.{name}.batch_size={r.batch_size} must be >= 1")
        if "concurrency" in r and not valid_pool_size(r.concurrency):
            problems.append(f"resources.{name}.concurrency={OmegaConf.to_object(r)['concurrency']!r} must be a "
                            f"pool size >= 1 or a [min, max] range with 1 <= min <= max")
        if "memory_mb" in r and (not isinstance(r.memory_mb, (int, float)) or r.memory_mb < 0):
            problems.append(f"resources.{name}.memory_mb={r.memory_mb!r} must be a number of MB >= 0")
        if "num_gpus" in r and r.num_gpus < 0:
            problems.append(f"resources.{name}.num_gpus={r.num_gpus} must be >= 0")
    if problems:
        return problems
    for stage, device in stage_devices(cfg).items():
        gpus = cfg.resources[stage].num_gpus
        if str(device).startswith("cuda") and not gpus:
            problems.append(f"{stage}: device {device} but resources.{stage}.num_gpus=0, so its actors see no GPU "
                            f"(give the stage GPUs, or device cpu)")
        elif not str(device).startswith("cuda") and gpus:
            problems.append(f"{stage}: resources.{stage}.num_gpus={gpus} but the model runs on {device}: the GPUs "
                            f"would sit idle (set num_gpus 0, or device cuda)")
    if problems or os.environ.get("RAY_ADDRESS"):
        return problems  # a real cluster's capacity is checked once the job is attached (pipeline.capacity)
    demands = stage_demands(cfg)
    capacity = embedded_capacity(cfg.ray.local_num_cpus, any(d.gpus for d in demands))
    for stage, device in stage_devices(cfg).items():
        if str(device).startswith("cuda") and not capacity.gpus:
            problems.append(f"{stage}: device {device}, but this machine has no CUDA device (embedded Ray)")
    if not problems:
        problems += [f"{line} (embedded Ray on this machine)" for line in unschedulable(demands, [capacity])]
    return problems


def valid_pool_size(concurrency) -> bool:
    if isinstance(concurrency, bool):
        return False
    if isinstance(concurrency, int):
        return concurrency >= 1
    values = list(concurrency) if OmegaConf.is_list(concurrency) else None
    return (values is not None and len(values) == 2 and all(isinstance(v, int) and not isinstance(v, bool)
                                                           for v in values) and 1 <= values[0] <= values[1])


def model_reference(add, setting: str, name: str, marker: str, kind: str) -> None:
    """A model is a local folder holding `marker` (when it exists or is written as a path) or a hub id,
    which needs the network. Hub ids contain a slash too, so only existence and a leading / . ~ say path."""
    if os.path.exists(name) or name.startswith(("/", ".", "~")):
        if not os.path.isfile(os.path.join(os.path.expanduser(name), marker)):
            add(f"{setting}: no {kind} at {name} (build the offline ones with `python -m jobs.build_models`)")
    elif os.environ.get("HF_HUB_OFFLINE") == "1":
        add(f"{setting}={name!r}: no such local folder, and HF_HUB_OFFLINE=1 rules out a hub id "
            f"(build the offline folders with `python -m jobs.build_models`, or give a path)")
