"""Model FLOPs, the numerator of MFU, counted one way for the trainer's log, `bench.model --mfu` and the GPU
check.

Forward and backward, per token: 6 x the parameters it passes through (all but the embedding lookup, which
is free, and the audio adaptor, which only continuous-audio positions pass through), plus attention's
12 x layers x hidden x the length of the sample it attends over; a sample of n tokens therefore costs
6 x dense x n + 12 x layers x hidden x n^2. Packed rows attend within each sample, so their attention is
counted per sample, and padding not at all. Whisper's encoder (continuous features) is not counted: the
figures are the language model's, as in the MFU people quote for LLM training.

The peak is the GPU's dense bfloat16 throughput, looked up from its name (vendor datasheets; the SXM part
where a name covers two).
"""
from __future__ import annotations

from model.config import KimiAudioConfig, adaptor_parameter_count, parameter_count

# dense bf16 peak TFLOP/s by device-name fragment, the first that the name contains (so the PCIe and NVL
# H100s come before the SXM one, and L40S before L40 before L4)
PEAK_BF16_TFLOPS = {"B200": 2250.0, "H100 PCIe": 756.0, "H100 NVL": 835.0, "H200": 989.0, "H100": 989.0,
                    "A100": 312.0, "L40S": 362.0, "L40": 181.0, "L4": 121.0, "A10": 125.0, "RTX 4090": 165.0,
                    "V100": 125.0}


def peak_tflops(device_name: str) -> float | None:
    """The dense bf16 peak of a GPU named `device_name` (torch.cuda.get_device_name()); None if unknown."""
    return next((peak for part, peak in PEAK_BF16_TFLOPS.items() if part in device_name), None)


def gpu_peak_tflops() -> float | None:
    """This process's GPU's dense bf16 peak; None on CPU or for a GPU not in the table."""
    import torch

    return peak_tflops(torch.cuda.get_device_name()) if torch.cuda.is_available() else None


def dense_parameters(cfg: KimiAudioConfig) -> int:
    """Parameters every token's forward and backward multiply with: all but the embedding table and the
    audio adaptor, which runs on continuous-audio positions only."""
    return parameter_count(cfg) - cfg.vocab_size * cfg.hidden_size - adaptor_parameter_count(cfg)


def model_flops(cfg: KimiAudioConfig, tokens: int, squared_lengths: int, dense: int | None = None) -> float:
    """FLOPs of forward and backward over `tokens` tokens in samples whose lengths squared sum to
    `squared_lengths` (one whole causal row of S tokens: S and S^2). `dense`: the parameters of another model
    with the same layers (a reference to compare with)."""
    dense = dense_parameters(cfg) if dense is None else dense
    layers = cfg.trunk_layers + cfg.audio_head_layers
    return 6.0 * dense * tokens + 12.0 * layers * cfg.hidden_size * squared_lengths
