"""The only module that imports Ray: runs the curation stages as a streaming Ray Data pipeline.

decode (tasks, one source each) -> model stages (actor pools: the model loads once per actor)
-> pack (tasks: encode FLAC/JSON/npy in the workers) -> the driver, which only appends bytes to shards.
Ray Data streams blocks with backpressure, so memory stays bounded whatever the number of inputs.
`RAY_ADDRESS` (set by `ray job submit`) selects a cluster; without it Ray starts embedded.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

from omegaconf import DictConfig, OmegaConf

from pipeline.shards.schema import PipelineInfo
from pipeline.stages.base import Stage, run_stage
from pipeline.stages.decode import decode_sessions
from pipeline.stages.pack import PackedRecording, pack_recording


@dataclass(frozen=True)
class StagePlan:
    """A model stage and how Ray runs it (from the `resources.<name>` config section)."""
    name: str
    make: Callable[[], Stage]
    resources: DictConfig


class _StageActor:
    """Ray Data actor: builds its stage and loads its model once, then processes batches of works."""

    def __init__(self, make: Callable[[], Stage]):
        self.stage = make()
        self.stage.setup()

    def __call__(self, batch: dict) -> dict:
        import numpy as np

        works = run_stage(self.stage, list(batch["work"]))
        out = np.empty(len(works), dtype=object)
        out[:] = works
        return {"work": out}


def init_ray(cfg: DictConfig) -> None:
    import ray

    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS")
    # Job-submitted drivers attach to their cluster; local runs start an embedded Ray with the config's CPUs.
    ray.init(address=address or None, num_cpus=None if address else cfg.ray.local_num_cpus,
             include_dashboard=False if not address else None, log_to_driver=cfg.ray.log_to_driver,
             ignore_reinit_error=True)


def curate_stream(cfg: DictConfig, todo: Iterable[tuple[str, list[str]]], stages: list[StagePlan],
                  pipeline: PipelineInfo) -> Iterator[PackedRecording]:
    """Packed recordings as they finish, for `todo` = [(source, recording ids to skip)], in any order."""
    import numpy as np
    import ray

    init_ray(cfg)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = cfg.ray.progress_bars
    context.execution_options.preserve_order = False
    decode_cfg = OmegaConf.to_container(cfg.decode)
    sample_rate = cfg.sample_rate

    def decode(row: dict) -> list[dict]:
        works = decode_sessions(row["source"], OmegaConf.create(decode_cfg), sample_rate, set(row["skip"]))
        return [{"work": w} for w in works]

    def pack(row: dict) -> dict:
        return {"packed": pack_recording(row["work"], pipeline)}

    items = [{"source": source, "skip": list(skip)} for source, skip in todo]
    if not items:
        return
    ds = ray.data.from_items(items, override_num_blocks=min(len(items), cfg.ray.input_blocks))
    ds = ds.flat_map(decode, num_cpus=cfg.resources.decode.num_cpus)
    for plan in stages:
        r = plan.resources
        ds = ds.map_batches(_StageActor, fn_constructor_args=(plan.make,), batch_size=r.batch_size,
                            batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=r.concurrency),
                            num_cpus=r.num_cpus,
                            num_gpus=r.num_gpus or None)
    ds = ds.map(pack, num_cpus=cfg.resources.pack.num_cpus)
    for row in ds.iter_rows():
        packed = row["packed"]
        yield packed if isinstance(packed, PackedRecording) else np.asarray(packed).item()
