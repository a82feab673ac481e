"""DNSMOS P.835 (signal, background, overall) at node speed: the model file and windows of `speechmos`.

speechmos scores a clip by running Microsoft's `sig_bak_ovr.onnx` on 9.01 s windows hopped by 1 s (a
shorter clip is doubled until it is that long), mapping each window's raw scores through fixed
polynomials and averaging; it also runs the P.808 model on every window, one window per call, on as many
threads as onnxruntime likes. The P.808 head is not run here (its score is not part of a record).

Where the time goes, and why it can be shared: the model frames a window into 900 frames of 320 samples
hopped by 160, takes their log power spectrum (161 bins), and runs four 3x3 convolutions at that full
resolution (about 96% of its multiply-adds) before a 2x2 max pooling and a small head. A 1 s hop is
exactly 100 frames, so neighbouring windows share 800 of their 900 frames, and a full-resolution output
more than 4 frames from a window's edge (4 convolutions, one frame of context each) does not depend on the
window at all. So the model is cut after that first pooling (`TRUNK_OUTPUT`):
- the trunk runs once over the whole clip (in chunks with a 4-frame halo), and once over an 8-frame strip
  at each window edge, where the window's own zero padding changes the result (window and strip starts
  are even frames, so the pooling pairs line up);
- each window's pooled trunk output is assembled from the strips' outer 2 positions and the clip's run
  between them;
- the head's first convolution (at half resolution, 73% of the head's work) is shared one level down in
  the same way (`MIDDLE_OUTPUT`): it runs once over the clip's pooled trunk and once over a 6-position
  strip at each window edge (the window's own 2 positions at that edge and the clip's 4 inside them),
  and after its pooling each window takes its outer 2 positions from the strips, the rest from the clip;
- the rest of the head (two small convolutions, pooling, dense layers) runs per window.
Every window gets the value the whole model gives it, to float rounding, at roughly the cost of scoring
each second of audio once instead of nine times (tests/pipeline/stages/test_dnsmos.py compares with
speechmos). One trunk, one middle and one head session per actor on the threads the stage was given; on
CUDA through onnxruntime's CUDA provider.

`precision="bfloat16"` runs the trunk's four convolutions in bfloat16 through torch (oneDNN), weights
from the same file, accumulating in float32; the head stays onnxruntime's in float32. On a CPU with
native bfloat16 that is about 1.5x faster (AVX512-BF16) or 3x (AMX, on Intel Xeons since Sapphire
Rapids), and the scores move by a few thousandths (bench/quality.py prints both); "auto" takes it where
the CPU has it. In float32 on a CPU without it, the clip's trunk can run its three wide convolutions
through NNPACK's Winograd transform (torch, AVX2): 2.25x fewer multiplications, scores within 1e-6 of
onnxruntime's, 1.2-1.5x faster on one thread of an AVX2 core or an AMD AVX-512 one, but 0.7x of
onnxruntime's AVX-512 convolutions on an Intel core with two 512-bit FMA units. So each actor times both
on one chunk when it starts and keeps the faster (actors that pick differently give the same scores to
1e-6). (The trunk is 2.1 G multiply-adds per second of audio: at 40x real time, direct float32
convolution would need twice the peak of an AVX2 core at 2.6 GHz; onnxruntime's ran at about 80% of it.)
"""
from __future__ import annotations

import os
import time
from functools import lru_cache
from typing import Sequence

import numpy as np

from pipeline.model_folders import runs_on_gpu

SAMPLE_RATE = 16000
WINDOW_SECONDS = 9.01
WINDOW_SAMPLES = int(WINDOW_SECONDS * SAMPLE_RATE)
FRAME_SAMPLES, FRAME_HOP = 320, 160
WINDOW_FRAMES = (WINDOW_SAMPLES - FRAME_SAMPLES) // FRAME_HOP + 1  # 900
HALO = 4  # frames: four 3x3 convolutions at full resolution, one frame of context each
STRIP = 2 * HALO  # frames computed alone at each window edge
TRUNK_INPUT = "mos_estimator_logpow/concat:0"  # the frames, (windows, frames, 320)
TRUNK_OUTPUT = "mos_estimator_logpow/conv2d_3/Relu:0_pooling0"  # after the first 2x2 max pooling
MIDDLE_OUTPUT = "mos_estimator_logpow/max_pooling2d/MaxPool_1_conv0"  # the head's first convolution, pooled
HEAD_OUTPUT = "Identity:0"
# pooled trunk positions that depend on the window (its outer HALO frames), and the strip of pooled trunk
# the middle convolution runs on at each window edge: its 4 outputs nearest the edge are exact (one
# position of context), and an even size keeps its pooling pairs in line with the window's
EDGE_POSITIONS = HALO // 2
MIDDLE_STRIP = 3 * EDGE_POSITIONS
# the clip's trunk in pieces whose largest activation (128 channels: 16 MB in bfloat16) stays in the
# last-level cache: 8% faster than whole windows in bfloat16, the same in float32, 2% more halo frames
CHUNK_FRAMES = 400
FIRST_LAYER_ROWS = 4096  # (frame, bin) positions per block of the bfloat16 trunk's first layer
PRECISIONS = ("auto", "float32", "bfloat16")
# speechmos' non-personalised mapping of the model's raw outputs to MOS (numpy poly1d coefficients)
POLYNOMIALS = {"sig": np.poly1d([-0.08397278, 1.22083953, 0.0052439]),
               "bak": np.poly1d([-0.13166888, 1.60915514, -0.39604546]),
               "ovrl": np.poly1d([-0.06766283, 1.11546468, 0.04602535])}


def model_path() -> str:
    import speechmos.dnsmos

    return os.path.join(os.path.dirname(speechmos.dnsmos.__file__), "dnsmos_models", "sig_bak_ovr.onnx")


def cuda_provider_problem() -> str | None:
    """Why DNSMOS cannot run on CUDA here, if it cannot: onnxruntime without its CUDA provider would
    otherwise run the sessions on the CPU without a word."""
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        return None
    return (f"onnxruntime {ort.__version__} has no CUDA provider, so DNSMOS on cuda would run on the CPU: install "
            "onnxruntime-gpu (the `gpu` extra) or set quality.device=cpu")


def cpu_has_bfloat16() -> bool:
    """Native bfloat16 arithmetic on this CPU (Linux flags); without it oneDNN emulates and is slower."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, device: str) -> str:
    if precision == "auto":
        return "bfloat16" if not runs_on_gpu(device) and cpu_has_bfloat16() else "float32"
    return precision


def doubled(clip: np.ndarray) -> np.ndarray:
    """speechmos' padding: a clip shorter than a window is appended to itself until it fills one."""
    audio = np.asarray(clip, dtype=np.float32)
    if not len(audio):
        raise ValueError("DNSMOS of an empty clip")
    while len(audio) < WINDOW_SAMPLES:
        audio = np.append(audio, audio)
    return audio


def window_starts(audio: np.ndarray, hop_seconds: float = 1.0) -> list[int]:
    """First samples of the windows scored for `audio` (already doubled). At speechmos' 1 s hop its
    arithmetic is copied exactly (hop count, float window ends: a window whose float end falls a sample
    short is skipped, as there); a longer hop scores every `hop_seconds`-th of those windows (a near score)."""
    hops = int(np.floor(len(audio) / SAMPLE_RATE) - WINDOW_SECONDS) + 1
    step = max(1, int(round(hop_seconds)))
    return [int(i * SAMPLE_RATE) for i in range(0, hops, step)
            if len(audio[int(i * SAMPLE_RATE):int((i + WINDOW_SECONDS) * SAMPLE_RATE)]) >= WINDOW_SAMPLES]


def clip_windows(clip: np.ndarray, hop_seconds: float = 1.0) -> np.ndarray:
    """The 9.01 s windows scored for `clip` (16 kHz, in [-1, 1]), as rows: what the whole model would take."""
    audio = doubled(clip)
    return np.stack([audio[s:s + WINDOW_SAMPLES] for s in window_starts(audio, hop_seconds)])


def frames(audio: np.ndarray, first: int, count: int) -> np.ndarray:
    """Frames `first` .. `first + count` of `audio`, as the model cuts them: (count, 320), hop 160."""
    view = np.lib.stride_tricks.sliding_window_view(audio, FRAME_SAMPLES)[::FRAME_HOP]
    return np.ascontiguousarray(view[first:first + count])


@lru_cache(maxsize=None)
def load_model(path: str):
    """The ONNX model, read once per process (the split and the bfloat16 trunk both need it)."""
    import onnx

    return onnx.load(path)


@lru_cache(maxsize=None)
def split_model(path: str) -> tuple[bytes, bytes, bytes]:
    """The model cut after its first and second poolings: (trunk, middle, head) as serialised ONNX; the
    trunk and the middle take any (even) length."""
    import onnx
    from onnx.utils import Extractor

    extractor = Extractor(onnx.shape_inference.infer_shapes(load_model(path)))

    def any_length(part, time_axes):
        del part.graph.value_info[:]  # shapes inferred for 900 frames
        for tensor, time_axis in zip((part.graph.input[0], part.graph.output[0]), time_axes):
            tensor.type.tensor_type.shape.dim[0].dim_param = "windows"
            tensor.type.tensor_type.shape.dim[time_axis].dim_param = "frames"
        return part.SerializeToString()

    trunk = any_length(extractor.extract_model([TRUNK_INPUT], [TRUNK_OUTPUT]), (1, 2))
    middle = any_length(extractor.extract_model([TRUNK_OUTPUT], [MIDDLE_OUTPUT]), (2, 2))
    return trunk, middle, extractor.extract_model([MIDDLE_OUTPUT], [HEAD_OUTPUT]).SerializeToString()


class TorchTrunk:
    """The trunk in torch, weights from the same file: the log power spectrum and the first layer's
    weights here, the layers themselves in the subclasses."""

    def __init__(self, path: str, threads: int):
        import torch
        from onnx import numpy_helper

        torch.set_num_threads(max(1, threads))
        self.weights = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy())
                        for t in load_model(path).graph.initializer}
        # the STFT as one matrix: real then imaginary kernels, (320, 2 x 161)
        self.stft = torch.cat([self.weights[f"time2freq/stft-{part}/kernel:0"][..., 0] for part in ("real", "imag")]).T
        self.bins = self.stft.shape[1] // 2
        # the first convolution has one input channel: faster as a matrix product over 3x3 patches, and
        # kept in float32 (its input in bfloat16 moves the scores by up to 0.01)
        first = self.weights["conv2d/kernel:0"]
        self.first = first.reshape(len(first), 9), self.weights["conv2d/bias:0"]

    def log_power(self, batch: np.ndarray):
        """(windows, frames, 320) samples to the model's (windows, frames, 161) log10 power spectrum."""
        import torch

        spectrum = torch.from_numpy(batch) @ self.stft
        real, imag = spectrum[..., :self.bins], spectrum[..., self.bins:]
        power = torch.sqrt(real * real + imag * imag) ** 2
        return torch.log(torch.clamp(power, min=1e-12)) / np.float32(np.log(10))


class BFloat16Trunk(TorchTrunk):
    """The three wide convolutions in bfloat16 through oneDNN (channels-last), accumulating in float32."""

    def __init__(self, path: str, threads: int):
        import torch

        super().__init__(path, threads)
        weight, bias = self.first
        self.first = weight.T.contiguous(), bias
        self.convs = [(self.weights[f"conv2d_{i}/kernel:0"].to(torch.bfloat16).contiguous(
            memory_format=torch.channels_last), self.weights[f"conv2d_{i}/bias:0"].to(torch.bfloat16))
            for i in (1, 2, 3)]

    def first_layer(self, patches):
        """relu(patches @ weight + bias) in bfloat16, computed FIRST_LAYER_ROWS at a time: the float32
        product of a whole chunk (128 channels: 80 MB for 1,000 frames) would go through memory three
        times (product, relu, conversion); a block's stays in the cache (2.9x faster, the same values)."""
        import torch

        weight, bias = self.first
        out = torch.empty(len(patches), weight.shape[1], dtype=torch.bfloat16)
        block = torch.empty(min(len(patches), FIRST_LAYER_ROWS), weight.shape[1])
        for first in range(0, len(patches), FIRST_LAYER_ROWS):
            rows = patches[first:first + FIRST_LAYER_ROWS]
            product = block[:len(rows)]
            torch.addmm(bias, rows, weight, out=product)
            out[first:first + len(rows)] = torch.relu_(product)
        return out

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        with torch.inference_mode():
            logpow = self.log_power(batch)
            n, t, f = logpow.shape
            patches = F.pad(logpow, (1, 1, 1, 1)).unfold(1, 3, 1).unfold(2, 3, 1).reshape(n * t * f, 9)
            x = self.first_layer(patches).reshape(n, t, f, -1).permute(0, 3, 1, 2)  # channels-last, NCHW view
            for weight, bias in self.convs:
                x = torch.relu_(F.conv2d(x, weight, bias, padding=1))
            return F.max_pool2d(x, 2).float().contiguous().numpy()


def winograd_available() -> bool:
    """torch's NNPACK (x86 with AVX2 and FMA, or ARM NEON): initialised by asking, and needed before its
    first convolution, which fails otherwise."""
    import torch

    return torch._nnpack_available()


class WinogradTrunk(TorchTrunk):
    """The three wide convolutions in float32 through NNPACK's Winograd transform, 2.25x fewer
    multiplications than direct convolution: on an AVX2 core (no AVX-512) the trunk takes 0.65 of
    onnxruntime's time, scores within 1e-6 of it. For the clip's long chunks only: on the 8-frame edge
    strips the transform's 6-frame output tiles waste half their work, and onnxruntime is faster."""

    def __init__(self, path: str, threads: int):
        import torch

        super().__init__(path, threads)
        weight, bias = self.first
        self.first = weight.contiguous(), bias[:, None]
        self.convs = [(self.weights[f"conv2d_{i}/kernel:0"].contiguous(), self.weights[f"conv2d_{i}/bias:0"])
                      for i in (1, 2, 3)]
        # NNPACK sizes its thread pool once, from torch's thread count at its first convolution. Torch's
        # own threads then go back to one: left at two, they spin after the small operations between the
        # convolutions on the cores the pool needs (2 threads: 27x real time against 22x; 1: the same)
        self(np.zeros((1, STRIP, FRAME_SAMPLES), np.float32))
        torch.set_num_threads(1)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        with torch.inference_mode():
            logpow = self.log_power(batch)
            n, t, f = logpow.shape
            padded = F.pad(logpow, (1, 1, 1, 1))
            patches = torch.stack([padded[:, i:i + t, j:j + f] for i in range(3) for j in range(3)])
            weight, bias = self.first
            # channels first straight from the product: NNPACK takes NCHW, and a transpose of the
            # 128-channel activation costs a third of the convolutions' time
            x = torch.relu_(torch.addmm(bias, weight, patches.reshape(9, n * t * f))).reshape(-1, n, t, f)
            x = x.permute(1, 0, 2, 3).contiguous()
            for weight, bias in self.convs:
                x = torch.relu_(torch._nnpack_spatial_convolution(x, weight, bias, [1, 1], [1, 1]))
            return F.max_pool2d(x, 2).contiguous().numpy()


def chunk_seconds(trunk) -> float:
    """The best of two timed runs of `trunk` on one chunk of the clip's trunk (after one untimed run)."""
    chunk = np.random.default_rng(0).uniform(-0.1, 0.1, (1, CHUNK_FRAMES + 2 * HALO, FRAME_SAMPLES)).astype(np.float32)
    trunk(chunk)
    timings = []
    for _ in range(2):
        started = time.perf_counter()
        trunk(chunk)
        timings.append(time.perf_counter() - started)
    return min(timings)


class DnsmosScorer:
    """One trunk and one head per actor; `score` takes the clips of a batch. The head runs
    `batch_windows` windows at a time (1 on a CPU, where batching gains nothing; more on a GPU).
    `winograd`, in float32 on a CPU where torch has NNPACK: the clip's trunk through it (True), all in
    onnxruntime (False, the reference bench/quality.py compares it with), or whichever of the two runs a
    chunk faster here, timed once at start (None)."""

    def __init__(self, threads: int = 1, device: str = "cpu", batch_windows: int | None = None,
                 hop_seconds: float = 1.0, precision: str = "float32", winograd: bool | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        # onnxruntime would otherwise take every core of the machine in every actor
        options.intra_op_num_threads, options.inter_op_num_threads = max(1, threads), 1
        if runs_on_gpu(device):
            if problem := cuda_provider_problem():
                raise RuntimeError(problem)
            # CUDA and cuDNN from the `nvidia` pip packages torch brought, as onnxruntime documents
            getattr(ort, "preload_dlls", lambda: None)()

        def session_for(model: bytes):
            if not runs_on_gpu(device):
                return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
            session = ort.InferenceSession(model, options, providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
            # onnxruntime falls back to the CPU with a log line when its CUDA provider cannot start
            if session.get_providers()[0] != "CUDAExecutionProvider":
                from onnxruntime.capi.build_and_package_info import cuda_version
                raise RuntimeError(f"onnxruntime {ort.__version__} could not start its CUDA provider (built for CUDA "
                                   f"{cuda_version} and cuDNN 9: are they loadable?), so DNSMOS would run on the CPU")
            return session

        trunk, middle, head = split_model(model_path())
        self.precision = resolve_precision(precision, device)
        if self.precision == "bfloat16":
            self.run_trunk = self.run_edges = BFloat16Trunk(model_path(), threads)
        else:
            session = session_for(trunk)
            self.run_trunk = self.run_edges = lambda batch: session.run(None, {TRUNK_INPUT: batch})[0]
            if winograd is not False and not runs_on_gpu(device) and winograd_available():
                nnpack = WinogradTrunk(model_path(), threads)
                if winograd or chunk_seconds(nnpack) < chunk_seconds(self.run_trunk):
                    self.run_trunk = nnpack
        middle = session_for(middle)
        self.run_middle = lambda batch: middle.run(None, {TRUNK_OUTPUT: batch})[0]
        self.head = session_for(head)
        self.batch_windows = batch_windows or (16 if runs_on_gpu(device) else 1)
        self.hop_seconds = hop_seconds

    def clip_trunk(self, audio: np.ndarray, count: int) -> np.ndarray:
        """The pooled trunk over frames 0 .. count of the clip, (32, count / 2, 80); exact more than HALO
        frames from either end. Chunks overlap by the halo and start on even frames."""
        parts = []
        for first in range(0, count, CHUNK_FRAMES):
            low, high = max(0, first - HALO), min(count, first + CHUNK_FRAMES + HALO)
            out = self.run_trunk(frames(audio, low, high - low)[None])[0]
            skip = (first - low) // 2
            parts.append(out[:, skip:skip + min(CHUNK_FRAMES, count - first) // 2])
        return np.concatenate(parts, axis=1)

    def raw_scores(self, audio: np.ndarray, starts: list[int]) -> np.ndarray:
        """The model's raw (sig, bak, ovrl) for the windows of `audio` beginning at `starts`."""
        firsts = [s // FRAME_HOP for s in starts]  # whole seconds: 100 frames each, a multiple of 4
        shared = self.clip_trunk(audio, firsts[-1] + WINDOW_FRAMES)
        edges = self.run_edges(np.stack([frames(audio, f + offset, STRIP)
                                         for f in firsts for offset in (0, WINDOW_FRAMES - STRIP)]))
        # the head's first convolution (and pooling) is shared the same way, one level down: over the
        # clip's pooled trunk once, and over a strip at each window edge of the window's own pooled trunk
        # (its edge positions, then the clip's); the window's own positions at each edge are as many
        # (EDGE_POSITIONS) before the middle's pooling as after it
        edge, pooled, middled = EDGE_POSITIONS, WINDOW_FRAMES // 2, WINDOW_FRAMES // 4  # a window's lengths
        strips = []
        for k, f in enumerate(firsts):
            at = f // 2
            strips.append(np.concatenate([edges[2 * k][:, :edge], shared[:, at + edge:at + MIDDLE_STRIP]], axis=1))
            strips.append(np.concatenate([shared[:, at + pooled - MIDDLE_STRIP:at + pooled - edge],
                                          edges[2 * k + 1][:, STRIP // 2 - edge:]], axis=1))
        middle_edges = self.run_middle(np.stack(strips))
        middle = self.run_middle(shared[None])[0]
        rows = []
        for i in range(0, len(firsts), self.batch_windows):
            batch = [np.concatenate([middle_edges[2 * k][:, :edge], middle[:, f // 4 + edge:f // 4 + middled - edge],
                                     middle_edges[2 * k + 1][:, -edge:]], axis=1)
                     for k, f in enumerate(firsts[i:i + self.batch_windows], start=i)]
            rows.append(self.head.run(None, {MIDDLE_OUTPUT: np.stack(batch)})[0])
        return np.concatenate(rows).astype(np.float64)

    def score(self, clips: Sequence[np.ndarray]) -> list[dict[str, float]]:
        """{sig, bak, ovrl} for each clip (16 kHz, values in [-1, 1]), in order."""
        scores = []
        for clip in clips:
            audio = doubled(clip)
            raw = self.raw_scores(audio, window_starts(audio, self.hop_seconds))
            scores.append({name: float(np.mean(poly(raw[:, k]))) for k, (name, poly) in enumerate(POLYNOMIALS.items())})
        return scores
