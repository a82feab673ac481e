"""Checks of a curation config that stop the job before any work: every problem at once, one line each.

The settings' own checks live with the code that owns them (`CurateConfig.problems()`, each stage's
settings); here are the ones that look at this machine: storage backends, and whether an embedded Ray
could ever hold the pools.
"""
from __future__ import annotations

import os

from jobs.cli import ConfigError
from pipeline.capacity import embedded_capacity, stage_demands, unschedulable
from pipeline.config import CurateConfig
from pipeline.model_folders import runs_on_gpu


def validate(cfg: CurateConfig) -> None:
    """ConfigError listing every problem of a config that cannot run (nothing when it can)."""
    problems = config_problems(cfg)
    if problems:
        raise ConfigError("\n".join(problems))


def config_problems(cfg: CurateConfig) -> list[str]:
    problems = cfg.problems() + storage_problems(cfg)
    if not cfg.resource_problems():  # whether pools fit is only worth asking of pools that are valid
        problems += embedded_capacity_problems(cfg)
    return problems


def storage_problems(cfg: CurateConfig) -> list[str]:
    """`storage_options` maps a protocol to fsspec options, and the input's and output's protocols have a
    backend installed here (the workers need the same)."""
    from pipeline.shards.storage import protocol_of

    problems = []
    if any(not isinstance(v, dict) for v in cfg.storage_options.values()):
        problems.append("storage_options must map a protocol to its options, e.g. {s3: {endpoint_url: ...}}")
    for setting in ("input", "output"):
        url = getattr(cfg, setting)
        protocol = protocol_of(url)
        if protocol == "file":
            continue
        import fsspec

        try:
            fsspec.get_filesystem_class(protocol)
        except (ImportError, ValueError) as e:
            problems.append(f"{setting}={url}: no filesystem for {protocol}:// here ({e})")
    return problems


def embedded_capacity_problems(cfg: CurateConfig) -> list[str]:
    """On an embedded Ray (no RAY_ADDRESS), whether this machine could ever hold the pools; a real
    cluster's capacity is checked once the job is attached (pipeline.capacity)."""
    if os.environ.get("RAY_ADDRESS"):
        return []
    demands = stage_demands(cfg)
    capacity = embedded_capacity(cfg.ray.local_num_cpus, any(d.gpus for d in demands))
    problems = [f"{stage}: device {device}, but this machine has no CUDA device (embedded Ray)"
                for stage, device in cfg.stage_devices().items() if runs_on_gpu(device) and not capacity.gpus]
    if not problems:
        problems += [f"{line} (embedded Ray on this machine)" for line in unschedulable(demands, [capacity])]
    return problems
