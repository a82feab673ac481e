"""Whether the curation job's pools can ever be scheduled on a cluster, checked before any work.

Ray Data keeps every actor of a pool for the whole job (at least a pool's minimum size, when it is a
[min, max] range that autoscales) and runs the decode, pack and write tasks beside them;
when the actors' CPUs plus the tasks' exceed the cluster's, or one actor asks for more than any node
has, it waits forever (with autoscaler errors). These are plain functions on plain data: the job checks
an embedded Ray before starting it, and a real cluster once attached, waiting a configured time for
an autoscaler to bring capacity before it stops with the demand and what the cluster has.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

_EPSILON = 1e-9  # fractional CPUs add up with rounding error


def task_threads(num_cpus: float) -> int:
    """Threads for a task or actor that holds `num_cpus` (pack in the decode tasks, DNSMOS's onnxruntime):
    its whole CPUs, to the nearest, at least one."""
    return max(1, int(num_cpus + 0.5))


@dataclass(frozen=True)
class TaskResources:
    """What each Ray task of a CPU stage (decode, pack) holds: CPUs and declared memory (MB, 0: undeclared)."""
    num_cpus: float = 1.0
    memory_mb: float = 0.0

    def problems(self, setting: str) -> list[str]:
        problems = []
        if not self.num_cpus > 0:
            problems.append(f"{setting}.num_cpus={self.num_cpus:g} must be > 0")
        if self.memory_mb < 0:
            problems.append(f"{setting}.memory_mb={self.memory_mb:g} must be a number of MB >= 0")
        return problems


def batch_size_problems(setting: str, batch_size: int) -> list[str]:
    return [f"{setting}.batch_size={batch_size} must be >= 1"] if batch_size < 1 else []


@dataclass(frozen=True)
class WriteResources(TaskResources):
    """The writers: Ray tasks, at most `concurrency` at once, each taking `batch_size` recordings. Tasks, not
    actors: a writer keeps nothing between calls, and a task runs in a worker that is already up, where an
    actor would start a fresh process per job (about 1 s and 1.5 CPU-seconds: Ray, `ray.data`, our modules)."""
    concurrency: int = 1
    batch_size: int = 1

    def problems(self, setting: str) -> list[str]:
        problems = super().problems(setting) + batch_size_problems(setting, self.batch_size)
        if self.concurrency < 1:
            problems.append(f"{setting}.concurrency={self.concurrency!r} must be the most writer tasks at once, an "
                            f"integer >= 1 (writers are tasks: there is no pool to size)")
        return problems


@dataclass(frozen=True)
class PoolResources(TaskResources):
    """An actor pool: `concurrency` is a fixed size or a [min, max] range Ray Data autoscales between;
    each actor holds `num_cpus`, `num_gpus` and `memory_mb` and takes `batch_size` recordings per call."""
    num_gpus: float = 0.0
    concurrency: Any = 1
    batch_size: int = 1

    def problems(self, setting: str) -> list[str]:
        problems = super().problems(setting) + batch_size_problems(setting, self.batch_size)
        if not valid_pool_size(self.concurrency):
            problems.append(f"{setting}.concurrency={self.concurrency!r} must be a pool size >= 1 or a [min, max] "
                            f"range with 1 <= min <= max")
        if self.num_gpus < 0:
            problems.append(f"{setting}.num_gpus={self.num_gpus:g} must be >= 0")
        return problems


def valid_pool_size(concurrency) -> bool:
    """A pool size >= 1, or a [min, max] range of integers with 1 <= min <= max."""
    if isinstance(concurrency, bool):
        return False
    if isinstance(concurrency, int):
        return concurrency >= 1
    if not isinstance(concurrency, (list, tuple)) or len(concurrency) != 2:
        return False
    low, high = concurrency
    return all(isinstance(v, int) and not isinstance(v, bool) for v in (low, high)) and 1 <= low <= high


@dataclass(frozen=True)
class Demand:
    """What one pool holds at the least: `count` actors (its minimum size; 1 for a task kind) of `cpus`,
    `gpus` and `memory` bytes each."""
    stage: str
    cpus: float
    gpus: float
    count: int
    memory: float = 0.0


@dataclass(frozen=True)
class NodeCapacity:
    cpus: float
    gpus: float
    memory: float | None = None  # bytes Ray may hand out; None: not known (an embedded Ray decides at start)


def pool_bounds(concurrency) -> tuple[int, int]:
    """(min, max) actors of a pool: `concurrency` is a fixed size or a [min, max] range (autoscaling)."""
    if isinstance(concurrency, int):
        return concurrency, concurrency
    low, high = concurrency
    return int(low), int(high)


def memory_bytes(resources) -> float:
    """A stage's declared memory per actor or task (`memory_mb`), as Ray takes it: bytes."""
    return float(resources.memory_mb or 0) * 2**20


def stage_demands(cfg) -> list[Demand]:
    """What the job holds at the least, from its `resources` section: the pools of the model stages that are
    on, and one each of its tasks: decode, the writers and pack (`cfg` is a pipeline.config.CurateConfig).
    With no model stage, pack runs inside the decode tasks (pipeline/ray_runner.py) and holds nothing of its own."""
    pools = cfg.pools()
    demands = [Demand(stage, float(r.num_cpus), float(r.num_gpus), pool_bounds(r.concurrency)[0], memory_bytes(r))
               for stage, r in pools.items()]
    tasks = [("decode", cfg.resources.decode), ("write", cfg.resources.write)] + (
        [("pack", cfg.resources.pack)] if pools else [])
    demands += [Demand(task, float(r.num_cpus), 0.0, 1, memory_bytes(r)) for task, r in tasks]
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
        elif not any(n.memory is None or d.memory <= n.memory for n in nodes):
            problems.append(f"resources.{d.stage}.memory_mb={d.memory / 2**20:g}: no node has that much memory for "
                            f"Ray (largest: {max(n.memory for n in nodes) / 2**20:.0f} MB)")
    want_cpus = sum(d.cpus * d.count for d in demands)
    want_gpus = sum(d.gpus * d.count for d in demands)
    if want_cpus > cpus + _EPSILON:
        problems.append(f"the pools need {want_cpus:g} CPU together ({describe(demands, 'cpus')}), the cluster has "
                        f"{cpus:g}: lower resources.<stage>.concurrency or num_cpus")
    if want_gpus > gpus + _EPSILON:
        problems.append(f"the pools need {want_gpus:g} GPU together ({describe(demands, 'gpus')}), the cluster has "
                        f"{gpus:g}")
    if all(n.memory is not None for n in nodes) and nodes:
        want_memory, memory = sum(d.memory * d.count for d in demands), sum(n.memory for n in nodes)
        if want_memory > memory:
            problems.append(f"the pools need {want_memory / 2**30:.1f} GiB of memory together, the cluster has "
                            f"{memory / 2**30:.1f} GiB: lower resources.<stage>.memory_mb or the pools' minimum sizes")
    return problems


def describe(demands: list[Demand], what: str) -> str:
    return ", ".join(f"{d.stage} {d.count}x{getattr(d, what):g}" for d in demands if getattr(d, what))


def embedded_capacity(local_num_cpus, wants_gpus: bool) -> NodeCapacity:
    """The one node an embedded Ray starts here (`ray.local_num_cpus`, or every core; its memory at most
    this machine's: Ray keeps part for its object store, so this refuses only what could never run)."""
    import psutil

    gpus = 0
    if wants_gpus:
        import torch

        gpus = torch.cuda.device_count()
    return NodeCapacity(float(local_num_cpus or os.cpu_count() or 1), float(gpus),
                        float(psutil.virtual_memory().total))


def cluster_nodes(ray_nodes: list[dict]) -> list[NodeCapacity]:
    """Alive nodes of `ray.nodes()` as capacities."""
    return [NodeCapacity(float(n["Resources"].get("CPU", 0)), float(n["Resources"].get("GPU", 0)),
                         float(n["Resources"].get("memory", 0)))
            for n in ray_nodes if n.get("Alive")]


@dataclass(frozen=True)
class StageCost:
    """What one actor (or task) of a stage costs per audio-hour: `seconds` of its time, holding `cpus` and
    `gpus` all along."""
    stage: str
    seconds: float
    cpus: float
    gpus: float = 0.0

    @property
    def core_seconds(self) -> float:
        return self.seconds * self.cpus

    @property
    def gpu_seconds(self) -> float:
        return self.seconds * self.gpus


@dataclass(frozen=True)
class NodePlan:
    """A node's throughput with every pool sized to keep pace with the others: audio-hours per hour, the
    resource and the stage that bound it, and each stage's pool size (whole actors that fit the node)."""
    audio_hours_per_hour: float
    bound_by: str                  # "cpus" or "gpus"
    bounding_stage: str
    pools: dict[str, int]


def balance_node(costs: list[StageCost], cpus: float, gpus: float) -> NodePlan:
    """At T audio-hours per hour a stage keeps `T x seconds / 3600` actors busy; the node holds them while
    their CPUs (and GPUs) sum to at most its own. The largest T that fits is the node's throughput; the
    stage holding the largest share of the scarce resource bounds it.

    >>> balance_node([StageCost("asr", 90, 2, 1), StageCost("pack", 20, 1)], cpus=128, gpus=8).bound_by
    'gpus'
    """
    demand = {"cpus": sum(c.core_seconds for c in costs), "gpus": sum(c.gpu_seconds for c in costs)}
    have = {"cpus": cpus, "gpus": gpus}
    limits = {r: 3600 * have[r] / demand[r] for r in demand if demand[r] > 0}
    if not limits:
        raise ValueError("no stage costs anything")
    bound_by = min(limits, key=limits.get)
    throughput = limits[bound_by]
    share = (lambda c: c.core_seconds) if bound_by == "cpus" else (lambda c: c.gpu_seconds)
    return NodePlan(throughput, bound_by, max(costs, key=share).stage, whole_pools(costs, throughput, cpus, gpus))


def whole_pools(costs: list[StageCost], throughput: float, cpus: float, gpus: float) -> dict[str, int]:
    """Whole actors per stage for `throughput`: each stage's busy actors rounded down (at least one), then
    one more to the stages furthest behind while the node still holds it."""
    wanted = {c.stage: throughput * c.seconds / 3600 for c in costs}
    pools = {c.stage: max(1, math.floor(wanted[c.stage] + _EPSILON)) for c in costs}
    free = {"cpus": cpus - sum(pools[c.stage] * c.cpus for c in costs),
            "gpus": gpus - sum(pools[c.stage] * c.gpus for c in costs)}
    for c in sorted(costs, key=lambda c: pools[c.stage] - wanted[c.stage]):
        if pools[c.stage] < wanted[c.stage] and c.cpus <= free["cpus"] + _EPSILON and c.gpus <= free["gpus"] + _EPSILON:
            pools[c.stage] += 1
            free["cpus"], free["gpus"] = free["cpus"] - c.cpus, free["gpus"] - c.gpus
    return pools
