"""`make demo`: generated dialogs with known truth -> the curation job (embedded Ray) -> inspection
-> pretraining and fine-tuning the tiny model on the shards.

    python -m jobs.demo --config configs/demo.yaml [key=value ...]

Builds the offline model folders, generates recordings with their truth as RTTM and text (kept when
already there), runs `jobs.curate`, scores the labels against the truth with `jobs.evaluate` (DER, WER,
and with `evaluate.ablate` each post-processing rule switched off), and runs
`audiomill-shards` ls, stats, verify and plot on the result. Then it pretrains the tiny model on the
shards with `torchrun` (two processes), prepares a generated conversation set with `jobs.prepare_sft`
(questions about the dialogs answered in text, turns to transcribe with pooled instructions, spoken
exchanges answered in speech), and fine-tunes on the curated ASR data and the conversations mixed
(`jobs.pretrain`, `jobs.sft`), printing the loss at the start and the end, per task too. Rerunning
adds nothing: curation and preparation skip what is done, training resumes from its last checkpoint.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
from omegaconf import DictConfig

from jobs import curate, evaluate, prepare_sft
from jobs.build_models import build_all, curate_overrides
from jobs.cli import load_settings, parse_job_args
from pipeline.config import CurateConfig
from pipeline import inspect as shards_cli
from pipeline.shards import DatasetLayout
from pipeline.shards.layout import atomic_write_bytes
from pipeline.shards.manifest import read_manifest
from pipeline.sft.prepare import PrepareSftConfig
from pipeline.synthetic import Dialog, make_dialog, speak


def dialog_lines(cfg: DictConfig, rng: np.random.Generator) -> list[tuple[str, str, str]]:
    speakers = list(cfg.speakers)
    cast = [speakers[j] for j in rng.choice(len(speakers), int(rng.integers(2, 4)), replace=False)]
    n_turns = int(rng.integers(cfg.turns_per_recording[0], cfg.turns_per_recording[1] + 1))
    return [(cast[t % len(cast)].name, cast[t % len(cast)].voice,
             cfg.sentences[int(rng.integers(len(cfg.sentences)))]) for t in range(n_turns)]


def generate_recordings(cfg: DictConfig, raw_dir: Path) -> dict[str, dict]:
    """WAVs plus a truth JSON each (turn times, speakers, text); existing ones are kept."""
    raw_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(cfg.seed)
    plans = [(f"dialog-{i:03d}", [dialog_lines(cfg, rng)]) for i in range(cfg.recordings)]
    for i in range(cfg.long_recordings):
        lines, seconds = [], 0.0
        while seconds < cfg.long_recording_minutes * 60:  # ~2.6 s per spoken line with its pause
            lines.append(dialog_lines(cfg, rng))
            seconds += 2.6 * len(lines[-1])
        plans.append((f"long-{i:03d}", lines))
    truth = {}
    for n, (name, parts) in enumerate(plans):
        wav, truth_path = raw_dir / f"{name}.wav", raw_dir / f"{name}.truth.json"
        if not (wav.exists() and truth_path.exists()):
            lines = [line for part in parts for line in part]
            dialog = make_dialog(lines, sample_rate=cfg.sample_rate, gap_seconds=cfg.gap_seconds, seed=cfg.seed + n,
                                 noise_level=cfg.noise_level, music_level=cfg.music_level if n % 3 == 2 else 0.0)
            atomic_write_bytes(truth_path, json.dumps(dialog_truth(dialog), indent=1).encode())
            sf.write(wav, dialog.audio, dialog.sample_rate, subtype="PCM_16")
            print(f"generated {wav} ({dialog.seconds:.1f} s, {len(lines)} turns)")
        truth[str(wav)] = json.loads(truth_path.read_text())
        write_references(raw_dir, name, truth[str(wav)])
    return truth


def write_references(folder: Path, name: str, truth: dict) -> None:
    """The truth in the field's formats, for `jobs.evaluate`: NAME.rttm (who spoke when) and NAME.txt (words)."""
    rttm = "".join(f"SPEAKER {name} 1 {t['start']:.3f} {t['end'] - t['start']:.3f} <NA> <NA> {t['speaker']} <NA> <NA>\n"
                   for t in truth["turns"])
    atomic_write_bytes(folder / f"{name}.rttm", rttm.encode())
    atomic_write_bytes(folder / f"{name}.txt", (" ".join(t["text"] for t in truth["turns"]) + "\n").encode())


def dialog_truth(dialog: Dialog) -> dict:
    return {"sample_rate": dialog.sample_rate,
            "turns": [{"speaker": t.speaker, "text": t.text, "start": t.start, "end": t.end} for t in dialog.turns]}


def spoken_pools(cfg: DictConfig, folder: Path) -> Path:
    """The ASR pool of configs/sft/instructions.yaml with its first instructions also spoken (espeak), so the
    prepared conversations show both kinds of instruction."""
    from omegaconf import OmegaConf

    pools = OmegaConf.to_container(OmegaConf.load(cfg.conversations.instructions))["pools"]
    folder.mkdir(parents=True, exist_ok=True)
    spoken = []
    for i, text in enumerate(pools["asr"]):
        entry = {"text": text}
        if i < cfg.conversations.spoken_instructions:
            wav = folder / f"asr-{i:03d}.wav"
            if not wav.exists():
                sf.write(wav, speak(text, cfg.conversations.instruction_voice, cfg.sample_rate), cfg.sample_rate)
            entry["audio"] = wav.name
        spoken.append(entry)
    path = folder / "instructions.yaml"
    atomic_write_bytes(path, OmegaConf.to_yaml({"pools": {**pools, "asr": spoken}}).encode())
    return path


def generate_conversations(cfg: DictConfig, raw: Path, folder: Path) -> Path:
    """A small fine-tuning set in the released JSONL format: per short dialog, a question about it answered
    in text (audio question answering) and a turn to transcribe with the instruction left to the pools;
    and spoken exchanges between two voices, answered in speech and text (speech2speech)."""
    rng = np.random.default_rng(cfg.seed + 1)
    clips = folder / "clips"
    clips.mkdir(parents=True, exist_ok=True)
    lines = []
    for wav in sorted(raw.glob("dialog-*.wav")):
        truth = json.loads(wav.with_name(wav.stem + ".truth.json").read_text())
        speakers = list(dict.fromkeys(t["speaker"] for t in truth["turns"]))
        first = truth["turns"][0]
        lines.append({"task_type": "understanding", "conversation": [
            # relative to the JSONL's folder, as prepare_sft resolves it, wherever the workdir is
            {"role": "user", "message_type": "audio", "content": os.path.relpath(wav, folder)},
            {"role": "user", "message_type": "text", "content": "How many people speak, and who speaks first?"},
            {"role": "assistant", "message_type": "text",
             "content": f"{len(speakers)} people speak; {first['speaker']} speaks first."}]})
        audio, sample_rate = sf.read(wav, dtype="float32")
        clip = clips / f"{wav.stem}-turn0.wav"
        sf.write(clip, audio[round(first["start"] * sample_rate):round(first["end"] * sample_rate)], sample_rate)
        lines.append({"task_type": "understanding", "instruction_pool": "asr", "conversation": [
            {"role": "user", "message_type": "audio", "content": f"clips/{clip.name}"},
            {"role": "assistant", "message_type": "text", "content": first["text"]}]})
    voices, sentences = list(cfg.conversations.voices), list(cfg.sentences)
    for i in range(cfg.conversations.exchanges):
        question, answer = (sentences[j] for j in rng.choice(len(sentences), 2, replace=False))
        for role, text, voice in (("q", question, voices[0]), ("a", answer, voices[1])):
            path = clips / f"exchange-{i:03d}-{role}.wav"
            if not path.exists():
                sf.write(path, speak(text, voice, cfg.sample_rate), cfg.sample_rate)
        lines.append({"task_type": "speech2speech", "conversation": [
            {"role": "user", "message_type": "audio", "content": f"clips/exchange-{i:03d}-q.wav"},
            {"role": "assistant", "message_type": "audio-text", "content": [f"clips/exchange-{i:03d}-a.wav", answer]}]})
    path = folder / "train.jsonl"
    atomic_write_bytes(path, "".join(json.dumps(line) + "\n" for line in lines).encode())
    print(f"generated {path} ({len(lines)} conversations: questions about the dialogs, turns to transcribe, "
          f"{cfg.conversations.exchanges} spoken exchanges)")
    return path


def build_training_inputs(cfg: DictConfig, folder: Path) -> list[str]:
    """Text tokenizer and corpus from the demo's sentences, and a tiny Whisper: overrides for training."""
    from model.tiny_folders import write_tiny_text_tokenizer, write_tiny_whisper

    sentences = list(cfg.sentences)
    corpus = [f"{a} {b}" for a in sentences for b in sentences]
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "text-tokenizer" / "tokenizer.json").is_file():
        write_tiny_text_tokenizer(folder / "text-tokenizer", corpus + sentences)
    if not (folder / "whisper" / "config.json").is_file():
        write_tiny_whisper(folder / "whisper")
    atomic_write_bytes(folder / "corpus.jsonl", "".join(json.dumps({"text": t}) + "\n" for t in corpus).encode())
    return [f"data.text_tokenizer={folder / 'text-tokenizer'}", f"data.text_corpus=[{folder / 'corpus.jsonl'}]",
            f"model.whisper={folder / 'whisper'}"]


def torchrun(cfg: DictConfig, job: str, config: str, overrides: list[str]) -> int:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
               str(cfg.train.processes), "-m", job, "--config", config, *overrides]
    print(f"\n$ torchrun --standalone --nproc-per-node {cfg.train.processes} -m {job} --config {config} ...", flush=True)
    return subprocess.run(command, env=env).returncode


def first_and_last_loss(run_dir: Path) -> tuple[float, float]:
    """Loss per target token (both heads) at the first and the last logged step: the head-mean loss jumps
    from step to step with whether a rank's batch holds audio targets at all."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]
    return rows[0]["train/token_loss"], rows[-1]["train/token_loss"]


def train_on_shards(cfg: DictConfig, workdir: Path, dataset: Path, conversations: Path) -> int:
    inputs = build_training_inputs(cfg, workdir / "training-inputs")
    pretrain_dir, sft_dir = workdir / "runs" / "pretrain", workdir / "runs" / "sft"
    status = torchrun(cfg, "jobs.pretrain", cfg.train.pretrain.config,
                      [f"run_dir={pretrain_dir}", f"data.dataset={dataset}", *inputs, *cfg.train.pretrain.overrides])
    if status != 0:
        return status
    latest = pretrain_dir / "checkpoints" / (pretrain_dir / "checkpoints" / "latest").read_text().strip()
    blend = (f"data.datasets=[{{url: {dataset}, weight: {cfg.conversations.asr_weight}, name: curated-asr}}, "
             f"{{url: {conversations}, weight: 1, name: conversations}}]")
    status = torchrun(cfg, "jobs.sft", cfg.train.sft.config,
                      [f"run_dir={sft_dir}", blend, f"model.init_checkpoint={latest}",
                       *[o for o in inputs if not o.startswith("data.text_corpus")], *cfg.train.sft.overrides])
    if status != 0:
        return status
    for name, run_dir in (("pretraining", pretrain_dir), ("fine-tuning", sft_dir)):
        first, last = first_and_last_loss(run_dir)
        print(f"{name}: loss per target token {first:.3f} -> {last:.3f}; loss curve {run_dir / 'loss_curve.png'}")
    print("fine-tuning by task: " + ", ".join(f"{task} {first:.3f} -> {last:.3f}"
                                             for task, (first, last) in task_losses(sft_dir).items()))
    return 0


def task_losses(run_dir: Path) -> dict[str, tuple[float, float]]:
    """Per task, its loss per target token over the first and the last quarter of the logged steps (a step's
    batch holds few samples of each task, so single steps jump)."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]
    quarter = max(1, len(rows) // 4)
    out = {}
    for task in sorted({k for r in rows for k in r if k.startswith("task/")}):
        early = [r[task] for r in rows[:quarter] if task in r]
        late = [r[task] for r in rows[-quarter:] if task in r]
        if early and late:
            out[task.removeprefix("task/")] = (float(np.mean(early)), float(np.mean(late)))
    return out


def main(cfg: DictConfig) -> int:
    workdir = Path(cfg.workdir)
    raw, dataset, plots = workdir / "raw", workdir / "curated", workdir / "plots"
    models = build_all(workdir / "models")
    generate_recordings(cfg, raw)

    curate_cfg = load_settings(CurateConfig, cfg.curate.config, [f"input={raw}", f"output={dataset}",
                                                                 *curate_overrides(models), *cfg.curate.overrides])
    status = curate.main(curate_cfg)
    if status != 0:
        return status
    ablate = ["--ablate"] if cfg.evaluate.ablate else []
    arguments = ["--config", cfg.evaluate.config, f"refs={raw}", f"dataset={dataset}", f"out={workdir / 'evaluation'}",
                 *ablate, *cfg.evaluate.overrides]
    print(f"\n$ python -m jobs.evaluate {' '.join(arguments)}")
    settings, switches = evaluate.parse_args(arguments)
    status = evaluate.main(settings, ablate=switches.ablate)
    if status != 0:
        return status

    for command in (["ls"], ["stats"], ["verify", "--quiet"], ["plot", "--out", str(plots)]):
        print(f"\n$ audiomill-shards {command[0]} {dataset} {' '.join(command[1:])}")
        status = shards_cli.main([command[0], str(dataset), *command[1:]])
        if status != 0:
            return status

    jsonl = generate_conversations(cfg, raw, workdir / "conversations")
    conversations = workdir / "sft-conversations"
    prepare_args = [f"input={jsonl}", f"output={conversations}", f"tokenize.model={models['tokenizer']}",
                    f"instructions={spoken_pools(cfg, workdir / 'instructions')}", *cfg.conversations.overrides]
    print(f"\n$ python -m jobs.prepare_sft --config {cfg.conversations.config} {' '.join(prepare_args[:2])} ...")
    status = prepare_sft.main(load_settings(PrepareSftConfig, cfg.conversations.config, prepare_args))
    if status != 0:
        return status
    return train_on_shards(cfg, workdir, dataset, conversations)


if __name__ == "__main__":
    sys.exit(main(parse_job_args(__doc__.splitlines()[0])))
