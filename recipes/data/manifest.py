"""Utterance records and JSONL manifests (the NeMo convention: audio_filepath, duration, text)."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from recipes.data.audio import SEGMENT_END_TOLERANCE, BadAudioError, audio_duration, read_audio
from recipes.data.text import normalize_text
from recipes.utils.files import partial_path as partial_path_for

log = logging.getLogger(__name__)
_SHOWN = 5  # utterances named in one log line or error message


@dataclasses.dataclass(frozen=True)
class Utterance:
    """One utterance: its id, audio file, duration in seconds and raw transcript.

    ``offset`` (seconds) makes it the segment ``[offset, offset + duration]`` of its audio file,
    and only that segment is read; ``None`` means the whole file (``duration`` is then its length).

    ``source`` says where the record was read (``"<file>, line <n>"`` of a manifest or a
    LibriSpeech transcript file) so that errors about the utterance can name it; it is not part
    of the record's identity and is not written to manifests.
    """

    id: str
    audio_filepath: Path
    duration: float
    text: str
    source: str = dataclasses.field(default="", compare=False)
    offset: float | None = None

    def describe(self) -> str:
        """Return ``utterance '<id>' (<source>)``, the way error messages name an utterance."""
        return f"utterance {self.id!r}" + (f" ({self.source})" if self.source else "")

    def read_audio(self) -> tuple[np.ndarray, int]:
        """Return the utterance's float32 mono samples in [-1, 1] and their sample rate.

        Here the file ``audio_filepath``, whole or only the segment ``[offset, offset + duration]``
        (:func:`recipes.data.audio.read_audio`); records of other sources (lhotse cuts) override
        it. Raises :class:`BadAudioError`.
        """
        return read_audio(self.audio_filepath, self.offset, self.duration if self.offset is not None else None)


def drop_empty_transcripts(utterances: Sequence[Utterance], origin: str) -> list[Utterance]:
    """Return ``utterances`` without those whose transcript normalises to nothing.

    Such an utterance gives a loss no target and WER no reference word. The number dropped and
    the first few of them are logged as a warning naming ``origin`` (a manifest or a folder).
    """
    kept, dropped = [], []
    for utterance in utterances:
        (kept if normalize_text(utterance.text) else dropped).append(utterance)
    if dropped:
        log.warning("%s: dropped %d of %d utterances whose transcript is empty after "
                    "normalisation: %s%s", origin, len(dropped), len(utterances),
                    ", ".join(u.describe() for u in dropped[:_SHOWN]),
                    ", ..." if len(dropped) > _SHOWN else "")
    return kept


def write_manifest(path: str | os.PathLike, utterances: Iterable[Utterance]) -> Path:
    """Write ``utterances`` as JSONL to ``path`` atomically and return ``path``.

    Each line holds ``audio_filepath``, ``duration``, ``text``, ``id`` and, for a segment,
    ``offset``. The audio path is
    relative to the manifest's folder when the audio lies under that folder's parent (a corpus
    root holding ``manifests/``), so that the corpus can move; otherwise it is absolute.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    base = path.parent.resolve()
    lines = []
    for utterance in utterances:
        audio = Path(utterance.audio_filepath).resolve()
        audio = Path(os.path.relpath(audio, base)) if audio.is_relative_to(base.parent) else audio
        entry = {"audio_filepath": str(audio), "duration": utterance.duration, "text": utterance.text,
                 "id": utterance.id}
        if utterance.offset is not None:
            entry["offset"] = utterance.offset
        lines.append(json.dumps(entry) + "\n")
    partial_path = partial_path_for(path)
    partial_path.write_text("".join(lines))
    os.replace(partial_path, path)
    return path


def _seconds(entry: dict, key: str) -> float:
    """``entry[key]`` as a float; a ValueError naming ``key`` when it is not a number."""
    try:
        return float(entry[key])
    except (TypeError, ValueError) as error:
        raise ValueError(f"{key} must be a number of seconds, got {entry[key]!r}") from error


def _segment_offset(entry: dict, duration: float) -> float | None:
    """The ``offset`` of a manifest entry (None without one), checked with its ``duration``."""
    if "offset" not in entry:
        return None
    offset = _seconds(entry, "offset")
    if not (math.isfinite(offset) and offset >= 0 and math.isfinite(duration) and duration > 0):
        raise ValueError(f"a segment needs offset >= 0 and duration > 0 seconds, got offset={entry['offset']!r}, "
                         f"duration={entry['duration']!r}")
    return offset


def segment_id(stem: str, offset: float | None, duration: float) -> str:
    """The id of a manifest line without ``id``: the audio file's stem, and for a segment its start
    and end in milliseconds, ``<stem>-<start ms>-<end ms>`` (``long-00001500-00003500``)."""
    if offset is None:
        return stem
    return f"{stem}-{round(offset * 1000):08d}-{round((offset + duration) * 1000):08d}"


def read_manifest(path: str | os.PathLike, drop_empty: bool = True) -> list[Utterance]:
    """Return the utterances of the JSONL manifest at ``path``.

    Relative ``audio_filepath`` values are taken relative to the manifest's folder. A line with
    ``offset`` (seconds, NeMo's convention) is the segment of ``duration`` seconds from there (only
    that segment is read); one without is the whole file. A line without ``id`` gets its audio
    file's stem, plus the segment's start and end for a segment (:func:`segment_id`). A missing
    key, a bad value (a negative offset, a segment's duration <= 0) or a bad line raises a
    ValueError naming the file and line. With ``drop_empty``, utterances whose transcript normalises to nothing are
    left out, with a warning (:func:`drop_empty_transcripts`).
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"manifest: no such file {path}")
    utterances = []
    with path.open() as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                audio = Path(entry["audio_filepath"])
                duration = _seconds(entry, "duration")
                offset = _segment_offset(entry, duration)
                utterances.append(Utterance(
                    id=str(entry["id"]) if "id" in entry else segment_id(audio.stem, offset, duration),
                    audio_filepath=audio if audio.is_absolute() else path.parent / audio,
                    duration=duration,
                    text=str(entry["text"]),
                    source=f"manifest {path}, line {number}",
                    offset=offset,
                ))
            except (ValueError, KeyError, TypeError) as error:
                raise ValueError(f"manifest {path}, line {number}: {error!r}") from error
    return drop_empty_transcripts(utterances, f"manifest {path}") if drop_empty else utterances


def read_manifests(paths: Sequence[str | os.PathLike]) -> list[Utterance]:
    """Return the utterances of every manifest in ``paths``, in order; ids must be unique."""
    utterances = [u for path in paths for u in read_manifest(path)]
    seen: dict[str, Utterance] = {}
    for utterance in utterances:
        if utterance.id in seen:
            raise ValueError(f"manifests {list(map(str, paths))}: utterance id {utterance.id!r} "
                             f"occurs twice: {seen[utterance.id].source} and {utterance.source}")
        seen[utterance.id] = utterance
    return utterances


def _length(audio: Path, lengths: dict[Path, float | None]) -> float | None:
    """Seconds of ``audio`` from its header, memoised in ``lengths``; None when unreadable (the
    loader reports it when it reads the file)."""
    if audio not in lengths:
        try:
            lengths[audio] = audio_duration(audio)
        except BadAudioError:
            lengths[audio] = None
    return lengths[audio]


class ManifestCorpus:
    """A corpus given as JSONL manifests per part (``train``, ``dev``, ``test``).

    Relative manifest paths are taken relative to ``root``, which also holds the derived files
    (tokenizer, normalisation statistics). Each configured manifest can also be read alone by
    its file stem (:meth:`split_names`, :meth:`split_manifests`; decode.py's ``split=``).
    """

    def __init__(self, root: str | os.PathLike, train: Sequence[str], dev: Sequence[str],
                 test: Sequence[str]) -> None:
        self.root = Path(root)
        self.cache_dir = self.root
        self._manifests = {}
        for part, paths in (("train", train), ("dev", dev), ("test", test)):
            if isinstance(paths, (str, os.PathLike)):
                raise ValueError(f"{part} must be a list of manifest paths, got {paths!r}")
            self._manifests[part] = [self.root / path for path in paths]

    def prepare(self, skip_bad_audio: bool = False) -> None:
        """Check every manifest: it exists, parses, every audio file it lists exists, and every
        segment (a line with ``offset``) ends within its file (read from the audio header, once
        per file; up to :data:`~recipes.data.audio.SEGMENT_END_TOLERANCE` seconds past the end
        are cut when read).

        Manifests are never rewritten: utterances with empty transcripts are dropped (and
        logged) whenever a manifest is read. A missing audio file raises :class:`BadAudioError`
        naming the utterances and the manifest, or, with ``skip_bad_audio``, is logged (the
        data loader then leaves it out); so does a segment past the end of its file. Unreadable
        content is found when the file is read.
        """
        lengths: dict[Path, float | None] = {}
        for part, paths in self._manifests.items():
            for path in paths:
                if not path.is_file():
                    raise ValueError(f"{part}: no such manifest {path}")
                utterances = read_manifest(path)
                missing = [u for u in utterances if not Path(u.audio_filepath).is_file()]
                if missing:
                    listed = "; ".join(f"{u.describe()}: {u.audio_filepath}" for u in missing[:_SHOWN])
                    self._bad(f"manifest {path}: {len(missing)} audio file(s) missing: {listed}"
                              f"{'; ...' if len(missing) > _SHOWN else ''}", skip_bad_audio)
                beyond = [(u, length) for u in utterances if u.offset is not None and u not in missing
                          and (length := _length(Path(u.audio_filepath), lengths)) is not None
                          and (u.offset >= length or u.offset + u.duration > length + SEGMENT_END_TOLERANCE)]
                if beyond:
                    listed = "; ".join(f"{u.describe()}: offset {u.offset} + duration {u.duration} > {length}s of "
                                       f"{u.audio_filepath}" for u, length in beyond[:_SHOWN])
                    self._bad(f"manifest {path}: {len(beyond)} segment(s) reach past the end of their audio file: "
                              f"{listed}{'; ...' if len(beyond) > _SHOWN else ''}", skip_bad_audio)

    @staticmethod
    def _bad(message: str, skip_bad_audio: bool) -> None:
        if not skip_bad_audio:
            raise BadAudioError(message)
        log.warning("%s (skip_bad_audio: they are left out when read)", message)

    def manifests(self, part: str) -> list[Path]:
        """Return the manifest paths of ``part`` (``train``, ``dev`` or ``test``)."""
        if part not in self._manifests:
            raise ValueError(f"part must be one of {sorted(self._manifests)}, got {part!r}")
        return list(self._manifests[part])

    def _by_stem(self) -> dict[str, list[Path]]:
        """Every configured manifest (of any part) by its file stem."""
        named: dict[str, list[Path]] = {}
        for paths in self._manifests.values():
            for path in paths:
                if path not in named.setdefault(path.stem, []):
                    named[path.stem].append(path)
        return named

    def split_names(self) -> list[str]:
        """Return the file stems of the manifests of every part, sorted: the names by which
        :meth:`split_manifests` reads one manifest alone (``test-other`` for ``test-other.jsonl``)."""
        return sorted(self._by_stem())

    def split_manifests(self, name: str, skip_bad_audio: bool = False) -> list[Path]:
        """Return the configured manifest whose file stem is ``name``, as a one-item list.

        An unknown name, or a stem that two different configured manifest files share, raises a
        ValueError naming it and the known names (or the files).
        """
        paths = self._by_stem().get(name, [])
        if len(paths) > 1:
            raise ValueError(f"split {name!r} names several manifests ({', '.join(map(str, paths))}): rename one "
                             f"so that every manifest has its own file stem")
        if not paths:
            raise ValueError(f"split {name!r} is not one of the configured manifests; known splits (manifest file "
                             f"stems): {', '.join(self.split_names()) or 'none'}")
        return paths
