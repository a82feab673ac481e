"""Every YAML under configs/ loads, and overrides work the way the jobs use them."""
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from jobs.cli import ConfigError, load_config

CONFIGS = sorted((Path(__file__).parents[2] / "configs").rglob("*.yaml"))


def test_there_are_configs():
    assert CONFIGS


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_loads_and_has_no_missing_values(path):
    cfg = load_config(str(path))
    assert OmegaConf.missing_keys(cfg) == set()
    OmegaConf.to_container(cfg, resolve=True)


def test_demo_config_values():
    cfg = load_config("configs/demo.yaml", ["recordings=2", "shards.target_samples=3"])
    assert cfg.recordings == 2 and cfg.shards.target_samples == 3
    assert cfg.min_segment_seconds > 0 and len(cfg.speakers) >= 2
    assert cfg.turns_per_recording[0] <= cfg.turns_per_recording[1]


def test_unknown_override_is_an_error():
    with pytest.raises(ConfigError, match="recordingz"):
        load_config("configs/demo.yaml", ["recordingz=2"])
    with pytest.raises(ConfigError, match="key=value"):
        load_config("configs/demo.yaml", ["recordings"])
