"""Tiny random model folders in the released layouts, built once per test session."""
from __future__ import annotations

import numpy as np
import pytest

from model.tiny_folders import write_tiny_semantic_tokenizer, write_tiny_whisper


@pytest.fixture(scope="session")
def tokenizer_folder(tmp_path_factory):
    return write_tiny_semantic_tokenizer(tmp_path_factory.mktemp("models") / "glm-4-voice-tokenizer")


@pytest.fixture(scope="session")
def whisper_folder(tmp_path_factory):
    return write_tiny_whisper(tmp_path_factory.mktemp("models") / "whisper-large-v3")


def noise_clip(seconds: float, seed: int = 0) -> np.ndarray:
    """Shaped noise at 16 kHz: loud and quiet stretches, so features vary over time."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * 16000))
    envelope = 0.05 + 0.3 * np.abs(np.sin(np.arange(n) / 16000 * 2.3))
    return (rng.standard_normal(n) * envelope).astype(np.float32)


@pytest.fixture(scope="session")
def megatron():
    """megatron-core's parallel state for this (single) process: TP=1, gloo on CPU."""
    from model.parallel import init_parallel

    init_parallel(tensor_parallel=1)
    yield


@pytest.fixture(scope="session")
def qwen2_folder(tmp_path_factory):
    from model.tiny_folders import write_tiny_qwen2

    return write_tiny_qwen2(tmp_path_factory.mktemp("models") / "qwen2-tiny")
