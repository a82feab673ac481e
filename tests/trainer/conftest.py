"""A small curated dataset with real semantic tokens (tiny tokenizer), a text corpus, a text tokenizer and
a tiny Whisper folder: everything a tiny pretraining run reads."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from model.semantic_tokenizer import SemanticTokenizer
from model.tiny_folders import write_tiny_semantic_tokenizer, write_tiny_text_tokenizer, write_tiny_whisper
from pipeline.shards import ShardWriter, TokenInfo
from tests.conftest import SAMPLE_RATE, SENTENCES, dialog_samples

CORPUS = [f"{s} {t}" for s in SENTENCES for t in SENTENCES]


def write_training_inputs(root: Path, dialogs) -> dict:
    """dataset/ (shards of at most 4 segments), corpus.jsonl, text-tokenizer/, whisper/ under `root`."""
    tokenizer = SemanticTokenizer.from_folder(write_tiny_semantic_tokenizer(root / "semantic-tokenizer"))
    with ShardWriter(root / "dataset", sample_rate=SAMPLE_RATE, config={"test": True}, target_bytes=10_000_000,
                     target_samples=4) as writer:
        for source, dialog in dialogs:
            samples, rejected = dialog_samples(source, dialog)
            ids = tokenizer.tokenize([s.audio for s in samples])
            samples = [replace(s, tokens=t.astype(np.int32), record=replace(s.record, tokens=TokenInfo(len(t))))
                       for s, t in zip(samples, ids)]
            writer.add_recording(samples, rejected)
    (root / "corpus.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in CORPUS))
    return {"dataset": root / "dataset", "corpus": root / "corpus.jsonl",
            "text_tokenizer": write_tiny_text_tokenizer(root / "text-tokenizer", CORPUS + SENTENCES),
            "whisper": write_tiny_whisper(root / "whisper")}


@pytest.fixture(scope="session")
def training_inputs(tmp_path_factory, dialogs) -> dict:
    return write_training_inputs(tmp_path_factory.mktemp("training"), dialogs)


def pretrain_overrides(inputs: dict, run_dir: Path, *extra: str) -> list[str]:
    return [f"run_dir={run_dir}", f"data.dataset={inputs['dataset']}", f"data.text_corpus=[{inputs['corpus']}]",
            f"data.text_tokenizer={inputs['text_tokenizer']}", f"model.whisper={inputs['whisper']}", *extra]
