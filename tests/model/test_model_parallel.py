"""One step at TP=1/PP=1 in this process against TP=2 and PP=2 in two processes under real torchrun (gloo), on
packed rows; PP=2 also with the rows as one sequence, as under Transformer Engine."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from model.checkpoint import load_checkpoint, save_checkpoint
from model.config import kimi_audio_tiny
from model.kimi_audio import build_model
from tests.model.parallel_check import train_step

REPO = Path(__file__).parents[2]


def run_two_processes(*args: str) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)  # this process's single-rank group is not the children's
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone",
                             "-m", "tests.model.parallel_check", *args], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]


@pytest.mark.parametrize("tp, pp, shared_layers, last_stage_shared_layers, attention", [
    (2, 1, 2, "", "mask"),
    (1, 2, 3, "1", "mask"),  # uneven stages: two shared layers on the first, one and both heads on the last
    # packed rows as one sequence, as under Transformer Engine: the stages exchange [B x S, 1, H], and the
    # losses and gradients are the one-process block mask's
    (1, 2, 3, "1", "thd"),
])
def test_parallel_step_matches_one_process_and_its_checkpoint_loads_whole(
        megatron, tmp_path, tp, pp, shared_layers, last_stage_shared_layers, attention):
    torch.manual_seed(0)
    save_checkpoint(build_model(kimi_audio_tiny().with_changes(shared_layers=shared_layers)), tmp_path / "start")
    run_two_processes(str(tmp_path / "start"), str(tmp_path / "parallel"), str(tp), str(pp),
                      last_stage_shared_layers, attention)
    parallel_losses = json.loads((tmp_path / "parallel" / "losses.json").read_text())

    model = load_checkpoint(tmp_path / "start")
    start = {k: v.clone() for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}
    one_process_losses = train_step(model)
    for name in ("loss", "audio", "text"):
        assert parallel_losses[name] == pytest.approx(one_process_losses[name], rel=1e-5)

    # the parallel run saved its stepped weights sharded over two processes; loaded whole here they equal
    # the one-process step, so the gradients agreed (a learning rate of 1 puts any difference into the weights)
    stepped_in_parallel = load_checkpoint(tmp_path / "parallel" / "ckpt").state_dict()
    moved = 0
    for name, tensor in model.state_dict().items():
        if isinstance(tensor, torch.Tensor):
            torch.testing.assert_close(stepped_in_parallel[name], tensor, atol=1e-5, rtol=1e-4, msg=name)
            moved += not torch.equal(tensor, start[name])
    assert moved > 20  # the step changed nearly every tensor: the comparison is not vacuous
