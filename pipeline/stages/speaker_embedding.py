"""Speaker embeddings with real offline weights: the GE2E encoder shipped inside the `resemblyzer` wheel."""
from __future__ import annotations

from typing import Sequence

import numpy as np


class ResemblyzerEmbedder:
    """256-dim unit speaker embeddings of 16 kHz clips (one per clip; short clips are padded by the model)."""

    name = "resemblyzer-ge2e"

    def __init__(self, device: str = "cpu"):
        from resemblyzer import VoiceEncoder

        self.encoder = VoiceEncoder(device=device, verbose=False)

    def embed(self, clips: Sequence[np.ndarray]) -> np.ndarray:
        return np.stack([self.encoder.embed_utterance(np.asarray(c, dtype=np.float32)) for c in clips]) \
            if clips else np.zeros((0, 256), dtype=np.float32)
