"""Checkpoint conversion: HF folders <-> the model's distributed checkpoints.

    python -m jobs.convert import-qwen2 --qwen2 Qwen2.5-7B --whisper whisper-large-v3 --out ckpt/init
    python -m jobs.convert import-kimi --kimi Kimi-Audio-7B --out ckpt/kimi
    python -m jobs.convert export-kimi --checkpoint ckpt/step-1000 --out Kimi-Audio-7B-ours

Runs as one process (TP=1); the checkpoints it writes load at any tensor-parallel size.
`import-qwen2` follows the report: shared layers and text head from Qwen2.5, the vocabulary grown by
the audio range, the audio head and adaptor random.
"""
from __future__ import annotations

import argparse
import sys
import time

DTYPES = ("float32", "bfloat16")


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m jobs.convert", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    qwen = commands.add_parser("import-qwen2", help="HF Qwen2/Qwen2.5 folder (+ HF Whisper folder) -> checkpoint")
    qwen.add_argument("--qwen2", required=True, help="HF Qwen2 folder (config.json + safetensors)")
    qwen.add_argument("--whisper", help="HF Whisper folder for the continuous features (whisper-large-v3)")
    qwen.add_argument("--text-head-layers", type=int, default=6, help="last trunk layers that form the text head")
    qwen.add_argument("--audio-head-layers", type=int, default=6, help="layers of the (random) audio head")
    qwen.add_argument("--audio-vocab", type=int, default=16384, help="semantic tokenizer ids appended to the vocab")
    qwen.add_argument("--seed", type=int, default=0)
    kimi = commands.add_parser("import-kimi", help="released Kimi-Audio HF folder -> checkpoint")
    kimi.add_argument("--kimi", required=True, help="folder with config.json, safetensors, whisper-large-v3/")
    export = commands.add_parser("export-kimi", help="checkpoint -> released Kimi-Audio HF layout")
    export.add_argument("--checkpoint", required=True, help="a checkpoint folder (model_config.json + weights/)")
    for sub in (qwen, kimi, export):
        sub.add_argument("--out", required=True, help="folder to write (must not exist yet)")
        sub.add_argument("--dtype", choices=DTYPES, default="float32", help="parameter dtype while converting")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    from pathlib import Path

    args = parse_args(argv)
    if Path(args.out).exists():
        print(f"convert: error: {args.out} exists; give a new folder", file=sys.stderr)
        return 2
    from model.checkpoint import export_kimi, import_kimi, import_qwen2, load_checkpoint, save_checkpoint
    from model.hf_folder import ModelFolderError
    from model.parallel import init_parallel, shutdown_parallel

    init_parallel(tensor_parallel=1)
    # the local spec's tensor names, which the conversions know, on any machine: Transformer Engine's layers
    # (`auto` on a GPU with it) hold the norms inside their linears; checkpoints are one layout for both specs
    model_changes = dict(params_dtype=args.dtype, spec="local")
    started = time.perf_counter()
    try:
        if args.command == "import-qwen2":
            model = import_qwen2(args.qwen2, text_head_layers=args.text_head_layers,
                                 audio_head_layers=args.audio_head_layers, audio_vocab_size=args.audio_vocab,
                                 whisper_folder=args.whisper, seed=args.seed, **model_changes)
            save_checkpoint(model, args.out)
        elif args.command == "import-kimi":
            save_checkpoint(import_kimi(args.kimi, **model_changes), args.out)
        else:
            export_kimi(load_checkpoint(args.checkpoint, tensor_parallel=1, **model_changes), args.out)
    except (ModelFolderError, ValueError, FileNotFoundError) as e:
        print(f"convert: error: {e}", file=sys.stderr)
        return 2
    finally:
        shutdown_parallel()
    print(f"convert: {args.command} -> {args.out} in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":  # dist checkpoint saving re-imports __main__ in helper processes
    sys.exit(main())
