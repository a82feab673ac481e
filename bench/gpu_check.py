"""`make gpu-check`: every CUDA path once, on the first machine with NVIDIA GPUs; one line per path.

    python -m bench.gpu_check [--dry-run] [--out gpu_check.json] [--workdir bench_out/gpu_check] [--skip-install]
                              [--steps model,mfu,...] [--dataset CURATED]

Steps (each a process of its own, so one that crashes fails alone):
- install: what CPU runs do not need, for torch 2.8's CUDA 12: the `gpu` extra (onnxruntime-gpu, torch's
  CUDA headers) and Transformer Engine (its prebuilt core, and its torch extension, C++ compiled against
  this torch and those headers when NVIDIA has no prebuilt one for it), then a check that they load:
  onnxruntime's CUDA provider for torch's CUDA major, `transformer_engine.pytorch`;
- curation: the demo config with every model stage on `cuda` and a share of the GPU, on a generated
  2-minute dialog; per-stage audio-seconds per second; the output verified;
- tokenizer: the semantic tokenizer on CUDA in fp32 and bf16 (autocast): the fraction of ids equal to the
  CPU fp32 result, audio-seconds per second at batch 1 and 32;
- model, model_te: the `small` preset with the local (model) and the Transformer Engine (model_te) spec,
  fp32 and bf16, forward and backward: the first step's loss of each against local fp32 (fp32 within
  0.1%: the same math in another kernel order; bf16 within 2%: an 8-bit mantissa rounds each op by ~0.4%,
  and a random model's loss near ln(vocab) moves by far less than 2% through a dozen layers), and two
  samples packed in one row against the second alone (`PACKING_TOLERANCE`: an attention that lets the
  second see the first fails it; under TE the row goes as two segments of one sequence, thd); two
  steps, so a machine without Transformer Engine still checks the local spec;
- mfu: `bench.model --mfu` (kimi_audio_1b, bf16; local spec and TE's where it loads; whole causal rows and
  rows packed with four samples) with the GPU's dense bf16 peak looked up by name;
- trainer: torchrun on every visible GPU with NCCL, bf16, the distributed optimizer and deterministic
  kernels (`train.deterministic`: without them a resumed run's losses drift in the 6th digit a few steps
  on, from nondeterministic kernels such as F.embedding's atomic backward), 20 steps of `small` with a
  checkpoint at 10; then the same run stopped by SIGTERM after its checkpoint and resumed: losses of
  steps 11-20 identical, and the model TFLOP/s per GPU and MFU the trainer logged; with 2 or more GPUs also
  tensor parallel 2 and pipeline parallel 2. They train on the curation step's output, or on `--dataset`
  (a curated dataset made elsewhere, e.g. on CPU).
`--steps` runs some of them (a machine with no package index: `--skip-install`, the rest brought along).
Each line goes to `--out` as {step: {passed, seconds, figure}}, with `attention` where Transformer Engine said
which attention kernel it chose (the steps run with its debug log on); the exit status is 1 when any failed.
`--dry-run` builds every step's command and checks its configs on a CPU-only machine, touching no CUDA.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

GPU_SHARE = 0.2  # five model stages share one GPU in the curation step
REPO = Path(__file__).resolve().parents[1]


@dataclass
class Step:
    name: str
    command: list[str]
    timeout_s: int
    configs: list[tuple[str, str, list[str]]] = field(default_factory=list)  # (kind, file, overrides)


def curation_overrides(models: dict) -> list[str]:
    from jobs.build_models import curate_overrides

    overrides = [*curate_overrides(models), "enhance.device=cuda", "diarize.embedding.device=cuda",
                 "transcribe.device=cuda", "transcribe.compute_type=float16", "quality.device=cuda",
                 "tokenize.device=cuda", "tokenize.batch_size=32", "ray.local_num_cpus=8", "ray.progress_bars=false"]
    return overrides + [f"resources.{stage}.num_gpus={GPU_SHARE}"
                        for stage in ("enhance", "diarize", "transcribe", "quality", "tokenize")]


def training_overrides(workdir: Path, dataset: Path, *extra: str) -> list[str]:
    inputs = workdir / "inputs"
    return [f"data.dataset={dataset}", f"data.text_tokenizer={inputs / 'text-tokenizer'}",
            f"data.text_corpus=[{inputs / 'corpus.jsonl'}]", f"model.whisper={inputs / 'whisper'}",
            "model.preset=small", "model.params_dtype=bfloat16", "train.steps=20", "train.save_every=10",
            "train.log_every=1", "train.eval_every=0", "train.deterministic=true", "data.num_workers=0", *extra]


def plan(workdir: Path, gpus: int, skip_install: bool, dataset: Path | None = None) -> list[Step]:
    py, models = sys.executable, workdir / "models"
    dataset = dataset or workdir / "curated"
    from jobs.build_models import model_folders

    curate = ["-m", "jobs.curate", "--config", "configs/curate/demo.yaml", f"input={workdir / 'raw'}",
              f"output={workdir / 'curated'}", *curation_overrides(model_folders(models))]
    # compiling Transformer Engine's extension takes 11 CPU-minutes (measured on 2 cores), a minute or two
    # on a GPU node's; a build stopped by the timeout installs nothing
    steps = [] if skip_install else [Step("install", [py, "-m", "bench.gpu_check", "--step", "install", "--workdir",
                                                      str(workdir)], 600)]
    steps += [Step("curation", [py, "-m", "bench.gpu_check", "--step", "curation", "--workdir", str(workdir)], 240,
                   [("curate", "configs/curate/demo.yaml", curate[5:])]),
              Step("tokenizer", [py, "-m", "bench.gpu_check", "--step", "tokenizer", "--workdir", str(workdir)], 120),
              Step("model", [py, "-m", "bench.gpu_check", "--step", "model", "--workdir", str(workdir)], 180),
              Step("model_te", [py, "-m", "bench.gpu_check", "--step", "model_te", "--workdir", str(workdir)], 180),
              Step("mfu", [py, "-m", "bench.model", "--mfu", "--batch", "4", "--seq", "2048", "--steps", "5"], 180)]
    torchrun = [py, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node"]
    pretrain = ["-m", "jobs.pretrain", "--config", "configs/pretrain/tiny.yaml"]
    steps.append(Step("trainer", [py, "-m", "bench.gpu_check", "--step", "trainer", "--workdir", str(workdir),
                                  "--gpus", str(gpus), "--dataset", str(dataset)], 300,
                      [("pretrain", "configs/pretrain/tiny.yaml", [f"run_dir={workdir / 'runs' / 'dp'}",
                                                                   *training_overrides(workdir, dataset)])]))
    if gpus >= 2:
        for name, layout in (("tp2", "parallel.tensor=2"), ("pp2", "parallel.pipeline=2")):
            run_dir = workdir / "runs" / name
            overrides = [f"run_dir={run_dir}", *training_overrides(workdir, dataset, layout, "train.steps=10")]
            steps.append(Step(name, [*torchrun, "2", *pretrain, *overrides], 240,
                              [("pretrain", "configs/pretrain/tiny.yaml", overrides)]))
    return steps


def gpu_extra() -> dict[str, "Requirement"]:
    """The `gpu` extra's requirements by name, from this checkout's setup.cfg (what the install step installs)."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
    from setuptools.config.setupcfg import read_configuration

    lines = read_configuration(REPO / "setup.cfg")["options"]["extras_require"]["gpu"]
    return {canonicalize_name(r.name): r for r in map(Requirement, lines)}


def pinned(requirement) -> str | None:
    return next((s.version for s in requirement.specifier if s.operator == "=="), None)


# Transformer Engine, installed by the install step, not by the `gpu` extra (setup.cfg says why): the newest
# release in megatron-core 0.16.1's range (>= 2.9, < 2.12)
TRANSFORMER_ENGINE = "2.11.0"


def install_commands(py: str) -> list[list[str]]:
    """What the install step runs, in order. onnxruntime and onnxruntime-gpu are one package directory under
    two names: removing both first leaves the GPU build's files whole, however often this runs. The last
    command runs with CUDA_HOME at `pip_cuda_home`."""
    import torch

    te_core = f"transformer_engine[core_cu{(torch.version.cuda or '12').split('.')[0]}]=={TRANSFORMER_ENGINE}"
    return [[py, "-m", "pip", "uninstall", "-y", "-q", "onnxruntime", "onnxruntime-gpu"],
            [py, "-m", "pip", "install", "-q", "-e", ".[gpu]"],
            # the core library and the torch extension in one command, so a failed build installs neither;
            # the extension's setup.py fetches NVIDIA's prebuilt wheel for this torch where GitHub has one,
            # else it compiles against the torch installed here (no isolated build environment)
            [py, "-m", "pip", "install", "-q", "--no-build-isolation", te_core,
             f"transformer_engine_torch=={TRANSFORMER_ENGINE}"]]


def gpu_extra_problems() -> list[str]:
    """Why the `gpu` extra and Transformer Engine would not fit this torch and megatron-core: checked by the
    dry run, before a GPU machine spends minutes installing them."""
    from importlib.metadata import requires, version

    import torch
    from packaging.requirements import Requirement

    extra, problems = gpu_extra(), []
    for name in ("torch", "onnxruntime-gpu"):
        if name not in extra or pinned(extra[name]) is None:
            problems.append(f"the gpu extra must pin {name} exactly (==)")
    if "torch" in extra and pinned(extra["torch"]) not in (None, version("torch").split("+")[0]):
        problems.append(f"the gpu extra pins torch {pinned(extra['torch'])}, {version('torch')} is installed")
    cuda = torch.version.cuda or "12.8"  # a CPU-only torch: the CUDA of the wheels the pin names (cu128)
    for package in ("nvidia-cuda-nvcc", "nvidia-cuda-cccl"):  # the headers Transformer Engine compiles against
        name = f"{package}-cu{cuda.split('.')[0]}"
        if name not in extra or not extra[name].specifier.contains(cuda) or not extra[name].specifier:
            problems.append(f"the gpu extra must hold {name}=={cuda}.*, torch's CUDA headers")
    if "transformer-engine" in extra:
        problems.append("transformer-engine must not be in the gpu extra: its core without its torch extension "
                        "makes megatron-core fail to import")
    core_range = next((Requirement(line).specifier for line in requires("megatron-core") or []
                       if Requirement(line).name == "transformer-engine"), None)
    if core_range is not None and not core_range.contains(TRANSFORMER_ENGINE, prereleases=True):
        problems.append(f"transformer-engine {TRANSFORMER_ENGINE} is outside megatron-core "
                        f"{version('megatron-core')}'s range {core_range}")
    return problems


def step_install(workdir: Path) -> dict:
    """Every install command runs, then both halves are checked, so one report says all that is wrong."""
    import importlib

    # ninja (the extra brings it) is found on PATH: this environment's bin, activated or not; each of its
    # compilers holds up to 2.3 GB (measured), so as many as the memory allows 3 GB each, at most one a core
    memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9
    compilers = max(1, min(os.cpu_count() or 1, int(memory_gb // 3)))
    env = {**os.environ, "NVTE_FRAMEWORK": "pytorch", "MAX_JOBS": str(compilers),
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    log = workdir / "logs" / "install-pip.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    problems = []
    uninstall, extra, transformer_engine = install_commands(sys.executable)
    with open(log, "w") as out:
        for command in (uninstall, extra, transformer_engine):
            if command is transformer_engine:  # the extra has brought torch's CUDA headers
                env["CUDA_HOME"] = str(pip_cuda_home(pip_nvidia_folder(), cuda_headers(workdir)))
            out.write(f"$ {' '.join(command)}\n")
            out.flush()
            if subprocess.run(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT).returncode:
                problems.append(f"`{' '.join(command[3:])}` failed")
    importlib.invalidate_caches()
    alias_pip_cudart()
    stack, stack_problems = gpu_stack()
    if problems or stack_problems:
        raise RuntimeError(f"{'; '.join(problems + stack_problems)} (see {log})")
    return stack


def pip_nvidia_folder() -> Path:
    """Where the `nvidia` pip packages (torch's CUDA libraries, the extra's headers) live in this environment."""
    import sysconfig

    return Path(sysconfig.get_path("purelib")) / "nvidia"


def cuda_headers(workdir: Path) -> Path:
    return workdir / "cuda-headers"


def pip_cuda_home(nvidia: Path, into: Path) -> Path:
    """A CUDA_HOME whose `include` holds the headers of every `nvidia` pip package (links, made anew), for
    compiling Transformer Engine's torch extension against torch's own CUDA. Its build takes CUDA_HOME's
    headers before anything else; without it, a toolkit of another CUDA (nvcc on PATH, /usr/local/cuda),
    where there is one, would win. Packages' folders that are links (`alias_pip_cudart`'s) are skipped."""
    include = into / "include"
    shutil.rmtree(into, ignore_errors=True)
    include.mkdir(parents=True)
    for package in sorted(nvidia.iterdir()):
        if package.is_symlink() or not (package / "include").is_dir():
            continue
        for entry in (package / "include").iterdir():
            if entry.name not in ("__init__.py", "__pycache__") and not (include / entry.name).exists():
                (include / entry.name).symlink_to(entry.resolve())
    return into


def alias_pip_cudart() -> None:
    """Without a CUDA toolkit, Transformer Engine 2.11 loads the CUDA runtime from the `nvidia` pip packages
    and looks for it under `nvidia/cudart` (or `cuda_cudart`), where CUDA 12's wheel puts it under
    `nvidia/cuda_runtime`: its import then fails with "cudart shared object not found". An alias named as
    it looks for fixes that (tried on a CPU machine: the core library then loads)."""
    nvidia = pip_nvidia_folder()
    alias = nvidia / "cudart"
    if (nvidia / "cuda_runtime" / "lib").is_dir() and not alias.exists() and not (nvidia / "cuda_cudart").exists():
        alias.symlink_to("cuda_runtime")


def gpu_stack() -> tuple[dict, list[str]]:
    """What the CUDA paths load, and what is wrong with it: onnxruntime's CUDA provider, built for torch's
    CUDA major, and Transformer Engine's torch extension (whose import fails when it was built for another
    torch)."""
    from importlib.metadata import version

    import onnxruntime as ort
    import torch
    from onnxruntime.capi import build_and_package_info

    from pipeline.stages.dnsmos import cuda_provider_problem

    ort_cuda = getattr(build_and_package_info, "cuda_version", None)
    stack, problems = {"torch": torch.__version__, "onnxruntime": f"{ort.__version__} (CUDA {ort_cuda})"}, []
    if problem := cuda_provider_problem():
        problems.append(problem)
    elif (ort_cuda or "").split(".")[0] != (torch.version.cuda or "").split(".")[0]:
        problems.append(f"onnxruntime-gpu {ort.__version__} is built for CUDA {ort_cuda}, torch for "
                        f"{torch.version.cuda}: pin the last onnxruntime-gpu for that CUDA in the gpu extra")
    try:
        import transformer_engine.pytorch  # noqa: F401

        stack["transformer_engine"] = version("transformer_engine_torch")
    except Exception as e:  # noqa: BLE001 (reported: the model_te step needs it, the others do not)
        problems.append(f"transformer_engine.pytorch does not import: {type(e).__name__}: {e}")
    return stack, problems


def check_configs(step: Step, workdir: Path) -> list[str]:
    """What the step's configs would be refused for, apart from this machine having no GPU and the model
    folders and data under `workdir` that the steps themselves make."""
    from jobs.cli import ConfigError, load_settings
    from pipeline.config import CurateConfig
    from trainer.config import PretrainConfig

    problems = []
    for kind, path, overrides in step.configs:
        try:
            cfg = load_settings(CurateConfig if kind == "curate" else PretrainConfig, path, overrides)
        except ConfigError as e:
            problems += str(e).splitlines()
            continue
        if kind == "curate":  # what the install step brings (the `gpu` extra) is not there yet either
            problems += [p for p in cfg.problems() if str(workdir) not in p and "the `gpu` extra" not in p]
        else:  # the GPU machine trains on CUDA, with Transformer Engine or without
            from model.specs import cpu_training_problem
            from trainer.checks import model_problems

            problems += [p for p in model_problems(cfg) if p != cpu_training_problem()]
    return problems


# ---- the steps that measure in-process (run as `--step NAME` in a process of their own) -----------------

def write_dialog(folder: Path) -> float:
    """A generated two-speaker dialog of about two minutes as `folder/dialog.wav`; its seconds."""
    import soundfile as sf

    from pipeline.synthetic import make_dialog

    lines = [("a", "en-us+f4", "The quick brown fox jumps over the lazy dog."),
             ("b", "en-gb+f2", "Please call me when you arrive at the station.")] * 24
    dialog = make_dialog(lines, seed=0, noise_level=0.003)
    folder.mkdir(parents=True, exist_ok=True)
    sf.write(folder / "dialog.wav", dialog.audio, dialog.sample_rate, subtype="PCM_16")
    return dialog.seconds


def step_curation(workdir: Path) -> dict:
    from jobs.build_models import build_all
    from pipeline.shards import DatasetLayout
    from pipeline.shards.verify import verify_dataset

    models = build_all(workdir / "models")
    seconds_of_audio = write_dialog(workdir / "raw")
    result = subprocess.run([sys.executable, "-m", "jobs.curate", "--config", "configs/curate/demo.yaml",
                             f"input={workdir / 'raw'}", f"output={workdir / 'curated'}",
                             *curation_overrides(models)], cwd=REPO, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "curation failed")
    layout = DatasetLayout.of(workdir / "curated")
    checked, problems = verify_dataset(layout)
    if problems or not checked:
        raise RuntimeError(f"verify: {checked} samples, {len(problems)} problems")
    seconds = layout.read_info()["last_run"]["stage_seconds"]
    return {"samples": checked, "audio_seconds_per_second": {k: round(seconds_of_audio / v, 1)
                                                             for k, v in seconds.items() if v}}


def step_tokenizer(workdir: Path) -> dict:
    import numpy as np
    import torch

    from model.semantic_tokenizer import SemanticTokenizer
    from model.tiny_folders import write_tiny_semantic_tokenizer

    folder = write_tiny_semantic_tokenizer(workdir / "tokenizer")
    rng = np.random.default_rng(0)
    clips = [(0.1 * rng.standard_normal(int(rng.uniform(2, 27) * 16000))).astype(np.float32) for _ in range(64)]
    audio = sum(len(c) for c in clips) / 16000
    reference = SemanticTokenizer.from_folder(folder, device="cpu").tokenize(clips)
    figures = {}
    for dtype in ("fp32", "bf16"):
        for batch in (1, 32):
            tokenizer = SemanticTokenizer.from_folder(folder, device="cuda", batch_size=batch)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=dtype == "bf16"):
                tokenizer.tokenize(clips[:2])
                torch.cuda.synchronize()
                started = time.perf_counter()
                ids = tokenizer.tokenize(clips)
                torch.cuda.synchronize()
            figures[f"{dtype}_batch{batch}_audio_s_per_s"] = round(audio / (time.perf_counter() - started), 1)
        same = sum(int((a == b).sum()) for a, b in zip(ids, reference)) / sum(len(a) for a in reference)
        figures[f"{dtype}_ids_equal_to_cpu"] = round(same, 4)
    if figures["fp32_ids_equal_to_cpu"] < 0.99:
        raise RuntimeError(f"fp32 on CUDA differs from CPU: {figures}")
    return figures


# an attention that lets the second sample see the first moves its logits by about their own size (1.06 of
# the largest, measured on CPU with the local spec given a plain causal mask); rounding by far less (7e-7 in
# fp32), bf16 included
PACKING_TOLERANCE = 0.1


def packing_error(model, device: str) -> float:
    """Two samples packed in one row (each position marked with its sample, positions restarting; under
    Transformer Engine the row goes as one sequence of two segments, thd) against the second alone: the
    largest difference of its text logits, over their largest size."""
    import torch

    generator, (first, second) = torch.Generator(device=device).manual_seed(2), (192, 320)
    a1, t1, a2, t2 = (torch.randint(0, model.cfg.vocab_size, (1, n), device=device, generator=generator)
                      for n in (first, first, second, second))
    positions = torch.cat([torch.arange(first), torch.arange(second)]).to(device)[None]
    documents = torch.cat([torch.zeros(first), torch.ones(second)]).long().to(device)[None]
    with torch.no_grad():
        alone = model(a2, t2).text_logits.float()
        packed = model(torch.cat([a1, a2], 1), torch.cat([t1, t2], 1), position_ids=positions,
                       document_ids=documents).text_logits[:, first:].float()
    return float((packed - alone).abs().max() / alone.abs().max())


def small_model_figures(specs: tuple[str, ...], device: str = "cuda") -> dict[str, dict[str, float]]:
    """The `small` preset per spec and dtype: the first step's loss on the same random batch (and a backward
    pass through each), and its packing error."""
    import torch

    from bench.model import kimi_step
    from model.config import model_preset
    from model.kimi_audio import LossTargets, build_model
    from model.parallel import init_parallel

    init_parallel(tensor_parallel=1)
    figures = {"loss": {}, "packing_error": {}}
    for spec in specs:
        for dtype in ("float32", "bfloat16"):
            torch.manual_seed(0)
            model = build_model(model_preset("small", spec=spec, params_dtype=dtype))
            generator = torch.Generator(device=device).manual_seed(1)
            vocab = model.cfg.vocab_size
            audio, text, labels = (torch.randint(0, vocab, (2, 512), device=device, generator=generator)
                                   for _ in range(3))
            ones = torch.ones(2, 512, device=device)
            with torch.no_grad():
                figures["loss"][f"{spec}_{dtype}"] = float(model(audio, text, targets=LossTargets(
                    labels, labels, ones, ones)).loss)
            figures["packing_error"][f"{spec}_{dtype}"] = packing_error(model, device)
            kimi_step(model, 2, 512)()
    return figures


def compared_with_local_fp32(figures: dict[str, dict[str, float]]) -> dict:
    losses = figures["loss"]
    base = losses["local_float32"]
    for name, loss in losses.items():
        tolerance = 1e-3 if name.endswith("float32") else 0.02
        if abs(loss - base) > tolerance * abs(base):
            raise RuntimeError(f"{name} loss {loss:.5f} vs local fp32 {base:.5f} (tolerance {tolerance:.1%})")
    for name, error in figures["packing_error"].items():
        if error > PACKING_TOLERANCE:
            raise RuntimeError(f"{name}: a packed sample's logits differ from the sample alone by {error:.3f} of "
                               f"their size (tolerance {PACKING_TOLERANCE}): its attention sees the other sample")
    return {"loss": {k: round(v, 5) for k, v in losses.items()},
            "packing_error": {k: float(f"{v:.2g}") for k, v in figures["packing_error"].items()}}


def step_model(workdir: Path) -> dict:
    return compared_with_local_fp32(small_model_figures(("local",)))


def step_model_te(workdir: Path) -> dict:
    from model.specs import transformer_engine_problem

    if problem := transformer_engine_problem():
        raise RuntimeError(problem)
    return compared_with_local_fp32(small_model_figures(("local", "te")))


def run_quietly(command: list[str], log: Path) -> None:
    """Run a job, its output into `log`; on failure, raise with its error: a rank's exception, or what
    torchrun says of a rank that died without one (a signal, an exit code)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as out:
        returncode = subprocess.run(command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT).returncode
    if returncode != 0:
        lines = log.read_text(errors="replace").splitlines()
        errors = [line for line in lines if re.match(r"(\[rank\d+\]: )?\w+(Error|Exception)\b", line)
                  or re.match(r"\s*(exitcode|Signal)\b", line)]
        raise RuntimeError(f"exit {returncode} (see {log}): " + " | ".join(errors[-3:] or lines[-3:]))


def step_trainer(workdir: Path, gpus: int, dataset: Path) -> dict:
    from omegaconf import OmegaConf

    from jobs.demo import build_training_inputs
    from pipeline.shards import DatasetLayout

    sentences = ["The quick brown fox jumps over the lazy dog.", "Please call me when you arrive at the station."]
    build_training_inputs(OmegaConf.create({"sentences": sentences}), workdir / "inputs")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(gpus),
               "-m", "jobs.pretrain", "--config", "configs/pretrain/tiny.yaml"]
    DatasetLayout.of(str(dataset)).require()  # the curation step makes it; or --dataset names one
    straight, stopped = workdir / "runs" / "dp", workdir / "runs" / "dp-sigterm"
    started = time.perf_counter()
    run_quietly([*command, f"run_dir={straight}", *training_overrides(workdir, dataset)],
                workdir / "logs" / "trainer-dp.log")
    straight_seconds = time.perf_counter() - started
    job = subprocess.Popen([*command, f"run_dir={stopped}", *training_overrides(workdir, dataset)], cwd=REPO,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # to be stopped: no log
    while not (stopped / "checkpoints" / "step-00000010").exists() and job.poll() is None:
        time.sleep(0.2)
    job.send_signal(signal.SIGTERM)
    job.wait(timeout=120)
    run_quietly([*command, f"run_dir={stopped}", *training_overrides(workdir, dataset)],
                workdir / "logs" / "trainer-resumed.log")

    def logged(run_dir: Path) -> list[dict]:
        return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]

    straight_rows = logged(straight)
    a, b = ({r["step"]: r["train/loss"] for r in rows} for rows in (straight_rows, logged(stopped)))
    if [a.get(s) for s in range(11, 21)] != [b.get(s) for s in range(11, 21)]:
        raise RuntimeError(f"resumed losses differ: {a} vs {b}")
    last = straight_rows[-1]  # the trainer's own rates
    return {"processes": gpus, "first_loss": a[1], "last_loss": a[20], "resumed_identical": True,
            "uninterrupted_run_seconds": round(straight_seconds, 1),
            "tflops_per_gpu": round(last["train/model_tflops_per_rank"], 2), "mfu": last.get("train/mfu")}


STEPS = {"install": step_install, "curation": step_curation, "tokenizer": step_tokenizer, "model": step_model,
         "model_te": step_model_te, "trainer": step_trainer}


def run_step(step: Step, env: dict, logs: Path) -> dict:
    """Run one step's process; its whole output goes to `logs/STEP.log`, its figure to the result."""
    started = time.perf_counter()
    try:
        result = subprocess.run(step.command, cwd=REPO, env=env, capture_output=True, text=True,
                                timeout=step.timeout_s)
        logs.mkdir(parents=True, exist_ok=True)
        (logs / f"{step.name}.log").write_text(f"$ {' '.join(step.command)}\n{result.stdout}\n{result.stderr}")
        figure = next((line[len("RESULT "):] for line in reversed(result.stdout.splitlines())
                       if line.startswith("RESULT ")), result.stdout.strip().splitlines()[-1:] or [""])
        figure = json.loads(figure) if isinstance(figure, str) and figure.startswith("{") else figure
        passed = result.returncode == 0
        if not passed:
            figure = (result.stderr.strip().splitlines() or ["failed"])[-1]
        backends = attention_backends(result.stdout + result.stderr)
    except subprocess.TimeoutExpired:
        passed, figure, backends = False, f"timed out after {step.timeout_s} s", []
    outcome = {"passed": passed, "seconds": round(time.perf_counter() - started, 1), "figure": figure}
    return {**outcome, "attention": backends} if backends else outcome


# TE's attention logs its choice under NVTE_DEBUG=1 NVTE_DEBUG_LEVEL=2 (dot_product_attention/utils.py, 2.11):
# which kernel ran explains an MFU figure, and shows whether packed rows reached cuDNN or flash attention
TE_DEBUG = {"NVTE_DEBUG": "1", "NVTE_DEBUG_LEVEL": "2"}


def attention_backends(output: str) -> list[str]:
    """The attention backends Transformer Engine says it selected, each once, in order."""
    return list(dict.fromkeys(re.findall(r"Selected backend = (.+?)\s*$", output, re.MULTILINE)))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="build the commands and configs; touch no CUDA")
    parser.add_argument("--out", default="gpu_check.json")
    parser.add_argument("--workdir", default="bench_out/gpu_check")
    parser.add_argument("--skip-install", action="store_true", help="the `gpu` extra is there already")
    parser.add_argument("--steps", help="comma-separated: run only these steps (default: all)")
    parser.add_argument("--dataset", help="a curated dataset to train on (default: the curation step's output)")
    parser.add_argument("--step", choices=sorted(STEPS), help=argparse.SUPPRESS)  # one step, in this process
    parser.add_argument("--gpus", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    workdir = Path(args.workdir).resolve()
    dataset = Path(args.dataset).resolve() if args.dataset else None
    if args.step:
        kwargs = {"gpus": args.gpus, "dataset": dataset or workdir / "curated"} if args.step == "trainer" else {}
        print("RESULT " + json.dumps(STEPS[args.step](workdir, **kwargs)), flush=True)
        return 0

    gpus = 2 if args.dry_run else __import__("torch").cuda.device_count()  # a dry run plans the 2-GPU steps too
    if not gpus:
        print("gpu-check: no CUDA device here (use --dry-run to check the plan on a CPU machine)", file=sys.stderr)
        return 2
    steps = plan(workdir, gpus, args.skip_install, dataset)
    if args.steps:
        wanted = args.steps.split(",")
        unknown = sorted(set(wanted) - {step.name for step in steps})
        if unknown:
            print(f"gpu-check: no step {', '.join(unknown)} on this machine; the steps: "
                  f"{', '.join(step.name for step in steps)}", file=sys.stderr)
            return 2
        steps = [step for step in steps if step.name in wanted]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYANNOTE_METRICS_ENABLED": "0", **TE_DEBUG}
    results, failed = {}, False
    for step in steps:
        if args.dry_run:
            problems = check_configs(step, workdir) + (gpu_extra_problems() if step.name == "install" else [])
            print(f"gpu-check: {step.name:<10} {'ok' if not problems else 'BAD CONFIG'}  $ {' '.join(step.command)}")
            if step.name == "install":
                *first, transformer_engine = install_commands(sys.executable)
                for command in first:
                    print(f"gpu-check:   $ {' '.join(command)}")
                print(f"gpu-check:   $ CUDA_HOME={cuda_headers(workdir)} {' '.join(transformer_engine)}")
            for line in problems:
                print(f"gpu-check:   {line}")
            failed = failed or bool(problems)
            continue
        results[step.name] = run_step(step, env, workdir / "logs")
        r = results[step.name]
        attention = f"  (attention: {', '.join(r['attention'])})" if r.get("attention") else ""
        print(f"gpu-check: {step.name:<10} {'passed' if r['passed'] else 'FAILED'}  {r['seconds']:6.1f} s  "
              f"{r['figure']}{attention}", flush=True)
        failed = failed or not r["passed"]
        Path(args.out).write_text(json.dumps(results, indent=2))  # after each step: a killed check keeps what ran
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
