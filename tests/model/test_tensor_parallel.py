"""TP=1 in this process against TP=2 in two processes under real torchrun (gloo on CPU)."""
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
from tests.model.tp_check import train_step

REPO = Path(__file__).parents[2]


def test_tp2_matches_tp1_and_its_checkpoint_loads_at_tp1(megatron, tmp_path):
    torch.manual_seed(0)
    save_checkpoint(build_model(kimi_audio_tiny()), tmp_path / "start")

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)  # this process's single-rank group is not the children's
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                             "--standalone", "-m", "tests.model.tp_check", str(tmp_path / "start"),
                             str(tmp_path / "tp2")], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    tp2_losses = json.loads((tmp_path / "tp2" / "losses.json").read_text())

    model = load_checkpoint(tmp_path / "start", tensor_parallel=1)
    start = {k: v.clone() for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}
    tp1_losses = train_step(model)
    for name in ("loss", "audio", "text"):
        assert tp2_losses[name] == pytest.approx(tp1_losses[name], rel=1e-5)

    # the TP=2 run saved its stepped weights sharded two ways; loaded whole here they equal TP=1's step,
    # so the gradients agreed (a learning rate of 1 puts any difference straight into the weights)
    stepped_at_tp2 = load_checkpoint(tmp_path / "tp2" / "ckpt", tensor_parallel=1).state_dict()
    moved = 0
    for name, tensor in model.state_dict().items():
        if isinstance(tensor, torch.Tensor):
            torch.testing.assert_close(stepped_at_tp2[name], tensor, atol=1e-5, rtol=1e-4, msg=name)
            moved += not torch.equal(tensor, start[name])
    assert moved > 20  # the step changed nearly every tensor: the comparison is not vacuous
