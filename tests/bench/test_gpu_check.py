"""`make gpu-check --dry-run` on a CPU machine: every step's command is built and its configs pass the
checks, and nothing touches CUDA."""
import torch

from bench.gpu_check import main, peak_tflops


def test_the_dry_run_plans_every_step_and_touches_no_cuda(tmp_path, capsys):
    assert main(["--dry-run", "--workdir", str(tmp_path), "--out", str(tmp_path / "gpu_check.json")]) == 0
    lines = capsys.readouterr().out.splitlines()
    for step in ("install", "curation", "tokenizer", "model", "model_te", "mfu", "trainer", "tp2", "pp2"):
        assert sum(line.startswith(f"gpu-check: {step} ") and " ok " in line for line in lines) == 1, lines
    assert not torch.cuda.is_initialized()
    assert not (tmp_path / "gpu_check.json").exists()  # a plan, not results


def test_the_peak_is_looked_up_from_the_device_name():
    assert peak_tflops("NVIDIA H200") == 989.0 and peak_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert peak_tflops("NVIDIA L40S") == 362.0 and peak_tflops("Some Future GPU") is None
