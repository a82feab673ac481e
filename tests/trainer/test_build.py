"""What `trainer.build` sets up for a run beyond the model itself."""
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).parents[2]


def test_deterministic_kernels_are_switched_on_for_the_whole_process():
    # process-wide switches: checked in a process of their own, as a training job sets them
    code = ("import os, torch; from trainer.build import use_deterministic_kernels; "
            "assert not torch.are_deterministic_algorithms_enabled(); use_deterministic_kernels(); "
            "print(torch.are_deterministic_algorithms_enabled(), os.environ['CUBLAS_WORKSPACE_CONFIG'], "
            "os.environ['NVTE_ALLOW_NONDETERMINISTIC_ALGO'])")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["True", ":4096:8", "0"]
