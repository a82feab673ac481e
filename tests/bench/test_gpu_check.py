"""`make gpu-check --dry-run` on a CPU machine: every step's command is built and its configs pass the
checks, and nothing touches CUDA."""

import sys

import torch
from packaging.requirements import Requirement

from bench import gpu_check
from bench.gpu_check import Step, main, run_step


def test_the_dry_run_plans_every_step_and_touches_no_cuda(tmp_path, capsys):
    assert main(["--dry-run", "--workdir", str(tmp_path), "--out", str(tmp_path / "gpu_check.json")]) == 0
    lines = capsys.readouterr().out.splitlines()
    for step in ("install", "curation", "tokenizer", "model", "model_te", "mfu", "trainer", "tp2", "pp2"):
        assert sum(line.startswith(f"gpu-check: {step} ") and " ok " in line for line in lines) == 1, lines
    assert not torch.cuda.is_initialized()
    assert not (tmp_path / "gpu_check.json").exists()  # a plan, not results
    # the install: onnxruntime's CPU build out before the GPU build (one package directory), and Transformer
    # Engine's core and torch extension in one command, the extension built against the torch installed here
    install = [line.split("$ ", 1)[1].split() for line in lines if line.startswith("gpu-check:   $ ")]
    assert install[0][3:5] == ["uninstall", "-y"] and "onnxruntime" in install[0]
    assert install[1][-1] == ".[gpu]"
    version = gpu_check.TRANSFORMER_ENGINE
    assert "--no-build-isolation" in install[2]
    assert install[2][0] == f"CUDA_HOME={tmp_path / 'cuda-headers'}"  # torch's CUDA headers, not a toolkit's
    assert install[2][-2:] == [f"transformer_engine[core_cu{torch.version.cuda.split('.')[0]}]=={version}",
                               f"transformer_engine_torch=={version}"]


def test_the_dry_run_refuses_a_gpu_install_that_does_not_fit_this_torch_or_megatron_core(monkeypatch, tmp_path,
                                                                                        capsys):
    # what the extra said before: whatever Transformer Engine and onnxruntime-gpu are newest (TE 2.20 then)
    loose = {"torch": "torch==2.8.0", "transformer-engine": "transformer-engine[pytorch]", "onnxruntime-gpu":
             "onnxruntime-gpu"}
    monkeypatch.setattr(gpu_check, "gpu_extra", lambda: {k: Requirement(v) for k, v in loose.items()})
    monkeypatch.setattr(gpu_check, "TRANSFORMER_ENGINE", "2.20.2")
    problems = gpu_check.gpu_extra_problems()
    cuda = torch.version.cuda or "12.8"
    assert problems == ["the gpu extra must pin onnxruntime-gpu exactly (==)",
                        f"the gpu extra must hold nvidia-cuda-nvcc-cu12=={cuda}.*, torch's CUDA headers",
                        f"the gpu extra must hold nvidia-cuda-cccl-cu12=={cuda}.*, torch's CUDA headers",
                        "transformer-engine must not be in the gpu extra: its core without its torch extension "
                        "makes megatron-core fail to import",
                        "transformer-engine 2.20.2 is outside megatron-core 0.16.1's range <2.12.0,>=2.9.0a0"]
    assert main(["--dry-run", "--steps", "install", "--workdir", str(tmp_path)]) == 1
    assert "BAD CONFIG" in capsys.readouterr().out


def test_transformer_engine_compiles_against_every_pip_cuda_header_and_no_alias(tmp_path):
    nvidia = tmp_path / "site-packages" / "nvidia"
    for package, headers in {"cuda_runtime": ["cuda_runtime.h", "cuda_fp16.h"], "cuda_nvcc": ["crt/host_defines.h"],
                             "cuda_cccl": ["nv/target", "cuda/std/cstdint"], "nccl": []}.items():
        (nvidia / package / "include").mkdir(parents=True)
        (nvidia / package / "include" / "__init__.py").touch()
        for header in headers:
            (nvidia / package / "include" / header).parent.mkdir(parents=True, exist_ok=True)
            (nvidia / package / "include" / header).write_text(f"// {package}")
    (nvidia / "cudart").symlink_to("cuda_runtime")  # alias_pip_cudart's: its headers are cuda_runtime's
    for _ in range(2):  # again: the install step may run twice
        home = gpu_check.pip_cuda_home(nvidia, tmp_path / "cuda-headers")
    include = home / "include"
    assert sorted(p.name for p in include.iterdir()) == ["crt", "cuda", "cuda_fp16.h", "cuda_runtime.h", "nv"]
    assert (include / "crt" / "host_defines.h").read_text() == "// cuda_nvcc"
    assert (include / "nv" / "target").read_text() == "// cuda_cccl"


def test_a_steps_result_names_the_attention_kernels_transformer_engine_chose(tmp_path):
    # the lines TE 2.11 logs under NVTE_DEBUG=1 NVTE_DEBUG_LEVEL=2, once per new set of attention inputs
    logged = [f"[DEBUG    | DotProductAttention]: Selected backend = {name}" for name in
              ("FusedAttention (sub-backend 1)", "FusedAttention (sub-backend 1)", "UnfusedDotProductAttention")]
    step = tmp_path / "step.py"
    step.write_text(f"import sys\nprint({chr(10).join(logged)!r}, file=sys.stderr)\nprint('RESULT {{\"mfu\": 0.3}}')\n")
    result = run_step(Step("mfu", [sys.executable, str(step)], 60), {}, tmp_path / "logs")
    assert result["passed"] and result["figure"] == {"mfu": 0.3}
    assert result["attention"] == ["FusedAttention (sub-backend 1)", "UnfusedDotProductAttention"]
    step.write_text("print('RESULT {}')\n")  # no Transformer Engine: no such lines, no such key
    assert "attention" not in run_step(Step("model", [sys.executable, str(step)], 60), {}, tmp_path / "logs")
