import pytest
import torch

from model.flops import model_flops, peak_tflops


def test_model_flops_are_what_torch_counts_for_a_forward_and_backward_of_the_real_model(megatron):
    """The formula behind every MFU figure, against torch's own count of the tiny model's matrix products:
    whole causal rows within 1% (the norms' few FLOPs are counted as parameters); packed rows count their
    attention per sample, the work it does, while the local spec's kernels still multiply whole rows."""
    from torch.utils.flop_counter import FlopCounterMode

    from model.config import model_preset
    from model.kimi_audio import build_model
    from model.losses import LossTargets

    cfg = model_preset("tiny", spec="local")
    torch.manual_seed(0)
    model = build_model(cfg)
    rows, seq, samples_per_row = 2, 128, 4
    ids = torch.randint(0, cfg.vocab_size, (rows, seq))
    ones = torch.ones(rows, seq)
    with FlopCounterMode(display=False) as counted:
        model(ids, ids, targets=LossTargets(ids, ids, ones, ones)).loss.backward()
    whole = model_flops(cfg, rows * seq, rows * seq ** 2)
    assert counted.get_total_flops() == pytest.approx(whole, rel=0.01)
    packed = model_flops(cfg, rows * seq, rows * samples_per_row * (seq // samples_per_row) ** 2)
    layers = cfg.trunk_layers + cfg.audio_head_layers
    assert whole - packed == 12 * layers * cfg.hidden_size * rows * (seq ** 2 - seq ** 2 / samples_per_row)


def test_the_peak_is_looked_up_from_the_device_name():
    assert peak_tflops("NVIDIA H200") == 989.0 and peak_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert peak_tflops("NVIDIA H100 80GB HBM3") == 989.0 and peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert peak_tflops("NVIDIA L40S") == 362.0 and peak_tflops("NVIDIA L4") == 121.0
    assert peak_tflops("Some Future GPU") is None
