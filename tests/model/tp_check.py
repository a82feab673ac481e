"""One training step of a saved model at this run's tensor-parallel size (the world size), under torchrun:

    torchrun --nproc-per-node 2 -m tests.model.tp_check CKPT_IN OUT_DIR

Writes OUT_DIR/losses.json and OUT_DIR/ckpt (the weights after one SGD step, saved at this TP size).
"""
import json
import os
import sys
from pathlib import Path

import torch

LEARNING_RATE = 1.0  # large, so any gradient difference shows in the stepped weights


def fixed_batch(cfg):
    g = torch.Generator().manual_seed(7)
    audio, text = (torch.randint(0, cfg.vocab_size, (2, 20), generator=g) for _ in range(2))
    labels_a, labels_t = (torch.randint(0, cfg.vocab_size, (2, 20), generator=g) for _ in range(2))
    continuous = torch.zeros(2, 20, dtype=torch.bool)
    continuous[0, 2:9], continuous[1, 5:8] = True, True
    features = torch.randn(int(continuous.sum()), cfg.adaptor_input_dim, generator=g)
    mask_a = torch.rand(2, 20, generator=g) < 0.5
    return audio, text, continuous, features, (labels_a, labels_t, mask_a, ~mask_a)


def train_step(model):
    """Loss of the fixed batch, then p -= lr * grad on every parameter; returns the losses."""
    from model.kimi_audio import LossTargets

    audio, text, continuous, features, targets = fixed_batch(model.cfg)
    out = model(audio, text, continuous_mask=continuous, whisper_features=features, targets=LossTargets(*targets))
    out.loss.backward()
    with torch.no_grad():
        for p in model.parameters():
            if p.grad is not None:
                p -= LEARNING_RATE * p.grad
    return {"loss": out.loss.item(), "audio": out.audio_loss.item(), "text": out.text_loss.item()}


def main(ckpt_in: str, out_dir: str) -> None:
    from model.checkpoint import load_checkpoint, save_checkpoint
    from model.parallel import init_parallel, shutdown_parallel

    tp = int(os.environ["WORLD_SIZE"])
    init_parallel(tensor_parallel=tp)
    model = load_checkpoint(ckpt_in, tensor_parallel=tp)
    losses = train_step(model)
    out = Path(out_dir)
    if int(os.environ["RANK"]) == 0:
        out.mkdir(parents=True, exist_ok=True)
        (out / "losses.json").write_text(json.dumps(losses))
    save_checkpoint(model, out / "ckpt")
    shutdown_parallel()


if __name__ == "__main__":  # dist checkpoint saving spawns helpers that re-import __main__
    main(*sys.argv[1:])
