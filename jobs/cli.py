"""Command lines of the jobs: `--config FILE.yaml` plus `key=value` overrides (OmegaConf dot-list)."""
from __future__ import annotations

import argparse
import os
from typing import Optional, Sequence

from omegaconf import DictConfig, OmegaConf


class ConfigError(Exception):
    """A configuration a job cannot run with; the job prints it and exits before doing any work."""


def load_config(path: str, overrides: Sequence[str] = ()) -> DictConfig:
    """The YAML at `path` with `key=value` overrides applied; an override of an unknown key is an error.

    A file with `base: OTHER.yaml` is merged over that file (path relative to it).
    """
    base = _load_with_base(path)
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise ConfigError(f"overrides must be key=value, got {' '.join(bad)}")
    OmegaConf.set_struct(base, True)  # a typo in an override is an error, not a new key
    try:
        merged = OmegaConf.merge(base, OmegaConf.from_dotlist(list(overrides)))
    except Exception as e:  # OmegaConf raises several error types for bad keys and values
        raise ConfigError(f"bad override: {e}") from None
    problems = [p for o in overrides if (p := override_type_problem(base, merged, o.split("=", 1)[0]))]
    if problems:
        raise ConfigError("\n".join(problems))
    return merged


def _kind(value) -> str | None:
    """The type a setting's value has, in the config file's terms (None: unset, any value goes)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "a list" if OmegaConf.is_list(value) or isinstance(value, list) else "a mapping"


def override_type_problem(base: DictConfig, merged: DictConfig, key: str) -> str | None:
    """A key=value override must have the type the config file gives the key (an integer stays an integer:
    `shards.target_bytes=abc` is an error here, not a traceback after the job has started)."""
    expected = _kind(OmegaConf.select(base, key, throw_on_missing=False))
    got = _kind(OmegaConf.select(merged, key, throw_on_missing=False))
    if expected is None or got is None or expected == got or {expected, got} == {"a number", "an integer"}:
        return None  # numbers are numbers (0.4 minutes where the file says 60); ranges are the validators' job
    if expected == "a string" and got in ("an integer", "a number", "true or false"):
        return None  # a model name or language code that looks like a number is still a name
    if key.endswith(".concurrency") and {expected, got} == {"an integer", "a list"}:
        return None  # a pool is a fixed size or a [min, max] range; the validators check which
    return f"{key}={OmegaConf.select(merged, key)!r} must be {expected}"


def _load_with_base(path: str) -> DictConfig:
    try:
        cfg = OmegaConf.load(path)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found") from None
    if "base" not in cfg:
        return cfg
    parent = _load_with_base(os.path.join(os.path.dirname(path), cfg.pop("base")))
    OmegaConf.set_struct(parent, True)  # the child may only set keys the base defines
    try:
        return OmegaConf.merge(parent, cfg)
    except Exception as e:
        raise ConfigError(f"{path}: {e}") from None


def parse_job_args(description: str, argv: Optional[Sequence[str]] = None) -> DictConfig:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", required=True, help="YAML config file")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. output=/data/out")
    args = parser.parse_args(argv)
    try:
        return load_config(args.config, args.overrides)
    except ConfigError as e:
        parser.exit(2, f"{parser.prog}: error: {e}\n")

