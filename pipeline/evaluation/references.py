"""Reference annotations in the field's standard formats, read from one folder (local or a storage URL).

- Speakers: RTTM (`SPEAKER <file> <chan> <start> <duration> <NA> <NA> <speaker> <NA> <NA>`), any number of
  `*.rttm` files, each line naming its recording; optional UEM (`<file> <chan> <start> <end>`, `*.uem`)
  limiting where speech is scored.
- Transcripts: a Kaldi data folder's `text` (`<utterance> <words ...>`, with `segments`
  (`<utterance> <file> <start> <end>`) mapping utterances to recordings; without it the utterance is the
  recording), NIST STM (`<file> <chan> <speaker> <start> <end> [<label>] <words ...>`, `*.stm`), or one
  `<file>.txt` per recording.

A recording is named by its file id, which is matched to the dataset's sources by file name without the
extension (`/data/raw/ES2004a.wav` is `ES2004a`), as RTTM file ids are, or by a dotted prefix of it
(`ES2004a.Mix-Headset.wav` is `ES2004a` too when the references name no `ES2004a.Mix-Headset`).
"""
from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from typing import Collection, Optional

from pipeline.shards.storage import storage_for

STM_IGNORED = "ignore_time_segment_in_scoring"


class ReferenceError(Exception):
    """A reference folder or file that cannot be read; the message names the file and line."""


@dataclass(frozen=True)
class SpeakerTurn:
    start: float
    end: float
    speaker: str


@dataclass
class Reference:
    """What is known about one recording: speaker turns, the scored regions (None: all of it), the words
    (None: no transcript), in time order where times are known."""
    turns: list[SpeakerTurn] = field(default_factory=list)
    uem: Optional[list[tuple[float, float]]] = None
    text: Optional[str] = None
    has_speakers: bool = False


def recording_name(source: str, known: Collection[str] = ()) -> str:
    """The name references use for a source: its file name without the extension, or, where that is not
    among `known` names, the shortest dotted prefix that is (AMI's `ES2004a.Mix-Headset.wav` is `ES2004a`)."""
    base = posixpath.basename(source.rstrip("/"))
    stem = base.rsplit(".", 1)[0] if "." in base else base
    if stem in known or not known:
        return stem
    parts = stem.split(".")
    return next((".".join(parts[:n]) for n in range(1, len(parts)) if ".".join(parts[:n]) in known), stem)


def _fields(text: str, path: str, minimum: int):
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith(";;") or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) < minimum:
            raise ReferenceError(f"{path}:{number}: expected at least {minimum} fields, got {line.strip()!r}")
        yield number, parts


def _seconds(value: str, path: str, number: int) -> float:
    try:
        return float(value)
    except ValueError:
        raise ReferenceError(f"{path}:{number}: {value!r} is not a time in seconds") from None


def read_rttm(text: str, path: str = "rttm") -> dict[str, list[SpeakerTurn]]:
    turns: dict[str, list[SpeakerTurn]] = {}
    for number, parts in _fields(text, path, 8):
        if parts[0] != "SPEAKER":
            continue  # RTTM's other record types (SPKR-INFO, LEXEME, ...) say nothing about who spoke when
        start, duration = _seconds(parts[3], path, number), _seconds(parts[4], path, number)
        turns.setdefault(parts[1], []).append(SpeakerTurn(start, start + duration, parts[7]))
    return turns


def read_uem(text: str, path: str = "uem") -> dict[str, list[tuple[float, float]]]:
    regions: dict[str, list[tuple[float, float]]] = {}
    for number, parts in _fields(text, path, 4):
        regions.setdefault(parts[0], []).append((_seconds(parts[2], path, number), _seconds(parts[3], path, number)))
    return regions


def read_kaldi_text(text: str, segments: Optional[str] = None, path: str = "text") -> dict[str, str]:
    """Words per recording: utterances joined in time order (by `segments`), or the utterance is the recording."""
    utterances = {parts[0]: " ".join(parts[1:]) for _, parts in _fields(text, path, 1)}
    if segments is None:
        return utterances
    placed: dict[str, list[tuple[float, str]]] = {}
    for number, parts in _fields(segments, posixpath.join(posixpath.dirname(path), "segments"), 4):
        if parts[0] in utterances:
            placed.setdefault(parts[1], []).append((_seconds(parts[2], path, number), utterances[parts[0]]))
    return {name: " ".join(words for _, words in sorted(pieces)) for name, pieces in placed.items()}


def read_stm(text: str, path: str = "stm") -> dict[str, str]:
    placed: dict[str, list[tuple[float, str]]] = {}
    for number, parts in _fields(text, path, 5):
        words = parts[5:]
        if words and words[0].startswith("<") and words[0].endswith(">"):
            words = words[1:]  # the optional <label> field
        if STM_IGNORED in words:
            continue
        placed.setdefault(parts[0], []).append((_seconds(parts[3], path, number), " ".join(words)))
    return {name: " ".join(w for _, w in sorted(pieces) if w) for name, pieces in placed.items()}


def load_references(folder: str, storage_options=None) -> dict[str, Reference]:
    """Every recording the folder's RTTM, UEM and transcript files name."""
    store = storage_for(folder, storage_options)
    names = store.list_names(store.root)
    if not names:
        raise ReferenceError(f"reference folder {folder} is missing or empty")
    references: dict[str, Reference] = {}

    def read(name: str) -> str:
        return store.read_bytes(store.join(store.root, name)).decode("utf-8")

    def at(name: str) -> Reference:
        return references.setdefault(name, Reference())

    for base in names:
        if base.endswith(".rttm"):
            for name, turns in read_rttm(read(base), base).items():
                at(name).turns += turns
                at(name).has_speakers = True
    for base in names:
        if base.endswith(".uem"):
            for name, regions in read_uem(read(base), base).items():
                at(name).uem = (at(name).uem or []) + regions
    transcripts: dict[str, str] = {}
    if "text" in names:
        transcripts.update(read_kaldi_text(read("text"), read("segments") if "segments" in names else None, "text"))
    for base in names:
        if base.endswith(".stm"):
            transcripts.update(read_stm(read(base), base))
        elif base.endswith(".txt"):
            transcripts[base[:-len(".txt")]] = " ".join(read(base).split())
    for name, words in transcripts.items():
        at(name).text = words
    for reference in references.values():
        reference.turns.sort(key=lambda t: (t.start, t.end))
    if not references:
        raise ReferenceError(f"no references in {folder}: expected *.rttm, *.uem, *.stm, *.txt or a Kaldi text file")
    return references
