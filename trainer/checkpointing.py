"""Training checkpoints: model, optimizer, schedule, step and every data-parallel rank's loader state.

    RUN/checkpoints/step-00000100/   model_config.json, weights/ (a model checkpoint: loadable and
                                     exportable as is), optimizer/, loader/dp00000.json, trainer_state.json
    RUN/checkpoints/latest           the name of the newest complete checkpoint

A checkpoint is written under `step-N.partial` and renamed when every rank has finished, and `latest`
is replaced after that: a run killed while saving resumes from the previous complete checkpoint.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Optional

from model.parallel import barrier, is_rank0


def checkpoints_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def latest_checkpoint(run_dir: str | Path) -> Optional[Path]:
    """The newest complete checkpoint: the one `latest` names, else the newest complete `step-N`."""
    root = checkpoints_dir(run_dir)
    marker = root / "latest"
    if marker.is_file() and (root / marker.read_text().strip() / "trainer_state.json").is_file():
        return root / marker.read_text().strip()
    complete = sorted(p for p in root.glob("step-*") if not p.name.endswith(".partial")
                      and (p / "trainer_state.json").is_file())
    return complete[-1] if complete else None


# How megatron's distributed optimizer (used on GPUs) lays its state out in a checkpoint: each rank's flat
# buffers as they are, saved in parallel without a gather, and loadable at another data-parallel size but
# only at the same tensor x pipeline layout (trainer/checks.py says so before a run starts). Its default,
# `fully_sharded_model_space`, is refused by megatron-core 0.16's own checks ("flattened_range is not
# supported"), and `fully_reshardable` cannot be loaded back with torch's Adam (no Transformer Engine or
# Apex): its load expects no per-parameter `step`, which torch's Adam keeps.
OPTIMIZER_LAYOUT = {"distrib_optim_sharding_type": "dp_reshardable"}


def optimizer_layout() -> str:
    """How this process's optimizer state is checkpointed: the distributed optimizer's layout with CUDA, a
    regular per-parameter state (any parallel layout can resume from it) on CPU."""
    import torch

    return OPTIMIZER_LAYOUT["distrib_optim_sharding_type"] if torch.cuda.is_available() else "per_parameter"


def save_training_checkpoint(run_dir: str | Path, step: int, model, training, loader_state: dict, dp_rank: int,
                             keeps_loader_state: bool, trainer_state: dict, keep: int) -> Path:
    """Every rank calls this at the same step; one rank of each data-parallel index writes its loader state."""
    # imported here: a job that only checks its config, and the helper process megatron's writer spawns (it
    # re-imports the job's __main__), never load megatron-core
    from megatron.core import dist_checkpointing

    from model.checkpoint import save_checkpoint

    root = checkpoints_dir(run_dir)
    final = root / f"step-{step:08d}"
    partial = root / f"step-{step:08d}.partial"
    if is_rank0():
        shutil.rmtree(partial, ignore_errors=True)
        (partial / "loader").mkdir(parents=True)
        (partial / "optimizer").mkdir()
    barrier()
    save_checkpoint(model, partial)
    model_state = model.sharded_state_dict()
    dist_checkpointing.save(training.optimizer.sharded_state_dict(model_state, metadata=OPTIMIZER_LAYOUT),
                            str(partial / "optimizer"))
    if keeps_loader_state:
        (partial / "loader" / f"dp{dp_rank:05d}.json").write_text(json.dumps(loader_state))
    barrier()
    if is_rank0():
        state = {**trainer_state, "step": step, "scheduler": training.scheduler.state_dict(),
                 "optimizer_layout": optimizer_layout()}
        (partial / "trainer_state.json").write_text(json.dumps(state, indent=2))
        partial.rename(final)
        tmp = root / ".latest.tmp"
        tmp.write_text(final.name)
        tmp.replace(root / "latest")
        done = sorted(p for p in root.glob("step-*") if not p.name.endswith(".partial"))
        for old in done[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    barrier()
    return final


def allocate_distributed_optimizer_state(optimizer) -> None:
    """torch's Adam allocates its state at its first step, and megatron's distributed optimizer (without
    Transformer Engine's or Apex's Adam) reads the step count from that state when it lays out the state a
    checkpoint loads into: a run resuming before any step would fail there. megatron's own way of allocating
    it (a step on zero gradients, overwritten by the load) is applied where the state is still empty."""
    from megatron.core.optimizer.distrib_optimizer import DistributedOptimizer

    for part in getattr(optimizer, "chained_optimizers", [optimizer]):
        if isinstance(part, DistributedOptimizer) and not part.optimizer.state:
            part._init_optimizer_states_with_dummy_values()


def restore_step_counts(optimizer, loaded: dict) -> None:
    """megatron-core 0.16's distributed optimizer with torch's Adam (no Transformer Engine or Apex) keeps
    the step count twice: in its parameter groups, which load, and per parameter beside the buffers, which
    its loader leaves at the value they had before the load (the placeholder step). Adam's bias correction
    reads the latter, so every parameter gets the groups' count back, each in a tensor of its own (Adam adds
    1 to each parameter's: a shared one would grow by the parameter count every step)."""
    import torch
    from megatron.core.optimizer.distrib_optimizer import DistributedOptimizer

    parts = getattr(optimizer, "chained_optimizers", [optimizer])
    for part, state_dict in zip(parts, [loaded] if len(parts) == 1 else [loaded[i] for i in range(len(parts))]):
        if not isinstance(part, DistributedOptimizer):
            continue
        counts = {group.get("step") for group in state_dict["optimizer"]["param_groups"]} - {None}
        if len(counts) != 1:
            continue
        count = counts.pop()
        for state in part.optimizer.state.values():
            if "step" in state:
                state["step"] = torch.tensor(float(count))


def load_training_checkpoint(folder: Path, model, training) -> tuple[dict, list[dict]]:
    """Restore model, optimizer and schedule in place; returns (trainer_state, every data-parallel rank's
    loader state, by rank): a run on another data-parallel size deals them out anew (trainer.data.reshard)."""
    from megatron.core import dist_checkpointing

    state = json.loads((folder / "trainer_state.json").read_text())
    model.load_state_dict(dist_checkpointing.load(model.sharded_state_dict(), str(folder / "weights")))
    allocate_distributed_optimizer_state(training.optimizer)
    model_state = model.sharded_state_dict()
    optimizer_state = dist_checkpointing.load(
        training.optimizer.sharded_state_dict(model_state, is_loading=True, metadata=OPTIMIZER_LAYOUT),
        str(folder / "optimizer"))
    training.optimizer.load_state_dict(optimizer_state)
    restore_step_counts(training.optimizer, optimizer_state)
    training.scheduler.load_state_dict(state["scheduler"])
    loaders = [json.loads((folder / "loader" / f"dp{rank:05d}.json").read_text())
               for rank in range(state["data_parallel_size"])]
    return state, loaders
