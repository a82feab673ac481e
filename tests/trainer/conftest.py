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


def write_conversation_dataset(root: Path, dialogs, tokenizer_folder: Path) -> Path:
    """A prepared conversation dataset (the real preparation functions, in-process): per dialog, an
    understanding conversation (a question about a turn's audio, answered in text) and a speech2speech one
    (a turn answered by the next turn, spoken and written); shards of 2 conversations."""
    import soundfile as sf

    from pipeline.sft.conversations import parse_jsonl
    from pipeline.sft.instructions import InstructionPools
    from pipeline.sft.prepare import PrepareSftConfig, decode_conversation, pack_conversation
    from pipeline.shards import PipelineInfo
    from pipeline.stages.base import run_stage
    from pipeline.stages.tokenize import TokenizeSettings, TokenizeStage

    clips, lines = root / "clips", []
    clips.mkdir(parents=True)
    for d, (_, dialog) in enumerate(dialogs):
        for t, turn in enumerate(dialog.turns[:2]):
            audio = dialog.audio[round(turn.start * SAMPLE_RATE):round(turn.end * SAMPLE_RATE)]
            sf.write(clips / f"d{d}-t{t}.wav", audio, SAMPLE_RATE)
        first, second = dialog.turns[0], dialog.turns[1]
        lines.append({"task_type": "understanding", "conversation": [
            {"role": "user", "message_type": "text", "content": "What does the speaker say?"},
            {"role": "user", "message_type": "audio", "content": f"clips/d{d}-t0.wav"},
            {"role": "assistant", "message_type": "text", "content": first.text}]})
        lines.append({"task_type": "speech2speech", "conversation": [
            {"role": "user", "message_type": "audio", "content": f"clips/d{d}-t0.wav"},
            {"role": "assistant", "message_type": "audio-text", "content": [f"clips/d{d}-t1.wav", second.text]}]})
    jsonl = root / "train.jsonl"
    jsonl.write_text("".join(json.dumps(line) + "\n" for line in lines))
    cfg = PrepareSftConfig(input=str(jsonl), output=str(root / "dataset"),
                           tokenize=TokenizeSettings(model=str(tokenizer_folder), device="cpu"))
    stage = TokenizeStage(cfg.tokenize, SAMPLE_RATE)
    stage.setup()
    works = run_stage(stage, [decode_conversation(p, cfg) for p in
                              parse_jsonl(jsonl.read_text(), str(jsonl), None, InstructionPools(), seed=0)])
    with ShardWriter(root / "dataset", sample_rate=SAMPLE_RATE, config={"test": True}, target_samples=2) as writer:
        for work in works:
            writer.add_encoded_recording(pack_conversation(work, PipelineInfo.for_config("test", {})).samples)
    return root / "dataset"


@pytest.fixture(scope="session")
def conversation_dataset(tmp_path_factory, dialogs, training_inputs) -> Path:
    root = tmp_path_factory.mktemp("conversations")
    return write_conversation_dataset(root, dialogs, write_tiny_semantic_tokenizer(root / "semantic-tokenizer"))
