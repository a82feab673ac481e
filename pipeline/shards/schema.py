"""The record schema shared by the pipeline, the trainer and the shard CLI (DESIGN.md, schema version 1).

One sample is one speech segment. Times are seconds relative to the source recording; audio is
described by its sample rate (Hz) and sample count. Records are immutable; build new ones with
`dataclasses.replace`. `from_dict` validates and raises `SchemaError` naming the bad field.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any, Optional

SCHEMA_VERSION = 1

Seconds = float

# Semantic tokens (GLM-4-Voice tokenizer): 12.5 per second, counted per 30 s chunk of 16 kHz audio.
TOKEN_RATE_HZ = 12.5
TOKENIZER_SAMPLE_RATE = 16000
TOKENIZER_CHUNK_SAMPLES = 30 * TOKENIZER_SAMPLE_RATE
TOKENIZER_SAMPLES_PER_TOKEN = 1280

_RECORDING_ID = re.compile(r"^[0-9a-f]{16}(-s[0-9]{4})?$")
KEY_PATTERN = r"^(?P<recording_id>[0-9a-f]{16}(-s[0-9]{4})?)_(?P<index>[0-9]{6})$"
_KEY = re.compile(KEY_PATTERN)


class SchemaError(ValueError):
    """A record field is missing, of the wrong type or out of range; `field` names it."""

    def __init__(self, field_name: str, message: str):
        super().__init__(f"{field_name}: {message}")
        self.field = field_name


def recording_id_for(source: str, session: Optional[int] = None) -> str:
    """Stable id of a source URI (and of one session when a long recording is split).

    >>> recording_id_for("/data/a.wav")
    '8b1d0c2c0e7d1b0f'  # doctest: +SKIP
    """
    try:  # the name's bytes: a Latin-1 file name arrives as surrogate escapes and is an input like any other
        raw = os.fsencode(source)
    except UnicodeEncodeError:
        raw = source.encode("utf-8", "surrogatepass")
    digest = hashlib.sha256(raw).hexdigest()[:16]
    return digest if session is None else f"{digest}-s{session:04d}"


def printable(text: str) -> str:
    """`text` as valid UTF-8 for records, Parquet and the console: bytes of a file name that are not UTF-8
    (surrogate escapes) become `\\xNN`; everything else is unchanged."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def segment_key(recording_id: str, segment_index: int) -> str:
    """Sample key `{recording_id}_{segment_index:06d}`; contains no dot, so webdataset groups on it."""
    return f"{recording_id}_{segment_index:06d}"


def is_valid_key(key: str) -> bool:
    return bool(_KEY.match(key))


def expected_token_count(num_samples: int, sample_rate: int) -> int:
    """Semantic tokens the tokenizer yields for a clip: `(n-1)//1280 + 1` per 30 s chunk at 16 kHz."""
    n16 = int(round(num_samples * TOKENIZER_SAMPLE_RATE / sample_rate))
    full_chunks, rest = divmod(n16, TOKENIZER_CHUNK_SAMPLES)
    count = full_chunks * ((TOKENIZER_CHUNK_SAMPLES - 1) // TOKENIZER_SAMPLES_PER_TOKEN + 1)
    if rest:
        count += (rest - 1) // TOKENIZER_SAMPLES_PER_TOKEN + 1
    return count


# ---- field checks: each names the field it rejects -------------------------------------------

def _require(data: dict, name: str, prefix: str) -> Any:
    if name not in data:
        raise SchemaError(prefix + name, "missing")
    return data[name]


def _as_str(value: Any, name: str, allow_none: bool = False) -> Optional[str]:
    if value is None and allow_none:
        return None
    if not isinstance(value, str):
        raise SchemaError(name, f"expected a string, got {type(value).__name__}")
    return value


def _as_int(value: Any, name: str, minimum: Optional[int] = None, allow_none: bool = False) -> Optional[int]:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise SchemaError(name, f"expected an integer, got {type(value).__name__}")
    if minimum is not None and value < minimum:
        raise SchemaError(name, f"must be >= {minimum}, got {value}")
    return value


def _as_float(value: Any, name: str, minimum: Optional[float] = None, maximum: Optional[float] = None,
              allow_none: bool = False) -> Optional[float]:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SchemaError(name, f"expected a number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise SchemaError(name, f"must be finite, got {value}")
    if minimum is not None and value < minimum:
        raise SchemaError(name, f"must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise SchemaError(name, f"must be <= {maximum}, got {value}")
    return value


def _as_dict(value: Any, name: str) -> dict:
    if not isinstance(value, dict):
        raise SchemaError(name, f"expected an object, got {type(value).__name__}")
    return value


# ---- nested parts ---------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Word:
    """One aligned word; times in seconds relative to the source; score is the aligner's confidence."""
    word: str
    start: Seconds
    end: Seconds
    score: Optional[float] = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any, prefix: str = "words[].") -> "Word":
        data = _as_dict(data, prefix.rstrip("."))
        start = _as_float(_require(data, "start", prefix), prefix + "start", minimum=0.0)
        end = _as_float(_require(data, "end", prefix), prefix + "end", minimum=0.0)
        if end < start:
            raise SchemaError(prefix + "end", f"ends before it starts ({end} < {start})")
        return cls(word=_as_str(_require(data, "word", prefix), prefix + "word"), start=start, end=end,
                   score=_as_float(data.get("score"), prefix + "score", allow_none=True))


@dataclass(frozen=True, slots=True)
class AsrInfo:
    """Which model made the transcript and how sure it was (Whisper's average log-prob, no-speech prob);
    `note` says where the text came from when it is not simply `model`'s (Paraformer, or a fallback)."""
    model: Optional[str] = None
    avg_logprob: Optional[float] = None
    no_speech_prob: Optional[float] = None
    note: Optional[str] = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> "AsrInfo":
        data = _as_dict(data, "asr")
        return cls(model=_as_str(data.get("model"), "asr.model", allow_none=True),
                   avg_logprob=_as_float(data.get("avg_logprob"), "asr.avg_logprob", allow_none=True),
                   no_speech_prob=_as_float(data.get("no_speech_prob"), "asr.no_speech_prob",
                                            minimum=0.0, maximum=1.0, allow_none=True),
                   note=_as_str(data.get("note"), "asr.note", allow_none=True))


@dataclass(frozen=True, slots=True)
class Quality:
    """Quality metrics; None where not computed. DNSMOS on its 1-5 scale, SNR in dB, ratios in 0-1."""
    dnsmos_sig: Optional[float] = None
    dnsmos_bak: Optional[float] = None
    dnsmos_ovrl: Optional[float] = None
    snr_db: Optional[float] = None
    speech_ratio: Optional[float] = None
    chars_per_sec: Optional[float] = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> "Quality":
        data = _as_dict(data, "quality")
        ranges = {"speech_ratio": (0.0, 1.0), "chars_per_sec": (0.0, None)}
        values = {}
        for f in dataclasses.fields(cls):
            low, high = ranges.get(f.name, (None, None))
            values[f.name] = _as_float(data.get(f.name), "quality." + f.name, minimum=low, maximum=high,
                                       allow_none=True)
        return cls(**values)


@dataclass(frozen=True, slots=True)
class AudioInfo:
    """The stored audio: sample rate (Hz), sample count, and whether an enhanced copy is stored too."""
    sample_rate: int
    num_samples: int
    has_enhanced: bool = False

    @property
    def seconds(self) -> Seconds:
        return self.num_samples / self.sample_rate

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> "AudioInfo":
        data = _as_dict(data, "audio")
        has_enhanced = data.get("has_enhanced", False)
        if not isinstance(has_enhanced, bool):
            raise SchemaError("audio.has_enhanced", "expected true or false")
        return cls(sample_rate=_as_int(_require(data, "sample_rate", "audio."), "audio.sample_rate", minimum=1),
                   num_samples=_as_int(_require(data, "num_samples", "audio."), "audio.num_samples", minimum=1),
                   has_enhanced=has_enhanced)


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """Semantic tokens stored as `KEY.tok.npy`: how many, at what rate (Hz), from which tokenizer."""
    count: int
    rate: float = TOKEN_RATE_HZ
    model: Optional[str] = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> "TokenInfo":
        data = _as_dict(data, "tokens")
        return cls(count=_as_int(_require(data, "count", "tokens."), "tokens.count", minimum=0),
                   rate=_as_float(data.get("rate", TOKEN_RATE_HZ), "tokens.rate", minimum=0.0),
                   model=_as_str(data.get("model"), "tokens.model", allow_none=True))


@dataclass(frozen=True, slots=True)
class PipelineInfo:
    """Which pipeline version and which resolved config (hash) made the sample."""
    version: str
    config_hash: str

    @classmethod
    def for_config(cls, version: str, config: dict) -> "PipelineInfo":
        """Stamp for samples made with this resolved config (sha256 of its canonical JSON, 16 hex)."""
        canonical = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
        return cls(version=version, config_hash=hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16])

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> "PipelineInfo":
        data = _as_dict(data, "pipeline")
        return cls(version=_as_str(_require(data, "version", "pipeline."), "pipeline.version"),
                   config_hash=_as_str(_require(data, "config_hash", "pipeline."), "pipeline.config_hash"))


# ---- the sample record ---------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class SegmentRecord:
    """Metadata of one segment sample, stored as `KEY.json` and (flattened) as a manifest row."""
    recording_id: str
    source: str
    segment_index: int
    start: Seconds
    end: Seconds
    audio: AudioInfo
    pipeline: PipelineInfo
    gap_before: Optional[Seconds] = None
    speaker: Optional[str] = None
    language: Optional[str] = None
    language_prob: Optional[float] = None
    text: Optional[str] = None
    words: tuple[Word, ...] = ()
    asr: AsrInfo = field(default_factory=AsrInfo)
    quality: Quality = field(default_factory=Quality)
    tokens: Optional[TokenInfo] = None
    schema: int = SCHEMA_VERSION

    def __post_init__(self):
        if not _RECORDING_ID.match(self.recording_id):
            raise SchemaError("recording_id", f"not a recording id: {self.recording_id!r}")
        if self.segment_index < 0:
            raise SchemaError("segment_index", f"must be >= 0, got {self.segment_index}")
        if self.end <= self.start:
            raise SchemaError("end", f"must be after start ({self.end} <= {self.start})")
        if self.schema != SCHEMA_VERSION:
            raise SchemaError("schema", f"version {self.schema} is not supported (expected {SCHEMA_VERSION})")

    @property
    def key(self) -> str:
        return segment_key(self.recording_id, self.segment_index)

    @property
    def duration(self) -> Seconds:
        return self.end - self.start

    def to_dict(self) -> dict:
        return {
            "schema": self.schema, "key": self.key, "recording_id": self.recording_id, "source": self.source,
            "segment_index": self.segment_index, "start": self.start, "end": self.end,
            "duration": self.duration, "gap_before": self.gap_before, "speaker": self.speaker,
            "language": self.language, "language_prob": self.language_prob, "text": self.text,
            "words": [w.to_dict() for w in self.words], "asr": self.asr.to_dict(),
            "quality": self.quality.to_dict(), "audio": self.audio.to_dict(),
            "tokens": None if self.tokens is None else self.tokens.to_dict(),
            "pipeline": self.pipeline.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Any) -> "SegmentRecord":
        data = _as_dict(data, "record")
        schema = _as_int(_require(data, "schema", ""), "schema")
        if schema != SCHEMA_VERSION:
            raise SchemaError("schema", f"version {schema} is not supported (expected {SCHEMA_VERSION})")
        words = data.get("words") or []
        if not isinstance(words, list):
            raise SchemaError("words", "expected a list")
        record = cls(
            recording_id=_as_str(_require(data, "recording_id", ""), "recording_id"),
            source=_as_str(_require(data, "source", ""), "source"),
            segment_index=_as_int(_require(data, "segment_index", ""), "segment_index", minimum=0),
            start=_as_float(_require(data, "start", ""), "start", minimum=0.0),
            end=_as_float(_require(data, "end", ""), "end", minimum=0.0),
            gap_before=_as_float(data.get("gap_before"), "gap_before", minimum=0.0, allow_none=True),
            speaker=_as_str(data.get("speaker"), "speaker", allow_none=True),
            language=_as_str(data.get("language"), "language", allow_none=True),
            language_prob=_as_float(data.get("language_prob"), "language_prob", minimum=0.0, maximum=1.0,
                                    allow_none=True),
            text=_as_str(data.get("text"), "text", allow_none=True),
            words=tuple(Word.from_dict(w, prefix=f"words[{i}].") for i, w in enumerate(words)),
            asr=AsrInfo.from_dict(data.get("asr") or {}),
            quality=Quality.from_dict(data.get("quality") or {}),
            audio=AudioInfo.from_dict(_require(data, "audio", "")),
            tokens=None if data.get("tokens") is None else TokenInfo.from_dict(data["tokens"]),
            pipeline=PipelineInfo.from_dict(_require(data, "pipeline", "")),
            schema=schema,
        )
        if "key" in data and data["key"] != record.key:
            raise SchemaError("key", f"{data['key']!r} does not match recording_id and segment_index ({record.key})")
        return record


# ---- what a filter dropped and what raised ---------------------------------------------------

@dataclass(frozen=True, slots=True)
class RejectedRecord:
    """A recording (key None) or one segment (key set) dropped by a filter, with the reason and metrics.

    `shard` names the shard that holds the recording's other segments; such a row counts only once that
    shard's manifest exists, so a crash between the two writes cannot lose or double anything.
    """
    source: str
    recording_id: str
    stage: str
    reason: str
    key: Optional[str] = None
    metrics: dict = field(default_factory=dict)
    duration: Optional[Seconds] = None
    shard: Optional[str] = None


@dataclass(frozen=True, slots=True)
class FailedRecord:
    """An input that raised: where (stage) and what (error type and message)."""
    source: str
    recording_id: str
    stage: str
    error_type: str
    message: str
