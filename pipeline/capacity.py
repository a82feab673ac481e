"""Whether the curation job's pools can ever be scheduled on a cluster, checked before any work.

Ray Data keeps every actor of a pool for the whole job and runs the decode and pack tasks beside them;
when the actors' CPUs plus the tasks' exceed the cluster's, or one actor asks for more than any node
has, it waits forever (with autoscaler errors). These are plain functions on plain data: the job checks
an embedded Ray before starting it, and a real cluster once attached, waiting a configured time for
an autoscaler to bring capacity before it stops with the demand and what the cluster has.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

_EPSILON = 1e-9  # fractional CPUs add up with rounding error


@dataclass(frozen=True)
class Demand:
    """What one pool holds: `count` actors (or 1 for a task kind) of `cpus` and `gpus` each."""
    stage: str
    cpus: float
    gpus: float
    count: int


@dataclass(frozen=True)
class NodeCapacity:
    cpus: float
    gpus: float


def stage_demands(cfg) -> list[Demand]:
    """The pools the job starts, from its `resources` section: model stages that are on, the writers,
    decode and pack."""
    enabled = {"enhance": cfg.enhance.enabled, "diarize": True, "transcribe": cfg.transcribe.enabled,
               "quality": cfg.quality.enabled, "tokenize": cfg.tokenize.enabled, "write": True}
    demands = [Demand(stage, float(r.num_cpus), float(r.get("num_gpus") or 0), int(r.concurrency))
               for stage, r in cfg.resources.items() if enabled.get(stage)]
    demands += [Demand(task, float(cfg.resources[task].num_cpus), 0.0, 1) for task in ("decode", "pack")]
    return demands


def unschedulable(demands: list[Demand], nodes: list[NodeCapacity]) -> list[str]:
    """Why these pools can never all run on these nodes (empty: they can)."""
    problems = []
    cpus, gpus = sum(n.cpus for n in nodes), sum(n.gpus for n in nodes)
    for d in demands:
        if not any(d.cpus <= n.cpus + _EPSILON and d.gpus <= n.gpus + _EPSILON for n in nodes):
            problems.append(f"resources.{d.stage}: one actor needs {d.cpus:g} CPU and {d.gpus:g} GPU, no node has "
                            f"that (largest: {max((n.cpus for n in nodes), default=0):g} CPU, "
                            f"{max((n.gpus for n in nodes), default=0):g} GPU)")
    want_cpus = sum(d.cpus * d.count for d in demands)
    want_gpus = sum(d.gpus * d.count for d in demands)
    if want_cpus > cpus + _EPSILON:
        problems.append(f"the pools need {want_cpus:g} CPU together ({describe(demands, 'cpus')}), the cluster has "
                        f"{cpus:g}: lower resources.<stage>.concurrency or num_cpus")
    if want_gpus > gpus + _EPSILON:
        problems.append(f"the pools need {want_gpus:g} GPU together ({describe(demands, 'gpus')}), the cluster has "
                        f"{gpus:g}")
    return problems


def describe(demands: list[Demand], what: str) -> str:
    return ", ".join(f"{d.stage} {d.count}x{getattr(d, what):g}" for d in demands if getattr(d, what))


def embedded_capacity(local_num_cpus, wants_gpus: bool) -> NodeCapacity:
    """The one node an embedded Ray starts here (`ray.local_num_cpus`, or every core)."""
    gpus = 0
    if wants_gpus:
        import torch

        gpus = torch.cuda.device_count()
    return NodeCapacity(float(local_num_cpus or os.cpu_count() or 1), float(gpus))


def cluster_nodes(ray_nodes: list[dict]) -> list[NodeCapacity]:
    """Alive nodes of `ray.nodes()` as capacities."""
    return [NodeCapacity(float(n["Resources"].get("CPU", 0)), float(n["Resources"].get("GPU", 0)))
            for n in ray_nodes if n.get("Alive")]
