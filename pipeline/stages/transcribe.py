"""Stage 4, transcription with whisperx's batched faster-whisper model (CTranslate2).

Per recording, all kept segments are cut to 30 s windows, encoded once in batches, language-identified
from the same encoder output (multilingual models), and decoded with one prompt per segment. Segments in
a language outside `languages` are rejected with the detected language and its probability.

Word times come from whisperx's wav2vec2 CTC alignment for languages with a model in `align_models`
(a local HF folder or hub id); offline, `nltk_data` points at the NLTK `punkt_tab` data it needs.

Mandarin (the `paraformer.languages`) goes on to Paraformer-zh through FunASR when it is installed and
`paraformer.model` is set: its text and character times replace Whisper's, punctuated by the report's
pause rule (`pipeline.segment.punctuate_by_gaps`); Whisper's language id and confidences stay. Without
FunASR or a Paraformer model those segments keep Whisper's text, and `asr.note` says why.

`language` set skips language id: every recording of the source is taken to be in that language.
"""
from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import os
from dataclasses import dataclass, field, replace
from typing import Dict, Iterator, List, Optional

import numpy as np

from pipeline.capacity import PoolResources
from pipeline.model_folders import model_folder_problem
from pipeline.segment import punctuate_by_gaps
from pipeline.shards.schema import AsrInfo, Word
from pipeline.stages.base import Stage
from pipeline.stages.work import RecordingWork, Rejection, SegmentDraft, model_input_problem

WHISPER_WINDOW_SAMPLES = 30 * 16000  # the working rate is pinned to 16 kHz (pipeline.config.WORKING_SAMPLE_RATE)


@dataclass(frozen=True)
class ParaformerSettings:
    """Mandarin through Paraformer-zh (report §3.1): FunASR `model` (hub id or a local folder with config.yaml,
    model.pt, tokens.json, am.mvn; None: Whisper's text, with asr.note saying so) for `languages`,
    `batch_size` clips per call, punctuated by pauses: a comma above `comma_gap`, a period above `period_gap`
    seconds."""
    model: Optional[str] = "paraformer-zh"
    languages: List[str] = field(default_factory=lambda: ["zh"])
    batch_size: int = 8
    comma_gap: float = 0.5
    period_gap: float = 1.0


@dataclass(frozen=True)
class TranscribeSettings:
    """The `transcribe` section: faster-whisper `model` (hub id or a local CTranslate2 folder) on `device`
    with `compute_type`; segments in `languages` are kept (report: English and Mandarin). `language` set
    skips language id; English-only models record `english_only_language`. Word times come from the
    wav2vec2 CTC model in `align_models` per language (None: no word times); `nltk_data` is a folder
    holding tokenizers/punkt_tab for offline alignment. `audio`: what the models hear, the decoded original
    or the enhanced copy."""
    enabled: bool = True
    model: str = "large-v3"
    device: str = "cuda"
    compute_type: str = "float16"
    cpu_threads: int = 4
    batch_size: int = 16
    beam_size: int = 5
    languages: List[str] = field(default_factory=lambda: ["en", "zh"])
    english_only_language: str = "en"
    language: Optional[str] = None
    paraformer: ParaformerSettings = field(default_factory=ParaformerSettings)
    align_models: Dict[str, Optional[str]] = field(
        default_factory=lambda: {"en": "WAV2VEC2_ASR_BASE_960H", "zh": None})
    nltk_data: Optional[str] = None
    audio: str = "original"

    def problems(self) -> list[str]:
        if not self.enabled:
            return []
        found = [model_folder_problem("transcribe.model", self.model, "model.bin", "CTranslate2 model folder")]
        found += [model_folder_problem(f"transcribe.align_models.{language}", name, "config.json",
                                       "wav2vec2 CTC folder")
                  for language, name in self.align_models.items() if name]
        if self.paraformer.model:
            found.append(model_folder_problem("transcribe.paraformer.model", self.paraformer.model, "config.yaml",
                                              "FunASR Paraformer folder"))
        problems = [p for p in found if p]
        if not 0 <= self.paraformer.comma_gap <= self.paraformer.period_gap:
            problems.append("transcribe.paraformer: need 0 <= comma_gap <= period_gap (seconds of pause)")
        if self.nltk_data and not os.path.isdir(os.path.join(self.nltk_data, "tokenizers", "punkt_tab")):
            problems.append(f"transcribe.nltk_data: no tokenizers/punkt_tab under {self.nltk_data}")
        if min(self.batch_size, self.beam_size, self.cpu_threads, self.paraformer.batch_size) < 1:
            problems.append("transcribe: batch_size, beam_size, cpu_threads and paraformer.batch_size must be >= 1")
        if not self.languages:
            problems.append("transcribe.languages is empty: every segment would be rejected")
        problems += model_input_problem("transcribe.audio", self.audio)
        return problems


TRANSCRIBE_RESOURCES = PoolResources(concurrency=(1, 32), num_cpus=2, num_gpus=1, memory_mb=8192)


def load_paraformer(model: str, device: str, threads: int):
    """FunASR's AutoModel on a paraformer-zh folder (config.yaml, model.pt, tokens.json, am.mvn) or hub id.
    `ncpu` matters: FunASR sets torch's thread count for the whole process to it (default 4)."""
    with funasr_quietly():
        from funasr import AutoModel

        return AutoModel(model=model, device=device, ncpu=threads, disable_update=True, disable_log=True,
                         disable_pbar=True)


@contextlib.contextmanager
def funasr_quietly() -> Iterator[None]:
    """Around FunASR's import and `AutoModel(...)`: the import calls `logging.basicConfig(level=INFO)` (from
    `funasr.bin.realtime_ws`) and the loader does again and prints its version, which would send every
    library's INFO to the console from then on (matplotlib's, in `audiomill-shards plot`). Its routine
    notices ("download models from model hub", "trust_remote_code: False") go to the root logger; errors
    still show, and the root logger's level and handlers are restored afterwards."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    root.setLevel(logging.ERROR)
    if not handlers:
        root.addHandler(logging.NullHandler())  # a handler there: `basicConfig` then adds none of its own
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        for handler in list(root.handlers):
            if handler not in handlers:
                root.removeHandler(handler)
        root.setLevel(level)


def paraformer_characters(result: dict, offset: float) -> list[tuple[str, float, float]]:
    """(token, start, end) in session seconds from one FunASR result: its text holds one token per
    timestamp, space-separated (a Chinese character, or a merged English word)."""
    tokens = result.get("text", "").split()
    stamps = result.get("timestamp") or []
    if len(tokens) != len(stamps):
        raise ValueError(f"Paraformer gave {len(tokens)} tokens but {len(stamps)} timestamps")
    return [(token, offset + start / 1000.0, offset + end / 1000.0) for token, (start, end) in zip(tokens, stamps)]


class TranscribeStage(Stage):
    name = "transcribe"

    def __init__(self, cfg: TranscribeSettings):
        self.cfg = cfg

    def setup(self) -> None:
        import whisperx.asr
        from faster_whisper.tokenizer import Tokenizer

        cfg = self.cfg
        self.model = whisperx.asr.WhisperModel(cfg.model, device=cfg.device, compute_type=cfg.compute_type,
                                               cpu_threads=cfg.cpu_threads,
                                               local_files_only=os.path.isdir(cfg.model))
        self.multilingual = self.model.model.is_multilingual
        self.model_name = os.path.basename(os.path.normpath(cfg.model)) if os.path.isdir(cfg.model) else cfg.model
        self._tokenizers = {}
        self.aligners = {}
        if cfg.nltk_data:
            import nltk

            nltk.data.path.insert(0, cfg.nltk_data)
        for language, model_name in cfg.align_models.items():
            if model_name:
                import whisperx

                self.aligners[language] = whisperx.load_align_model(language, cfg.device, model_name=model_name)
        self._make_tokenizer = lambda lang: Tokenizer(self.model.hf_tokenizer, self.multilingual,
                                                      task="transcribe", language=lang)
        self.paraformer, self.paraformer_note = None, None  # loaded at the first Mandarin segment
        if not cfg.paraformer.model:
            self.paraformer_note = "through Whisper: no Paraformer model configured"
        elif importlib.util.find_spec("funasr") is None:
            self.paraformer_note = "through Whisper: FunASR is not installed"
        model = cfg.paraformer.model
        self.paraformer_name = os.path.basename(os.path.normpath(model)) if model else None

    def tokenizer(self, language: str):
        if language not in self._tokenizers:
            self._tokenizers[language] = self._make_tokenizer(language if self.multilingual else None)
        return self._tokenizers[language]

    def features(self, clips: list[np.ndarray]) -> np.ndarray:
        from whisperx.audio import log_mel_spectrogram

        n_mels = self.model.feat_kwargs.get("feature_size") or 80
        return np.stack([log_mel_spectrogram(c[:WHISPER_WINDOW_SAMPLES], n_mels=n_mels,
                                             padding=WHISPER_WINDOW_SAMPLES - len(c[:WHISPER_WINDOW_SAMPLES])).numpy()
                         for c in clips])

    def languages(self, encoder_output, n: int) -> list[tuple[str, float | None]]:
        if self.cfg.language:  # a source known to be in one language
            return [(self.cfg.language, None)] * n
        if not self.multilingual:  # an English-only model: no language id to ask for
            return [(self.cfg.english_only_language, None)] * n
        return [(pairs[0][0][2:-2], float(pairs[0][1])) for pairs in self.model.model.detect_language(encoder_output)]

    def transcribe_batch(self, clips: list[np.ndarray]) -> list[dict]:
        """Language, text and confidences of up to `batch_size` clips (each at most 30 s)."""
        cfg = self.cfg
        encoder_output = self.model.encode(self.features(clips))
        languages = self.languages(encoder_output, len(clips))
        prompts = [self.model.get_prompt(self.tokenizer(lang), [], without_timestamps=True) for lang, _ in languages]
        results = self.model.model.generate(
            encoder_output, prompts, beam_size=cfg.beam_size, max_length=self.model.max_length,
            suppress_blank=True, suppress_tokens=[-1], return_scores=True, return_no_speech_prob=True)
        out = []
        for (lang, prob), result in zip(languages, results):
            tokens = [t for t in result.sequences_ids[0] if t < self.tokenizer(lang).eot]
            length = len(result.sequences_ids[0])
            out.append({"language": lang, "language_prob": prob,
                        "text": self.tokenizer(lang).decode(tokens).strip(),
                        "avg_logprob": float(result.scores[0] * length / (length + 1)),
                        "no_speech_prob": float(result.no_speech_prob)})
        return out

    def process(self, work: RecordingWork) -> RecordingWork:
        sr, audio = work.sample_rate, work.model_input(self.cfg.audio)
        todo = [i for i, s in enumerate(work.segments) if s.rejection is None]
        clips = [audio[round(work.segments[i].start * sr):round(work.segments[i].end * sr)] for i in todo]
        results = []
        for first in range(0, len(clips), self.cfg.batch_size):
            results += self.transcribe_batch(clips[first:first + self.cfg.batch_size])
        segments = list(work.segments)
        keep = set(self.cfg.languages)
        for i, r in zip(todo, results):
            asr = AsrInfo(model=self.model_name, avg_logprob=r["avg_logprob"], no_speech_prob=r["no_speech_prob"])
            segment = replace(segments[i], text=r["text"], language=r["language"], language_prob=r["language_prob"],
                              asr=asr)
            if r["language"] not in keep:
                segment = replace(segment, rejection=Rejection(self.name, "language", {
                    "language": r["language"], "language_prob": r["language_prob"]}))
            segments[i] = segment
        segments = self.paraformer_pass(segments, audio, sr)
        for language, (model, metadata) in self.aligners.items():
            todo = [i for i, seg in enumerate(segments) if seg.rejection is None and seg.language == language
                    and seg.text and not seg.words]
            if todo:
                segments = self.align(segments, todo, audio, model, metadata)
        return replace(work, segments=tuple(segments))

    def paraformer_pass(self, segments: list[SegmentDraft], audio: np.ndarray, sr: int) -> list[SegmentDraft]:
        """Mandarin segments: Paraformer's characters with their times, punctuated by pauses; or Whisper's
        text with a note saying why not."""
        p = self.cfg.paraformer
        todo = [i for i, s in enumerate(segments) if s.rejection is None and s.language in p.languages]
        out = list(segments)
        if not todo:
            return out
        if self.paraformer is None and self.paraformer_note is None:
            self.paraformer = load_paraformer(p.model, self.cfg.device, self.cfg.cpu_threads)
        if self.paraformer is None:
            for i in todo:
                out[i] = replace(out[i], asr=replace(out[i].asr, note=f"{out[i].language} {self.paraformer_note}"))
            return out
        clips = [audio[round(segments[i].start * sr):round(segments[i].end * sr)] for i in todo]
        results = self.paraformer.generate(input=clips, batch_size=p.batch_size, disable_pbar=True)
        for i, result in zip(todo, results):
            chars = paraformer_characters(result, segments[i].start)
            text = punctuate_by_gaps(chars, p.comma_gap, p.period_gap) if chars else ""
            asr = replace(segments[i].asr, model=self.paraformer_name,
                          note=f"text by {self.paraformer_name}; language and confidences by Whisper")
            out[i] = replace(segments[i], text=text, asr=asr,
                             words=tuple(Word(c, start, max(start, end), None) for c, start, end in chars))
        return out

    def align(self, segments: list[SegmentDraft], todo: list[int], audio: np.ndarray, model, metadata
              ) -> list[SegmentDraft]:
        """Word times (seconds in the session) by CTC forced alignment; words the aligner could not place
        (digits, symbols outside its alphabet) stay in the text without a time."""
        import whisperx

        transcript = [{"text": segments[i].text, "start": segments[i].start, "end": segments[i].end} for i in todo]
        aligned = whisperx.align(transcript, model, metadata, audio, self.cfg.device)
        words = [w for w in aligned["word_segments"] if w.get("start") is not None and w.get("end") is not None]
        out = list(segments)
        for i in todo:
            inside = [w for w in words if segments[i].start - 1e-3 <= w["start"] < segments[i].end + 1e-3]
            out[i] = replace(segments[i], words=tuple(
                Word(w["word"], float(w["start"]), max(float(w["start"]), float(w["end"])),
                     None if w.get("score") is None else float(w["score"])) for w in inside))
        return out
