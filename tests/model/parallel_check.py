"""One training step of a saved model at a tensor- x pipeline-parallel layout, under torchrun:

    torchrun --nproc-per-node 2 -m tests.model.parallel_check CKPT_IN OUT_DIR TP PP [LAST_STAGE_SHARED_LAYERS]
        [mask|thd]

The step runs two micro-batches of packed rows through megatron's forward-backward schedule (1F1B across
stages with pipeline parallelism), then p -= lr * grad. `thd`: the rows go as one sequence of samples, as
under Transformer Engine (tests.model.thd_stand_in), so the stages exchange [B x S, 1, H]. Writes
OUT_DIR/losses.json and OUT_DIR/ckpt (the stepped weights, saved at this layout).
"""
import json
import sys
from pathlib import Path

import torch

LEARNING_RATE = 1.0  # large, so any gradient difference shows in the stepped weights


def fixed_micro_batches(cfg):
    """Two micro-batches of two packed rows each (samples of 8 and 12 positions; one of 20; one of 15 and
    padding): (inputs, targets) each, the inputs with the continuous positions' features."""
    from model.kimi_audio import LossTargets

    g = torch.Generator().manual_seed(7)
    audio, text = (torch.randint(0, cfg.vocab_size, (4, 20), generator=g) for _ in range(2))
    labels_a, labels_t = (torch.randint(0, cfg.vocab_size, (4, 20), generator=g) for _ in range(2))
    continuous = torch.zeros(4, 20, dtype=torch.bool)
    continuous[0, 2:7], continuous[0, 10:12], continuous[3, 5:8] = True, True, True
    features = torch.randn(int(continuous.sum()), cfg.adaptor_input_dim, generator=g)
    documents = torch.tensor([[0] * 8 + [1] * 12, [0] * 20, [0] * 8 + [1] * 12, [0] * 15 + [-1] * 5])
    positions = torch.tensor([list(range(8)) + list(range(12)), list(range(20))] * 2)
    positions[3, 15:] = 0
    mask_a = (torch.rand(4, 20, generator=g) < 0.5) & (documents >= 0)
    mask_t = ~mask_a & (documents >= 0)
    first_rows = int(continuous[:2].sum())
    batches = []
    for rows, row_features in ((slice(0, 2), features[:first_rows]), (slice(2, 4), features[first_rows:])):
        inputs = dict(audio_ids=audio[rows], text_ids=text[rows], continuous_mask=continuous[rows],
                      whisper_features=row_features, position_ids=positions[rows], document_ids=documents[rows])
        batches.append((inputs, LossTargets(labels_a[rows], labels_t[rows], mask_a[rows], mask_t[rows])))
    return batches


def train_step(model) -> dict | None:
    """Mean losses of the fixed micro-batches (on the last pipeline stage; None elsewhere), then SGD."""
    from megatron.core.pipeline_parallel import get_forward_backward_func

    from model.cpu_compat import cuda_tensors_on_cpu

    def forward_step(data_iterator, chunk):
        inputs, targets = next(data_iterator)
        out = chunk(**inputs, targets=targets)
        return out, lambda o: (o.loss, {"loss": o.loss.detach().clone(), "audio": o.audio_loss.detach(),
                                        "text": o.text_loss.detach()})

    micro_batches = fixed_micro_batches(model.cfg)
    seq_length, micro_batch_size = model.exchanged_shape(*micro_batches[0][0]["audio_ids"].shape)
    with cuda_tensors_on_cpu():
        reduced = get_forward_backward_func()(
            forward_step_func=forward_step, data_iterator=iter(micro_batches), model=[model],
            num_microbatches=len(micro_batches), seq_length=seq_length, micro_batch_size=micro_batch_size)
    with torch.no_grad():
        for p in model.parameters():
            if p.grad is not None:
                p -= LEARNING_RATE * p.grad
    if not reduced:
        return None
    return {name: sum(float(r[name]) for r in reduced) / len(reduced) for name in ("loss", "audio", "text")}


def main(ckpt_in: str, out_dir: str, tp: str, pp: str, last_stage_shared_layers: str = "", attention: str = "mask"
         ) -> None:
    from megatron.core import parallel_state as ps

    from model.checkpoint import load_checkpoint, save_checkpoint
    from model.parallel import init_parallel, shutdown_parallel

    init_parallel(tensor_parallel=int(tp), pipeline_parallel=int(pp))
    model = load_checkpoint(ckpt_in, tensor_parallel=int(tp), pipeline_parallel=int(pp),
                            last_stage_shared_layers=int(last_stage_shared_layers) if last_stage_shared_layers
                            else None)
    if attention == "thd":  # packed rows as Transformer Engine takes them, its kernel stood in for
        from tests.model.thd_stand_in import attend_as_transformer_engine

        attend_as_transformer_engine(model)
    losses = train_step(model)
    out = Path(out_dir)
    if losses is not None and ps.get_tensor_model_parallel_rank() == 0:
        out.mkdir(parents=True, exist_ok=True)
        (out / "losses.json").write_text(json.dumps(losses))
    save_checkpoint(model, out / "ckpt")
    shutdown_parallel()


if __name__ == "__main__":  # dist checkpoint saving spawns helpers that re-import __main__
    main(*sys.argv[1:])
