"""The record schema shared by the pipeline, the trainer and the shard CLI (DESIGN.md, schema version 1).

One sample is one speech segment. Times are seconds relative to the source recording; audio is
described by its sample rate (Hz) and sample count. Records are immutable; build new ones with
`dataclasses.replace`. `from_dict` validates and raises `SchemaError` naming the bad field.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

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


def _as_bool(value: Any, name: str, allow_none: bool = False) -> Optional[bool]:
    if value is None and allow_none:
        return None
    if not isinstance(value, bool):
        raise SchemaError(name, "expected true or false")
    return value


def _as_dict(value: Any, name: str) -> dict:
    if not isinstance(value, dict):
        raise SchemaError(name, f"expected an object, got {type(value).__name__}")
    return value


# ---- one definition per field: its JSON name, its manifest column, its checks ------------------

def column(arrow: Optional[str] = None, name: Optional[str] = None, minimum: Optional[float] = None,
           maximum: Optional[float] = None) -> dict:
    """Field metadata of a record field: its manifest column (`name`, the field's own by default) of Arrow
    type `arrow` (a pyarrow type function: string, int32, int64, float32, float64, bool_; None: not a
    column), and the range `from_dict` accepts. Everything else about a field is derived from it."""
    return {"arrow": arrow, "column": name, "minimum": minimum, "maximum": maximum}


@dataclass(frozen=True)
class Column:
    """A manifest column: its name, its Arrow type name, and how a record gives its value."""
    name: str
    arrow: str
    value: Callable[[Any], Any]


class _Record:
    """`to_dict` / `from_dict` / manifest columns derived from the dataclass fields and their metadata.

    Field types: str, int, float, bool (each maybe Optional), a nested record (maybe Optional), or a tuple
    of nested records. A nested record's fields are flattened into the manifest under their own names."""
    __slots__ = ()

    def to_dict(self) -> dict:
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, _Record):
                value = value.to_dict()
            elif isinstance(value, tuple):
                value = [v.to_dict() for v in value]
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, data: Any, prefix: str = ""):
        data = _as_dict(data, prefix.rstrip(".") or "record")
        values = {}
        for spec in field_specs(cls):
            if not spec.required and data.get(spec.name) is None:
                continue  # absent or null: the field's default
            values[spec.name] = _decode(spec, _require(data, spec.name, prefix), prefix + spec.name)
        return cls(**values)

    @classmethod
    def columns(cls) -> list[Column]:
        """The manifest columns of this record, in field order (nested records flattened)."""
        out = []
        for f in dataclasses.fields(cls):
            inner = _record_type(type_hints(cls)[f.name])
            if inner is not None and not _is_tuple(type_hints(cls)[f.name]):
                out += [Column(c.name, c.arrow, _nested(f.name, c.value)) for c in inner.columns()]
            elif f.metadata.get("arrow"):
                out.append(Column(f.metadata.get("column") or f.name, f.metadata["arrow"], _attribute(f.name)))
        return out


@functools.cache
def type_hints(record_type: type) -> dict:
    """A record class's field types, resolved once: the annotations are strings (`from __future__ import
    annotations`), and resolving them per record was half the model-free curation path's time."""
    return typing.get_type_hints(record_type)


@functools.cache
def columns_of(record_type: type) -> tuple[Column, ...]:
    """`record_type.columns()`, computed once per class (a manifest row asks for them per sample)."""
    return tuple(record_type.columns())


def _attribute(name: str) -> Callable[[Any], Any]:
    return lambda record: getattr(record, name)


def _nested(name: str, value: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda record: None if getattr(record, name) is None else value(getattr(record, name))


def _optional_inner(hint) -> tuple[Any, bool]:
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args:
        return next(a for a in args if a is not type(None)), True
    return hint, False


def _is_tuple(hint) -> bool:
    return typing.get_origin(hint) is tuple


def _record_type(hint) -> Optional[type]:
    hint, _ = _optional_inner(hint)
    if _is_tuple(hint):
        hint = typing.get_args(hint)[0]
    return hint if isinstance(hint, type) and issubclass(hint, _Record) else None


@dataclass(frozen=True)
class _FieldSpec:
    """How `from_dict` reads one field, worked out once per class from its type and metadata."""
    name: str
    required: bool
    kind: Any          # a record class, (record class,) for a tuple of them, or bool, int, float, str
    optional: bool
    minimum: Optional[float]
    maximum: Optional[float]


@functools.cache
def field_specs(record_type: type) -> tuple[_FieldSpec, ...]:
    """The fields of a record class as `from_dict` reads them (resolving types per record cost a third of
    reading a shard)."""
    specs = []
    for f in dataclasses.fields(record_type):
        hint, optional = _optional_inner(type_hints(record_type)[f.name])
        record = _record_type(hint)
        kind = (record,) if _is_tuple(hint) else record or (hint if hint in (bool, int, float) else str)
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        specs.append(_FieldSpec(f.name, required, kind, optional, f.metadata.get("minimum"),
                                f.metadata.get("maximum")))
    return tuple(specs)


def _decode(spec: _FieldSpec, value: Any, name: str) -> Any:
    kind, optional = spec.kind, spec.optional
    if isinstance(kind, tuple):
        if value is None:
            return ()
        if not isinstance(value, list):
            raise SchemaError(name, "expected a list")
        return tuple(kind[0].from_dict(v, prefix=f"{name}[{i}].") for i, v in enumerate(value))
    if kind is bool:
        return _as_bool(value, name, allow_none=optional)
    if kind is int:
        return _as_int(value, name, minimum=spec.minimum, allow_none=optional)
    if kind is float:
        return _as_float(value, name, minimum=spec.minimum, maximum=spec.maximum, allow_none=optional)
    if kind is str:
        return _as_str(value, name, allow_none=optional)
    if value is None:
        if optional:
            return None
        raise SchemaError(name, "missing")
    return kind.from_dict(value, prefix=name + ".")


# ---- nested parts ---------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Word(_Record):
    """One aligned word; times in seconds relative to the source; score is the aligner's confidence."""
    word: str
    start: Seconds = field(metadata=column(minimum=0.0))
    end: Seconds = field(metadata=column(minimum=0.0))
    score: Optional[float] = None

    @classmethod
    def from_dict(cls, data: Any, prefix: str = "words[].") -> "Word":
        word = super(Word, cls).from_dict(data, prefix)
        if word.end < word.start:
            raise SchemaError(prefix + "end", f"ends before it starts ({word.end} < {word.start})")
        return word


@dataclass(frozen=True, slots=True)
class AsrInfo(_Record):
    """Which model made the transcript and how sure it was (Whisper's average log-prob, no-speech prob);
    `note` says where the text came from when it is not simply `model`'s (Paraformer, or a fallback)."""
    model: Optional[str] = field(default=None, metadata=column("string", "asr_model"))
    avg_logprob: Optional[float] = field(default=None, metadata=column("float32", "asr_avg_logprob"))
    no_speech_prob: Optional[float] = field(default=None, metadata=column("float32", "asr_no_speech_prob", 0.0, 1.0))
    note: Optional[str] = None


@dataclass(frozen=True, slots=True)
class Quality(_Record):
    """Quality metrics; None where not computed. DNSMOS on its 1-5 scale, SNR in dB, ratios in 0-1."""
    dnsmos_sig: Optional[float] = field(default=None, metadata=column("float32"))
    dnsmos_bak: Optional[float] = field(default=None, metadata=column("float32"))
    dnsmos_ovrl: Optional[float] = field(default=None, metadata=column("float32"))
    snr_db: Optional[float] = field(default=None, metadata=column("float32"))
    speech_ratio: Optional[float] = field(default=None, metadata=column("float32", minimum=0.0, maximum=1.0))
    chars_per_sec: Optional[float] = field(default=None, metadata=column("float32", minimum=0.0))


@dataclass(frozen=True, slots=True)
class AudioInfo(_Record):
    """The stored audio: sample rate (Hz), sample count, and whether an enhanced copy is stored too."""
    sample_rate: int = field(metadata=column("int32", minimum=1))
    num_samples: int = field(metadata=column("int64", minimum=1))
    has_enhanced: bool = field(default=False, metadata=column("bool_"))

    @property
    def seconds(self) -> Seconds:
        return self.num_samples / self.sample_rate


@dataclass(frozen=True, slots=True)
class TokenInfo(_Record):
    """Semantic tokens stored as `KEY.tok.npy`: how many, at what rate (Hz), from which tokenizer."""
    count: int = field(metadata=column("int32", "token_count", minimum=0))
    rate: float = field(default=TOKEN_RATE_HZ, metadata=column("float32", "token_rate", minimum=0.0))
    model: Optional[str] = field(default=None, metadata=column("string", "token_model"))


@dataclass(frozen=True, slots=True)
class PipelineInfo(_Record):
    """Which pipeline version and which resolved config (hash) made the sample."""
    version: str = field(metadata=column("string", "pipeline_version"))
    config_hash: str = field(metadata=column("string"))

    @classmethod
    def for_config(cls, version: str, config: dict) -> "PipelineInfo":
        """Stamp for samples made with this resolved config (sha256 of its canonical JSON, 16 hex)."""
        canonical = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
        return cls(version=version, config_hash=hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16])


# ---- the sample record ---------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class SegmentRecord(_Record):
    """Metadata of one segment sample, stored as `KEY.json` and (flattened) as a manifest row.

    This class is the record's one definition: `to_dict` (KEY.json), `from_dict` (with its checks) and the
    manifest's columns (`columns()`, pipeline/shards/manifest.py) all come from its fields and their
    metadata. `key`, `duration` and `num_words` are derived, in KEY.json and in the manifest alike."""
    recording_id: str = field(metadata=column("string"))
    source: str = field(metadata=column("string"))
    segment_index: int = field(metadata=column("int32", minimum=0))
    start: Seconds = field(metadata=column("float64", minimum=0.0))
    end: Seconds = field(metadata=column("float64", minimum=0.0))
    audio: AudioInfo
    pipeline: PipelineInfo
    gap_before: Optional[Seconds] = field(default=None, metadata=column("float64", minimum=0.0))
    speaker: Optional[str] = field(default=None, metadata=column("string"))
    language: Optional[str] = field(default=None, metadata=column("string"))
    language_prob: Optional[float] = field(default=None, metadata=column("float32", minimum=0.0, maximum=1.0))
    text: Optional[str] = field(default=None, metadata=column("string"))
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
        return {"key": self.key, "duration": self.duration, **_Record.to_dict(self)}

    @classmethod
    def from_dict(cls, data: Any, prefix: str = "") -> "SegmentRecord":
        data = _as_dict(data, "record")
        schema = _as_int(_require(data, "schema", ""), "schema")
        if schema != SCHEMA_VERSION:
            raise SchemaError("schema", f"version {schema} is not supported (expected {SCHEMA_VERSION})")
        record = super(SegmentRecord, cls).from_dict(data, prefix)
        if "key" in data and data["key"] != record.key:
            raise SchemaError("key", f"{data['key']!r} does not match recording_id and segment_index ({record.key})")
        return record

    @classmethod
    def columns(cls) -> list[Column]:
        derived = [Column("key", "string", lambda r: r.key), Column("duration", "float64", lambda r: r.duration),
                   Column("num_words", "int32", lambda r: len(r.words))]
        return derived + super(SegmentRecord, cls).columns()


# ---- conversations: the fine-tuning extension (conversation schema version 1) ------------------
#
# A prepared fine-tuning dataset (`python -m jobs.prepare_sft`) holds one sample per conversation of the
# released fine-tuning format (a JSONL line: `task_type`, `conversation` of messages with `role`,
# `message_type`, `content`). The sample is a SegmentRecord whose audio is every audio message of the
# conversation, concatenated in order, and whose tokens are each message's semantic tokens, concatenated
# likewise; `conversation` says which message holds which range of both. So a conversation sample has the
# members of any sample (KEY.flac, KEY.json, KEY.tok.npy), and every reader, `verify`, `stats` and the
# interop commands read it as they read a segment; the trainer lays it out as a conversation.

CONVERSATION_SCHEMA_VERSION = 1
TASK_TYPES = ("understanding", "speech2speech")
ROLES = ("user", "assistant")
MESSAGE_TYPES = ("text", "audio", "audio-text")


@dataclass(frozen=True, slots=True)
class Message(_Record):
    """One message. `text`: the words of a text (or audio-text) message; an audio (or audio-text) message
    holds samples [first_sample, first_sample + num_samples) of the sample's audio, from `audio_source`,
    and tokens [first_token, first_token + num_tokens) of its semantic tokens."""
    role: str
    message_type: str
    text: Optional[str] = None
    audio_source: Optional[str] = None
    first_sample: Optional[int] = field(default=None, metadata=column(minimum=0))
    num_samples: Optional[int] = field(default=None, metadata=column(minimum=1))
    first_token: Optional[int] = field(default=None, metadata=column(minimum=0))
    num_tokens: Optional[int] = field(default=None, metadata=column(minimum=0))

    @property
    def has_audio(self) -> bool:
        return self.message_type in ("audio", "audio-text")

    @property
    def has_text(self) -> bool:
        return self.message_type in ("text", "audio-text")

    def check(self, prefix: str = "") -> None:
        """Its role, type and the fields its type needs (ConversationRecord checks every message, by index)."""
        if self.role not in ROLES:
            raise SchemaError(prefix + "role", f"{self.role!r} is not one of {', '.join(ROLES)}")
        if self.message_type not in MESSAGE_TYPES:
            raise SchemaError(prefix + "message_type",
                              f"{self.message_type!r} is not one of {', '.join(MESSAGE_TYPES)}")
        if self.has_text and not self.text:
            raise SchemaError(prefix + "text", f"a {self.message_type} message needs its text")
        ranges = (self.first_sample, self.num_samples, self.first_token, self.num_tokens)
        if self.has_audio and any(v is None for v in ranges):
            raise SchemaError(prefix + "num_samples", "an audio message needs its sample and token ranges")


@dataclass(frozen=True, slots=True)
class Conversation(_Record):
    """A conversation's structure: its task type, its messages in order, and where it came from (`line`
    of the JSONL at the record's `source`, counted from 1)."""
    task_type: str = field(metadata=column("string"))
    line: int = field(metadata=column("int64", "conversation_line", minimum=1))
    messages: tuple[Message, ...] = ()
    version: int = field(default=CONVERSATION_SCHEMA_VERSION, metadata=column("int32", "conversation_schema"))

    def audio_messages(self) -> list[Message]:
        return [m for m in self.messages if m.has_audio]

    @classmethod
    def from_dict(cls, data: Any, prefix: str = "conversation.") -> "Conversation":
        conversation = super(Conversation, cls).from_dict(data, prefix)
        if conversation.version != CONVERSATION_SCHEMA_VERSION:
            raise SchemaError(prefix + "version", f"conversation schema {conversation.version} is not supported "
                                                  f"(expected {CONVERSATION_SCHEMA_VERSION})")
        if conversation.task_type not in TASK_TYPES:
            raise SchemaError(prefix + "task_type", f"{conversation.task_type!r} is not one of {', '.join(TASK_TYPES)}")
        return conversation


@dataclass(frozen=True, slots=True)
class ConversationRecord(SegmentRecord):
    """A SegmentRecord (schema 1) with its `conversation`; audio and tokens of the messages concatenated."""
    conversation: Optional[Conversation] = None

    def __post_init__(self):
        SegmentRecord.__post_init__(self)
        if self.conversation is None:
            raise SchemaError("conversation", "missing")
        samples = tokens = 0
        for i, message in enumerate(self.conversation.messages):
            message.check(f"conversation.messages[{i}].")
            if message.has_audio:
                if message.first_sample != samples or message.first_token != tokens:
                    raise SchemaError(f"conversation.messages[{i}].first_sample", "audio ranges must follow each "
                                      f"other from 0 (expected sample {samples}, token {tokens})")
                samples, tokens = samples + message.num_samples, tokens + message.num_tokens
        if samples != self.audio.num_samples:
            raise SchemaError("audio.num_samples", f"{self.audio.num_samples}, the messages hold {samples}")
        if self.tokens is not None and tokens != self.tokens.count:
            raise SchemaError("tokens.count", f"{self.tokens.count}, the messages hold {tokens}")

    def expected_tokens(self) -> int:
        return sum(expected_token_count(m.num_samples, self.audio.sample_rate)
                   for m in self.conversation.audio_messages())


def parse_record(data: Any) -> SegmentRecord:
    """A sample's KEY.json as its record: a ConversationRecord when it holds a conversation."""
    if isinstance(data, dict) and data.get("conversation") is not None:
        return ConversationRecord.from_dict(data)
    return SegmentRecord.from_dict(data)


def expected_tokens(record: SegmentRecord) -> int:
    """Semantic tokens a sample's audio yields: one clip, or each message's clip of a conversation."""
    if isinstance(record, ConversationRecord):
        return record.expected_tokens()
    return expected_token_count(record.audio.num_samples, record.audio.sample_rate)


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
