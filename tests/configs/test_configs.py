"""Every YAML under configs/ loads, and overrides work the way the jobs use them."""
import importlib.util
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from jobs.cli import ConfigError, load_config, load_settings
from pipeline.config import CurateConfig
from pipeline.evaluation.config import EvaluateConfig
from pipeline.stages.dnsmos import cuda_provider_problem
from pipeline.sft.prepare import PrepareSftConfig
from trainer.config import PretrainConfig, SftConfig

CONFIGS = sorted((Path(__file__).parents[2] / "configs").rglob("*.yaml"))
SCHEMAS = {"curate": CurateConfig, "pretrain": PretrainConfig, "sft": SftConfig, "evaluate": EvaluateConfig,
           "prepare_sft": PrepareSftConfig, "configs": None}
POOLS = "instructions.yaml"  # configs/sft/instructions.yaml: the instruction pools, not a job's config


def kind(path: Path) -> str:
    """Which job a config file is for: its folder's, except configs/sft/prepare*.yaml (jobs.prepare_sft)."""
    return "prepare_sft" if path.parent.name == "sft" and path.name.startswith("prepare") else path.parent.name


JOB_CONFIGS = [p for p in CONFIGS if p.name != POOLS]


def test_there_are_configs():
    assert CONFIGS


RUN_ARGUMENTS = {  # what each kind of job takes on the command line
    "curate": {"input", "output"},
    "pretrain": {"run_dir", "data.dataset", "data.text_tokenizer", "model.whisper", "model.init_checkpoint"},
    "sft": {"run_dir", "data.dataset", "data.text_tokenizer", "model.whisper", "model.init_checkpoint"},
    "evaluate": {"refs", "dataset"},
    "prepare_sft": {"input", "output"},
    "configs": set(),
}


@pytest.mark.parametrize("path", JOB_CONFIGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_config_loads_and_leaves_only_the_run_arguments_open(path):
    cfg = load_config(str(path), schema=SCHEMAS[kind(path)])
    assert OmegaConf.missing_keys(cfg) <= RUN_ARGUMENTS[kind(path)]  # given on the command line
    OmegaConf.to_container(cfg, resolve=True)


@pytest.mark.parametrize("path", [p for p in JOB_CONFIGS if kind(p) in ("pretrain", "sft")],
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_training_configs_name_a_model_preset_and_the_seven_tasks(path):
    from model.config import PRESETS
    from trainer.data.tasks import TASKS

    cfg = load_config(str(path), schema=SCHEMAS[path.parent.name])
    assert cfg.model.preset in PRESETS
    assert set(cfg.tasks) == set(TASKS) and sum(cfg.tasks.values()) > 0
    if path.parent.name == "pretrain":  # report Table 3, in its order
        assert [cfg.tasks[t] for t in TASKS[:7]] == [1, 7, 1, 1, 1, 1, 2]


def test_demo_config_values():
    cfg = load_config("configs/demo.yaml", ["recordings=2", "curate.overrides=[quality.dnsmos=false]"])
    assert cfg.recordings == 2 and list(cfg.curate.overrides) == ["quality.dnsmos=false"]
    assert len(cfg.speakers) >= 2 and cfg.turns_per_recording[0] <= cfg.turns_per_recording[1]
    curate_cfg = load_settings(CurateConfig, cfg.curate.config, ["output=x", *cfg.curate.overrides])
    assert curate_cfg.quality.dnsmos is False


def test_unknown_override_is_an_error():
    with pytest.raises(ConfigError, match="recordingz"):
        load_config("configs/demo.yaml", ["recordingz=2"])
    with pytest.raises(ConfigError, match="key=value"):
        load_config("configs/demo.yaml", ["recordings"])


def test_curate_configs_validate(tmp_path, monkeypatch):
    from jobs.build_models import build_all, curate_overrides
    from jobs.curate_checks import validate

    models = build_all(tmp_path / "models")
    demo = load_settings(CurateConfig, "configs/curate/demo.yaml", [*curate_overrides(models), "output=x"])
    validate(demo)
    # an autoscaling pool: its minimum must fit this machine, its maximum need not
    validate(load_settings(CurateConfig, "configs/curate/demo.yaml", [*curate_overrides(models), "output=x",
                                                                     "resources.quality.concurrency=[1,9]"]))
    default = load_settings(CurateConfig, "configs/curate/default.yaml", ["input=x", "output=y"])
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")  # GPU stages: a cluster's capacity is checked once attached
    validate(default)  # hub ids are fine with network
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError, match="hub id"):
        validate(default)
    monkeypatch.delenv("RAY_ADDRESS")
    if not __import__("torch").cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA device"):  # embedded on this machine
            validate(default)


@pytest.mark.parametrize("override, message", [
    ("diarize.cluster_merge_threshold=1.5", "cosine similarity"),
    ("diarize.min_segment_seconds=40", "min_segment_seconds"),
    ("diarize.backend=magic", "not available"),
    ("transcribe.model=/nonexistent/whisper", "no CTranslate2 model folder"),
    ("quality.limits.min_duration=50", "min_duration"),
    ("resources.transcribe.batch_size=0", "batch_size"),
    ("enhance.repo=/nonexistent/demucs", "no demucs model"),
    ("transcribe.align_models.en=./nowhere", "no wav2vec2 CTC folder"),
    ("transcribe.nltk_data=/nonexistent", "punkt_tab"),
    ("tokenize.model=/nonexistent/tokenizer", "no semantic tokenizer folder"),
    ("transcribe.paraformer.model=/nonexistent/paraformer", "no FunASR Paraformer folder"),
    ("transcribe.paraformer.comma_gap=2.0", "comma_gap"),
    ("resources.quality.concurrency=[3,1]", r"a \[min, max\] range with 1 <= min <= max"),
    ("resources.quality.concurrency=0", "must be a pool size >= 1"),
    ("resources.transcribe.memory_mb=-1", "memory_mb=-1 must be a number of MB >= 0"),
    ("resources.write.concurrency=0", "must be the most writer tasks at once"),
    ("resources.quality.concurrency=[9,12]", "the pools need 4 CPU together"),  # the minimum must fit
    ("resources.transcribe.memory_mb=100000000", "no node has that much memory"),
    ("diarize.audio=denoised", "choose original"),
    ("enhance.enabled=false;transcribe.audio=enhanced", "transcribe.audio=enhanced but enhance.enabled=false"),
    ("quality.dnsmos_precision=half", "not one of auto, float32, bfloat16"),
    ("quality.device=cuda;resources.quality.num_gpus=0.5;quality.dnsmos_precision=bfloat16", "is a CPU path"),
    # onnxruntime without its CUDA provider (CI's) would score on the CPU without a word
    pytest.param("quality.device=cuda;resources.quality.num_gpus=0.5",
                 "has no CUDA provider, so DNSMOS on cuda would run",
                 marks=pytest.mark.skipif(cuda_provider_problem() is None,
                                          reason="onnxruntime-gpu (the gpu extra) is installed")),
])
def test_bad_curate_settings_are_refused(override, message, monkeypatch):
    from jobs.curate_checks import validate

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # so a hub id passes and only the bad setting is refused
    cfg = load_settings(CurateConfig, "configs/curate/demo.yaml", [
        "transcribe.model=tiny.en", "enhance.repo=null", "transcribe.align_models.en=null",
        "transcribe.nltk_data=null", *override.split(";")])
    with pytest.raises(ConfigError, match=message):
        validate(cfg)


def test_the_production_config_is_the_code_defaults():
    """configs/curate/default.yaml documents the defaults that live in the stage modules: the two agree."""
    import dataclasses

    from_file = load_settings(CurateConfig, "configs/curate/default.yaml", ["input=x", "output=y"])
    from_code = OmegaConf.to_object(OmegaConf.structured(CurateConfig(input="x", output="y")))
    assert dataclasses.asdict(from_file) == dataclasses.asdict(from_code)
    assert from_file.tokenize.enabled  # the trainer needs semantic tokens
    assert all(r.num_gpus >= 1 for stage, r in from_file.pools().items() if stage in from_file.stage_devices()
               and from_file.stage_devices()[stage].startswith("cuda"))
    evaluate = load_settings(EvaluateConfig, "configs/evaluate/default.yaml", ["refs=r", "dataset=d"])
    assert evaluate == EvaluateConfig(refs="r", dataset="d")
    prepare = load_settings(PrepareSftConfig, "configs/sft/prepare.yaml", ["input=i", "output=o"])
    from_code = OmegaConf.to_object(OmegaConf.structured(PrepareSftConfig(input="i", output="o")))
    assert dataclasses.asdict(prepare) == {**dataclasses.asdict(from_code), "instructions": f"configs/sft/{POOLS}"}


def test_the_instruction_pools_load_and_name_every_task():
    from pipeline.sft.instructions import load_pools

    pools = load_pools(f"configs/sft/{POOLS}", 0.5)
    assert pools.problems() == []
    assert len(pools.pools["asr"]) >= 10 and {"understanding", "aqa", "captioning", "emotion", "sound_event",
                                               "chat", "speech2speech"} <= set(pools.pools)


def test_unknown_keys_and_wrong_types_are_all_named_at_once(tmp_path, capsys):
    from jobs.cli import parse_job_args

    config = tmp_path / "mine.yaml"
    config.write_text("base: " + str(Path("configs/curate/demo.yaml").resolve()) + "\n"
                      "diarize: {cluster_merge_treshold: 0.7}\nquality: {limits: {min_snr_db: loud}}\n")
    with pytest.raises(SystemExit) as exit_:
        parse_job_args("curate", CurateConfig, ["--config", str(config), "shards.target_bytes=abc",
                                                "transcribe.beam_size=1.5", "outptu=x"], name="curate")
    assert exit_.value.code == 2
    lines = capsys.readouterr().err.splitlines()
    for setting in ("diarize.cluster_merge_treshold: unknown setting", "quality.limits.min_snr_db='loud'",
                    "shards.target_bytes='abc'", "transcribe.beam_size=1.5", "outptu: unknown setting"):
        assert sum(setting in line for line in lines) == 1, (setting, lines)
    assert all(line.startswith("curate: error: ") for line in lines)


def test_every_problem_of_a_curation_config_is_printed_before_ray_starts(tmp_path, capsys, monkeypatch):
    from jobs import curate

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # hub ids pass: only the problems below are refused
    output = tmp_path / "out"
    cfg = load_settings(CurateConfig, "configs/curate/demo.yaml", [
        "enhance.repo=null", "transcribe.align_models.en=null", "transcribe.nltk_data=null",
        "transcribe.paraformer.model=paraformer-zh", "tokenize.model=THUDM/glm-4-voice-tokenizer",
        f"output={output}", "sample_rate=22050", "diarize.cluster_merge_threshold=1.5",
        "resources.diarize.num_gpus=1", "quality.limits.min_duration=50", "transcribe.model=/nonexistent/whisper",
        "shards.target_samples=0", "decode.split_search_seconds=-1", "tokenize.device=cuda"])
    assert curate.main(cfg) == 2
    lines = capsys.readouterr().err.splitlines()
    for message in ("sample_rate=22050: the model stages work at 16000 Hz",
                    "diarize.cluster_merge_threshold=1.5 is not a cosine similarity",
                    "diarize: resources.diarize.num_gpus=1 but the model runs on cpu",
                    "quality.limits.min_duration > quality.limits.max_duration",
                    "transcribe.model: no CTranslate2 model folder at /nonexistent/whisper",
                    "shards.target_samples=0 must be a positive integer",
                    "decode.split_search_seconds=-1 must be >= 0",
                    "tokenize: device cuda but resources.tokenize.num_gpus=0"):
        assert sum(message in line for line in lines) == 1, (message, lines)
    assert all(line.startswith("curate: error: ") for line in lines) and len(lines) == 8
    assert not output.exists()  # nothing written, no Ray started
    assert "ray" not in __import__("sys").modules or not __import__("ray").is_initialized()


def test_every_problem_of_a_training_config_is_named_before_the_model(tmp_path):
    from trainer.checks import run_problems

    cfg = load_settings(PretrainConfig, "configs/pretrain/tiny.yaml", [
        f"run_dir={tmp_path / 'run'}", f"data.dataset={tmp_path / 'nowhere'}", f"data.text_tokenizer={tmp_path}",
        f"model.whisper={tmp_path}", "data.micro_batch_rows=0", "optim.min_lr=0.1", "model.spec=fast",
        "tasks.asrr=1", "parallel.tensor=3", "data.enhanced_fraction=2", "train.loss_normalisation=sum",
        "train.peak_tflops=-1"])
    problems = run_problems(cfg, world_size=2)
    for message in ("data.micro_batch_rows=0 must be >= 1", "optim: need 0 <= min_lr <= lr", "model.spec='fast'",
                    "tasks: unknown task(s) asrr", "2 processes do not divide into tensor x pipeline = 3 x 1",
                    "data.enhanced_fraction=2.0 must be in [0, 1]", "train.loss_normalisation='sum'",
                    "no such dataset", "train.peak_tflops=-1 must be >= 0"):
        assert sum(message in p for p in problems) == 1, (message, problems)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a machine without CUDA refuses the te spec")
def test_the_transformer_engine_spec_is_refused_before_the_model_where_it_cannot_run(tmp_path):
    from trainer.checks import model_problems

    cfg = load_settings(PretrainConfig, "configs/pretrain/tiny.yaml",
                        [f"run_dir={tmp_path}", f"data.text_tokenizer={tmp_path}", f"model.whisper={tmp_path}",
                         "model.spec=te"])
    assert "model.spec=te: Transformer Engine runs on CUDA only, and this machine has no CUDA device" in \
        model_problems(cfg)


@pytest.mark.skipif(torch.cuda.is_available() or importlib.util.find_spec("transformer_engine") is not None,
                    reason="needs a machine with neither CUDA nor Transformer Engine, as CI's")
def test_training_on_cpu_where_transformer_engine_is_installed_is_refused_before_any_work(tmp_path, monkeypatch):
    # megatron-core takes TE's CUDA-only Adam and gradient kernels at import whenever TE is there
    from trainer.checks import model_problems

    # a package of that name on the path stands for Transformer Engine: the check asks whether it is there
    (tmp_path / "site" / "transformer_engine").mkdir(parents=True)
    (tmp_path / "site" / "transformer_engine" / "__init__.py").touch()
    cfg = load_settings(PretrainConfig, "configs/pretrain/tiny.yaml",
                        [f"run_dir={tmp_path}", f"data.text_tokenizer={tmp_path}", f"model.whisper={tmp_path}"])
    assert model_problems(cfg) == []
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    assert model_problems(cfg) == ["Transformer Engine is installed and this machine has no CUDA device: "
                                   "megatron-core would train with its CUDA-only Adam and gradient kernels; train "
                                   "on a GPU, or in an environment without it"]
