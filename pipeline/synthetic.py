"""Generated speech with known truth, for the demo and the tests, resampled by sox.

Voices: espeak-ng's (`en-us+f4`, or `espeak:en-us+f4`), whose variants are one formant synthesizer with
other settings, so they are closer to each other than people are; and voices built from recordings of
different real speakers: flite's (`flite:slt`, `flite:rms`, `flite:awb`, `flite:kal16`) and festival's
(`festival:kal_diphone`, `festival:ked_diphone`, `festival:cmu_us_slt_arctic_hts`). `make setup` installs
all three synthesizers.

Nothing here is used on real data; it exists so that every stage can be run offline on speech whose
words, speakers and times are known exactly.
"""
from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

REQUIRED_TOOLS = ("espeak-ng", "sox")
SYNTHESIZER_TOOLS = {"espeak": "espeak-ng", "flite": "flite", "festival": "text2wave"}


class MissingToolError(RuntimeError):
    pass


def require_tools(tools: Sequence[str] = REQUIRED_TOOLS) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        raise MissingToolError(f"{', '.join(missing)} not found; run `make setup` (installs them with apt-get)")


def speak(text: str, voice: str, sample_rate: int = 16000, words_per_minute: int = 165) -> np.ndarray:
    """Speech for `text` in `voice` ('en-us', 'espeak:en-gb+f3', 'flite:slt', 'festival:kal_diphone'), float32
    mono at `sample_rate`. `words_per_minute` sets espeak's rate; flite and festival speak at their own."""
    synthesizer, _, name = voice.rpartition(":")
    synthesizer = synthesizer or "espeak"
    if synthesizer not in SYNTHESIZER_TOOLS:
        raise ValueError(f"voice {voice!r}: unknown synthesizer {synthesizer!r} (espeak, flite or festival)")
    require_tools((SYNTHESIZER_TOOLS[synthesizer], "sox"))
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "speech.wav"
        if synthesizer == "espeak":
            command = ["espeak-ng", "-v", name, "-s", str(words_per_minute), "-w", str(wav), text]
        elif synthesizer == "flite":
            command = ["flite", "-voice", name, "-t", text, "-o", str(wav)]
        else:  # text2wave reads the text from a file; the voice is selected by evaluating (voice_NAME)
            (Path(tmp) / "text.txt").write_text(text)
            command = ["text2wave", "-eval", f"(voice_{name})", "-o", str(wav), str(Path(tmp) / "text.txt")]
        subprocess.run(command, check=True, capture_output=True)
        raw = subprocess.run(["sox", str(wav), "-t", "raw", "-e", "floating-point", "-b", "32", "-c", "1",
                              "-r", str(sample_rate), "-"], check=True, capture_output=True).stdout
    return trim_silence(np.frombuffer(raw, dtype=np.float32).copy())


def trim_silence(audio: np.ndarray, threshold: float = 1e-3) -> np.ndarray:
    """Drop leading and trailing samples quieter than `threshold` (espeak pads its output)."""
    loud = np.flatnonzero(np.abs(audio) > threshold)
    return audio[loud[0]:loud[-1] + 1] if loud.size else audio[:0]


@dataclass(frozen=True)
class Turn:
    """One spoken turn of a generated dialog; times in seconds from the start of the recording."""
    speaker: str
    voice: str
    text: str
    start: float
    end: float


@dataclass(frozen=True)
class Dialog:
    audio: np.ndarray
    sample_rate: int
    turns: tuple[Turn, ...]

    @property
    def seconds(self) -> float:
        return len(self.audio) / self.sample_rate


def music_bed(num_samples: int, sample_rate: int, seed: int = 0) -> np.ndarray:
    """A slowly changing chord (three sines with a tremolo), peak about 1: background music stand-in."""
    rng = np.random.default_rng(seed)
    t = np.arange(num_samples) / sample_rate
    root = rng.choice([196.0, 220.0, 246.9, 261.6])
    chord = sum(np.sin(2 * np.pi * root * ratio * t + rng.uniform(0, 2 * np.pi)) for ratio in (1.0, 1.26, 1.5))
    return (chord / 3 * (0.6 + 0.4 * np.sin(2 * np.pi * 0.25 * t))).astype(np.float32)


def make_dialog(lines: Sequence[tuple[str, str, str]], *, sample_rate: int = 16000, gap_seconds: float = 0.6,
                lead_seconds: float = 0.5, seed: int = 0, noise_level: float = 0.0,
                music_level: float = 0.0) -> Dialog:
    """Concatenate spoken lines `(speaker, voice, text)` with pauses, optionally over white noise and music.

    Pauses vary around `gap_seconds` (seeded), so turn boundaries are not on a regular grid.
    """
    rng = np.random.default_rng(seed)
    pieces = [np.zeros(int(lead_seconds * sample_rate), dtype=np.float32)]
    turns, cursor = [], len(pieces[0])
    for speaker, voice, text in lines:
        speech = 0.7 * speak(text, voice, sample_rate)
        turns.append(Turn(speaker, voice, text, cursor / sample_rate, (cursor + len(speech)) / sample_rate))
        gap = np.zeros(int(gap_seconds * rng.uniform(0.6, 1.6) * sample_rate), dtype=np.float32)
        pieces += [speech, gap]
        cursor += len(speech) + len(gap)
    audio = np.concatenate(pieces)
    if noise_level > 0:
        audio = audio + noise_level * rng.standard_normal(len(audio)).astype(np.float32)
    if music_level > 0:
        audio = audio + music_level * music_bed(len(audio), sample_rate, seed)
    return Dialog(np.clip(audio, -1.0, 1.0).astype(np.float32), sample_rate, tuple(turns))
