"""One training step of a saved model at a tensor- x pipeline-parallel layout, under torchrun:

    torchrun --nproc-per-node 2 -m tests.model.parallel_check CKPT_IN OUT_DIR TP PP [LAST_STAGE_SHARED_LAYERS]

The step runs two micro-batches through megatron's forward-backward schedule (1F1B across stages with
pipeline parallelism), then p -= lr * grad. Writes OUT_DIR/losses.json and OUT_DIR/ckpt (the stepped
weights, saved at this layout).
"""
import json
import sys
from pathlib import Path

import torch

LEARNING_RATE = 1.0  # large, so any gradient difference shows in the stepped weights


def fixed_micro_batches(cfg):
    """Two one-row micro-batches: (audio, text, continuous, features, targets) each."""
    from model.kimi_audio import LossTargets

    g = torch.Generator().manual_seed(7)
    audio, text = (torch.randint(0, cfg.vocab_size, (2, 20), generator=g) for _ in range(2))
    labels_a, labels_t = (torch.randint(0, cfg.vocab_size, (2, 20), generator=g) for _ in range(2))
    continuous = torch.zeros(2, 20, dtype=torch.bool)
    continuous[0, 2:9], continuous[1, 5:8] = True, True
    features = torch.randn(int(continuous.sum()), cfg.adaptor_input_dim, generator=g)
    mask_a = torch.rand(2, 20, generator=g) < 0.5
    first_rows = int(continuous[0].sum())
    row_features = (features[:first_rows], features[first_rows:])
    return [(audio[r:r + 1], text[r:r + 1], continuous[r:r + 1], row_features[r],
             LossTargets(labels_a[r:r + 1], labels_t[r:r + 1], mask_a[r:r + 1], ~mask_a[r:r + 1]))
            for r in range(2)]


def train_step(model) -> dict | None:
    """Mean losses of the fixed micro-batches (on the last pipeline stage; None elsewhere), then SGD."""
    from megatron.core.pipeline_parallel import get_forward_backward_func

    from model.cpu_compat import cuda_tensors_on_cpu

    def forward_step(data_iterator, chunk):
        audio, text, continuous, features, targets = next(data_iterator)
        out = chunk(audio, text, continuous_mask=continuous, whisper_features=features, targets=targets)
        return out, lambda o: (o.loss, {"loss": o.loss.detach().clone(), "audio": o.audio_loss.detach(),
                                        "text": o.text_loss.detach()})

    micro_batches = fixed_micro_batches(model.cfg)
    with cuda_tensors_on_cpu():
        reduced = get_forward_backward_func()(
            forward_step_func=forward_step, data_iterator=iter(micro_batches), model=[model],
            num_microbatches=len(micro_batches), seq_length=20, micro_batch_size=1)
    with torch.no_grad():
        for p in model.parameters():
            if p.grad is not None:
                p -= LEARNING_RATE * p.grad
    if not reduced:
        return None
    return {name: sum(float(r[name]) for r in reduced) / len(reduced) for name in ("loss", "audio", "text")}


def main(ckpt_in: str, out_dir: str, tp: str, pp: str, last_stage_shared_layers: str = "") -> None:
    from megatron.core import parallel_state as ps

    from model.checkpoint import load_checkpoint, save_checkpoint
    from model.parallel import init_parallel, shutdown_parallel

    init_parallel(tensor_parallel=int(tp), pipeline_parallel=int(pp))
    model = load_checkpoint(ckpt_in, tensor_parallel=int(tp), pipeline_parallel=int(pp),
                            last_stage_shared_layers=int(last_stage_shared_layers) if last_stage_shared_layers
                            else None)
    losses = train_step(model)
    out = Path(out_dir)
    if losses is not None and ps.get_tensor_model_parallel_rank() == 0:
        out.mkdir(parents=True, exist_ok=True)
        (out / "losses.json").write_text(json.dumps(losses))
    save_checkpoint(model, out / "ckpt")
    shutdown_parallel()


if __name__ == "__main__":  # dist checkpoint saving spawns helpers that re-import __main__
    main(*sys.argv[1:])
