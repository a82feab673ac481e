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
    dist_checkpointing.save(training.optimizer.sharded_state_dict(model_state), str(partial / "optimizer"))
    if keeps_loader_state:
        (partial / "loader" / f"dp{dp_rank:05d}.json").write_text(json.dumps(loader_state))
    barrier()
    if is_rank0():
        state = {**trainer_state, "step": step, "scheduler": training.scheduler.state_dict()}
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


def load_training_checkpoint(folder: Path, model, training) -> tuple[dict, list[dict]]:
    """Restore model, optimizer and schedule in place; returns (trainer_state, every data-parallel rank's
    loader state, by rank): a run on another data-parallel size deals them out anew (trainer.data.reshard)."""
    from megatron.core import dist_checkpointing

    state = json.loads((folder / "trainer_state.json").read_text())
    model.load_state_dict(dist_checkpointing.load(model.sharded_state_dict(), str(folder / "weights")))
    model_state = model.sharded_state_dict()
    training.optimizer.load_state_dict(
        dist_checkpointing.load(training.optimizer.sharded_state_dict(model_state, is_loading=True),
                                str(folder / "optimizer")))
    training.scheduler.load_state_dict(state["scheduler"])
    loaders = [json.loads((folder / "loader" / f"dp{rank:05d}.json").read_text())
               for rank in range(state["data_parallel_size"])]
    return state, loaders
