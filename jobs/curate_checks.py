"""Checks of a curation config that stop the job before any work, each with one clear message."""
from __future__ import annotations

import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from jobs.cli import ConfigError
from pipeline.stages.diarize import BACKENDS


def validate(cfg: DictConfig) -> None:
    """Stop before any work on a config that cannot run: one clear message."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(f"missing required setting(s): {', '.join(missing)} (give them as key=value)")
    d, t = cfg.diarize, cfg.transcribe
    if d.backend not in BACKENDS:
        raise ConfigError(f"diarize.backend={d.backend!r} is not available; choose one of {', '.join(BACKENDS)}")
    for name in ("cluster_merge_threshold", "chunk_reassign_threshold"):
        if not -1.0 <= d[name] <= 1.0:
            raise ConfigError(f"diarize.{name}={d[name]} is not a cosine similarity in [-1, 1]")
    if not 0 < d.min_segment_seconds <= d.max_segment_seconds:
        raise ConfigError("diarize: need 0 < min_segment_seconds <= max_segment_seconds")
    if d.max_gap_seconds < 0 or d.chunk_seconds <= 0:
        raise ConfigError("diarize: max_gap_seconds must be >= 0 and chunk_seconds > 0")
    if t.enabled:
        check_model_reference("transcribe.model", t.model, "model.bin", "CTranslate2 model folder")
        for language, name in t.align_models.items():
            if name:
                check_model_reference(f"transcribe.align_models.{language}", name, "config.json",
                                      "wav2vec2 CTC folder")
        if t.paraformer.model:
            check_model_reference("transcribe.paraformer.model", t.paraformer.model, "config.yaml",
                                  "FunASR Paraformer folder")
        if not 0 <= t.paraformer.comma_gap <= t.paraformer.period_gap:
            raise ConfigError("transcribe.paraformer: need 0 <= comma_gap <= period_gap (seconds of pause)")
        if t.nltk_data and not os.path.isdir(os.path.join(t.nltk_data, "tokenizers", "punkt_tab")):
            raise ConfigError(f"transcribe.nltk_data: no tokenizers/punkt_tab under {t.nltk_data}")
    if d.backend == "pyannote":
        check_model_reference("diarize.pyannote.pipeline", d.pyannote.pipeline, "config.yaml",
                              "pyannote pipeline folder")
    if cfg.tokenize.enabled:
        check_model_reference("tokenize.model", cfg.tokenize.model, "config.json", "semantic tokenizer folder")
    e = cfg.enhance
    if e.enabled and e.repo is not None:
        repo = Path(e.repo)
        if not ((repo / f"{e.model}.yaml").is_file() or list(repo.glob(f"{e.model}*.th"))):
            raise ConfigError(f"enhance.repo: no demucs model {e.model!r} ({e.model}.yaml or {e.model}.th) in {repo}")
    limits = cfg.quality.limits
    for low, high in (("min_chars_per_sec", "max_chars_per_sec"), ("min_duration", "max_duration")):
        if limits[low] is not None and limits[high] is not None and limits[low] > limits[high]:
            raise ConfigError(f"quality.limits.{low} > quality.limits.{high}")
    for name, r in cfg.resources.items():
        if "batch_size" in r and (r.batch_size < 1 or r.concurrency < 1):
            raise ConfigError(f"resources.{name}: batch_size and concurrency must be >= 1")


def check_model_reference(setting: str, name: str, marker: str, kind: str) -> None:
    """A model is a local folder holding `marker` (when it exists or is written as a path) or a hub id,
    which needs the network. Hub ids contain a slash too, so only existence and a leading / . ~ say path."""
    if os.path.exists(name) or name.startswith(("/", ".", "~")):
        if not os.path.isfile(os.path.join(os.path.expanduser(name), marker)):
            raise ConfigError(f"{setting}: no {kind} at {name} (build the offline ones with "
                              f"`python -m jobs.build_models`)")
    elif os.environ.get("HF_HUB_OFFLINE") == "1":
        raise ConfigError(f"{setting}={name!r}: no such local folder, and HF_HUB_OFFLINE=1 rules out a hub id "
                          f"(build the offline folders with `python -m jobs.build_models`, or give a path)")
