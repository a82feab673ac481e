"""DNSMOS P.835 (signal, background, overall) at node speed: the model files and windows of `speechmos`.

speechmos scores a clip by running Microsoft's `sig_bak_ovr.onnx` on 9.01 s windows hopped by 1 s (a
shorter clip is doubled until it is that long), mapping each window's raw scores through fixed
polynomials and averaging; it also runs the P.808 model on a librosa mel spectrogram of every window,
one window per call, on as many threads as onnxruntime likes. Here the same windows of every clip of a
recording go through one session (in batches on a GPU), on the threads the stage was given, and the P.808
head is not run (its score is not part of a record). The scores are speechmos' to float rounding
(tests/pipeline/stages/test_dnsmos.py); on CUDA the session uses onnxruntime's CUDA provider.
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from pipeline.model_folders import runs_on_gpu

SAMPLE_RATE = 16000
WINDOW_SECONDS = 9.01
WINDOW_SAMPLES = int(WINDOW_SECONDS * SAMPLE_RATE)
# speechmos' non-personalised mapping of the model's raw outputs to MOS (numpy poly1d coefficients)
POLYNOMIALS = {"sig": np.poly1d([-0.08397278, 1.22083953, 0.0052439]),
               "bak": np.poly1d([-0.13166888, 1.60915514, -0.39604546]),
               "ovrl": np.poly1d([-0.06766283, 1.11546468, 0.04602535])}


def model_path() -> str:
    import speechmos.dnsmos

    return os.path.join(os.path.dirname(speechmos.dnsmos.__file__), "dnsmos_models", "sig_bak_ovr.onnx")


def clip_windows(clip: np.ndarray, hop_seconds: float = 1.0) -> np.ndarray:
    """The 9.01 s windows scored for `clip` (16 kHz, in [-1, 1]), as rows. At speechmos' 1 s hop its
    arithmetic is copied exactly (doubling, hop count, float window ends), so the same samples reach the
    model; a longer hop scores every `hop_seconds`-th window of those (fewer windows, a near score)."""
    audio = np.asarray(clip, dtype=np.float32)
    if not len(audio):
        raise ValueError("DNSMOS of an empty clip")
    while len(audio) < WINDOW_SAMPLES:
        audio = np.append(audio, audio)
    hops = int(np.floor(len(audio) / SAMPLE_RATE) - WINDOW_SECONDS) + 1
    step = max(1, int(round(hop_seconds)))
    windows = [audio[int(i * SAMPLE_RATE):int((i + WINDOW_SECONDS) * SAMPLE_RATE)] for i in range(0, hops, step)]
    return np.stack([w for w in windows if len(w) >= WINDOW_SAMPLES])


class DnsmosScorer:
    """One onnxruntime session per actor; `score` takes the clips of a batch and runs all their windows
    `batch_windows` at a time."""

    def __init__(self, threads: int = 1, device: str = "cpu", batch_windows: int | None = None,
                 hop_seconds: float = 1.0):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = max(1, threads), 1
        providers = ["CPUExecutionProvider"]
        if runs_on_gpu(device):
            providers.insert(0, "CUDAExecutionProvider")
        self.session = ort.InferenceSession(model_path(), options, providers=providers)
        # a window is 144,160 samples: on a CPU one at a time is as fast as any batch (bench/quality.py), on a GPU
        # batches fill the device
        self.batch_windows = batch_windows or (64 if runs_on_gpu(device) else 1)
        self.hop_seconds = hop_seconds

    def score(self, clips: Sequence[np.ndarray]) -> list[dict[str, float]]:
        """{sig, bak, ovrl} for each clip (16 kHz, values in [-1, 1]), in order."""
        windows = [clip_windows(c, self.hop_seconds) for c in clips]
        if not windows:
            return []
        stacked = np.concatenate(windows)
        raw = np.concatenate([self.session.run(None, {"input_1": stacked[i:i + self.batch_windows]})[0]
                              for i in range(0, len(stacked), self.batch_windows)]).astype(np.float64)
        scores, first = [], 0
        for w in windows:
            rows = raw[first:first + len(w)]
            first += len(w)
            scores.append({name: float(np.mean(poly(rows[:, k])))
                           for k, (name, poly) in enumerate(POLYNOMIALS.items())})
        return scores
