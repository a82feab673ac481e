"""Every YAML under configs/ loads, and overrides work the way the jobs use them."""
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from jobs.cli import ConfigError, load_config

CONFIGS = sorted((Path(__file__).parents[2] / "configs").rglob("*.yaml"))


def test_there_are_configs():
    assert CONFIGS


RUN_ARGUMENTS = {  # what each kind of job takes on the command line
    "curate": {"input", "output"},
    "pretrain": {"run_dir", "data.dataset", "data.text_tokenizer", "model.whisper", "model.init_checkpoint"},
    "sft": {"run_dir", "data.dataset", "data.text_tokenizer", "model.whisper", "model.init_checkpoint"},
    "configs": set(),
}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_config_loads_and_leaves_only_the_run_arguments_open(path):
    cfg = load_config(str(path))
    assert OmegaConf.missing_keys(cfg) <= RUN_ARGUMENTS[path.parent.name]  # given on the command line
    OmegaConf.to_container(cfg, resolve=True)


@pytest.mark.parametrize("path", [p for p in CONFIGS if p.parent.name in ("pretrain", "sft")],
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_training_configs_name_a_model_preset_and_the_seven_tasks(path):
    from model.config import PRESETS
    from trainer.data.tasks import TASKS

    cfg = load_config(str(path))
    assert cfg.model.preset in PRESETS
    assert set(cfg.tasks) == set(TASKS) and sum(cfg.tasks.values()) > 0
    if path.parent.name == "pretrain":  # report Table 3, in its order
        assert [cfg.tasks[t] for t in TASKS[:7]] == [1, 7, 1, 1, 1, 1, 2]


def test_demo_config_values():
    cfg = load_config("configs/demo.yaml", ["recordings=2", "curate.overrides=[quality.dnsmos=false]"])
    assert cfg.recordings == 2 and list(cfg.curate.overrides) == ["quality.dnsmos=false"]
    assert len(cfg.speakers) >= 2 and cfg.turns_per_recording[0] <= cfg.turns_per_recording[1]
    curate_cfg = load_config(cfg.curate.config, ["output=x", *cfg.curate.overrides])
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
    demo = load_config("configs/curate/demo.yaml", [*curate_overrides(models), "output=x"])
    validate(demo)
    # an autoscaling pool: its minimum must fit this machine, its maximum need not
    validate(load_config("configs/curate/demo.yaml", [*curate_overrides(models), "output=x",
                                                      "resources.quality.concurrency=[1,9]"]))
    default = load_config("configs/curate/default.yaml", ["input=x", "output=y"])
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
    ("resources.quality.concurrency=[9,12]", "the pools need 4 CPU together"),  # the minimum must fit
    ("resources.transcribe.memory_mb=100000000", "no node has that much memory"),
])
def test_bad_curate_settings_are_refused(override, message, monkeypatch):
    from jobs.curate_checks import validate

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # so a hub id passes and only the bad setting is refused
    cfg = load_config("configs/curate/demo.yaml", ["transcribe.model=tiny.en", "enhance.repo=null",
                                                   "transcribe.align_models.en=null", "transcribe.nltk_data=null",
                                                   override])
    with pytest.raises(ConfigError, match=message):
        validate(cfg)
