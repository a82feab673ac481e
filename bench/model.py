"""Model benchmark: forward+backward tokens/s of a small preset on CPU against transformers' Qwen2 of the
same size (same width, heads, FFN, vocabulary, total layer count) in the same run; ratio printed, per token
and per model FLOP.

    python -m bench.model [--preset small] [--batch 4] [--seq 256] [--steps 5] [--threads 2]

The Kimi-Audio model also embeds a second stream and runs a second output projection, so at equal layer
count it does more work than the Qwen2 reference (on `small`, whose vocabulary is large for its width, about a
quarter more); the per-FLOP ratio takes that out. With a GPU, `--mfu` runs the ~1B preset in
bf16 under each spec that runs there, on whole and on packed rows, and prints model FLOPs utilisation (target
40%).
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from model.flops import gpu_peak_tflops, model_flops


def time_steps(step, steps: int) -> float:
    step()  # warm-up
    if torch.cuda.is_available():
        torch.cuda.synchronize()  # the warm-up's kernels are not part of the timed steps
    started = time.perf_counter()
    for _ in range(steps):
        step()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return (time.perf_counter() - started) / steps


def kimi_step(model, batch: int, seq: int, samples_per_row: int = 0):
    """One forward+backward on random ids; `samples_per_row`: rows packed with that many samples each (the
    trainer's rows: each position marked with its sample, positions restarting), else one causal row."""
    from model.kimi_audio import LossTargets

    vocab = model.cfg.vocab_size
    device = "cuda" if torch.cuda.is_available() else "cpu"
    audio, text, labels = (torch.randint(0, vocab, (batch, seq), device=device) for _ in range(3))
    ones = torch.ones(batch, seq, device=device)
    targets, packing = LossTargets(labels, labels, ones, ones), {}
    if samples_per_row:
        positions = torch.arange(seq, device=device).expand(batch, seq)
        packing = dict(position_ids=positions % (seq // samples_per_row),
                       document_ids=positions // (seq // samples_per_row))

    def step():
        model.zero_grad(set_to_none=True)
        model(audio, text, targets=targets, **packing).loss.backward()
    return step


def qwen2_step(cfg, batch: int, seq: int):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    reference = Qwen2ForCausalLM(Qwen2Config(
        vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, intermediate_size=cfg.ffn_hidden_size,
        num_hidden_layers=cfg.trunk_layers + cfg.audio_head_layers, num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_query_groups, tie_word_embeddings=False, rope_theta=cfg.rope_theta))
    ids = torch.randint(0, cfg.vocab_size, (batch, seq))
    dense = sum(p.numel() for p in reference.parameters()) - reference.model.embed_tokens.weight.numel()

    def step():
        reference.zero_grad(set_to_none=True)
        reference(ids, labels=ids).loss.backward()
    return step, dense


# packed rows as the trainer makes them: four samples of 512 in a row of 2,048 (`--seq`)
SAMPLES_PER_PACKED_ROW = 4


def mfu_figures(args) -> dict:
    """kimi_audio_1b in bf16 under each spec that runs here (local; Transformer Engine's where it loads), on
    whole causal rows and on packed rows: tokens/s, model TFLOP/s and MFU, one line each. Packed rows count
    attention over each sample only, the work their attention does."""
    from model.config import model_preset
    from model.kimi_audio import build_model
    from model.specs import transformer_engine_problem

    peak = args.peak_tflops or gpu_peak_tflops()
    figures = {"peak_tflops": peak}
    for spec in ("local",) if transformer_engine_problem() else ("local", "te"):
        cfg = model_preset("kimi_audio_1b", params_dtype="bfloat16", spec=spec)
        model = build_model(cfg)
        for rows, per_row in (("whole", 0), ("packed", SAMPLES_PER_PACKED_ROW)):
            seconds = time_steps(kimi_step(model, args.batch, args.seq, per_row), args.steps)
            samples, attended = args.batch * max(per_row, 1), args.seq // max(per_row, 1)
            tokens = args.batch * args.seq
            achieved = model_flops(cfg, tokens, samples * attended ** 2) / seconds / 1e12
            mfu = achieved / peak if peak else None
            figures[f"{spec}_{rows}"] = {"tokens_per_s": round(tokens / seconds), "tflops": round(achieved, 1),
                                         "mfu": None if mfu is None else round(mfu, 4)}
            print(f"kimi_audio_1b bf16, {spec} spec, {rows} rows ({args.batch} x {args.seq}, samples of "
                  f"{attended}): {tokens / seconds:,.0f} tokens/s, {achieved:.0f} TFLOP/s, "
                  + (f"MFU {mfu:.1%} of {peak:.0f}" if peak else "MFU unknown: no peak for this GPU "
                     "(--peak-tflops)"), flush=True)
        del model
        torch.cuda.empty_cache()
    return figures


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--mfu", action="store_true", help="GPU only: the kimi_audio_1b preset in bf16")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="the GPU's dense bf16 peak (default: looked up from its name, model.flops)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from trainer.console import quiet_library_notices

    quiet_library_notices()  # before megatron-core is imported: what a CPU lacks is not a benchmark figure

    from model.config import model_preset
    from model.kimi_audio import build_model
    from model.parallel import init_parallel, shutdown_parallel

    init_parallel(tensor_parallel=1)
    try:
        if args.mfu:
            if not torch.cuda.is_available():
                print("--mfu needs a GPU; none here")
                return 2
            print(f"RESULT {json.dumps(mfu_figures(args))}")
            return 0
        cfg = model_preset(args.preset)
        torch.manual_seed(0)
        ours = time_steps(kimi_step(build_model(cfg), args.batch, args.seq), args.steps)
        reference_step, reference_dense = qwen2_step(cfg, args.batch, args.seq)
        reference = time_steps(reference_step, args.steps)
    finally:
        shutdown_parallel()
    tokens = args.batch * args.seq
    ours_flops = model_flops(cfg, tokens, args.batch * args.seq ** 2) / ours / 1e9
    reference_flops = model_flops(cfg, tokens, args.batch * args.seq ** 2, reference_dense) / reference / 1e9
    print(f"forward+backward, preset {args.preset}, batch {args.batch} x {args.seq}, {args.threads} threads, CPU")
    print(f"  audiomill (megatron-core): {tokens / ours:9,.0f} tokens/s  {ours_flops:6.1f} model GFLOP/s")
    print(f"  transformers Qwen2:        {tokens / reference:9,.0f} tokens/s  {reference_flops:6.1f} model GFLOP/s")
    print(f"  ratio: {reference / ours:.2f} per token, {ours_flops / reference_flops:.2f} per model FLOP")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
