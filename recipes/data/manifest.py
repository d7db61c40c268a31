"""Utterance records and JSONL manifests (the NeMo convention: audio_filepath, duration, text)."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from recipes.data.audio import BadAudioError, read_audio
from recipes.data.text import normalize_text
from recipes.utils.files import partial_path as partial_path_for

log = logging.getLogger(__name__)
_SHOWN = 5  # utterances named in one log line or error message


@dataclasses.dataclass(frozen=True)
class Utterance:
    """One utterance: its id, audio file, duration in seconds and raw transcript.

    ``source`` says where the record was read (``"<file>, line <n>"`` of a manifest or a
    LibriSpeech transcript file) so that errors about the utterance can name it; it is not part
    of the record's identity and is not written to manifests.
    """

    id: str
    audio_filepath: Path
    duration: float
    text: str
    source: str = dataclasses.field(default="", compare=False)

    def describe(self) -> str:
        """Return ``utterance '<id>' (<source>)``, the way error messages name an utterance."""
        return f"utterance {self.id!r}" + (f" ({self.source})" if self.source else "")

    def read_audio(self) -> tuple[np.ndarray, int]:
        """Return the utterance's float32 mono samples in [-1, 1] and their sample rate.

        Here the whole file ``audio_filepath`` (:func:`recipes.data.audio.read_audio`); records
        of other sources (lhotse cuts) override it. Raises :class:`BadAudioError`.
        """
        return read_audio(self.audio_filepath)


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

    Each line holds ``audio_filepath``, ``duration``, ``text`` and ``id``. The audio path is
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
        lines.append(json.dumps({"audio_filepath": str(audio), "duration": utterance.duration,
                                 "text": utterance.text, "id": utterance.id}) + "\n")
    partial_path = partial_path_for(path)
    partial_path.write_text("".join(lines))
    os.replace(partial_path, path)
    return path


def read_manifest(path: str | os.PathLike, drop_empty: bool = True) -> list[Utterance]:
    """Return the utterances of the JSONL manifest at ``path``.

    Relative ``audio_filepath`` values are taken relative to the manifest's folder; a line without
    ``id`` gets its audio file's stem. A missing key or a bad line raises a ValueError naming the
    file and line. With ``drop_empty``, utterances whose transcript normalises to nothing are
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
                utterances.append(Utterance(
                    id=str(entry.get("id", audio.stem)),
                    audio_filepath=audio if audio.is_absolute() else path.parent / audio,
                    duration=float(entry["duration"]),
                    text=str(entry["text"]),
                    source=f"manifest {path}, line {number}",
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


class ManifestCorpus:
    """A corpus given as JSONL manifests per part (``train``, ``dev``, ``test``).

    Relative manifest paths are taken relative to ``root``, which also holds the derived files
    (tokenizer, normalisation statistics).
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
        """Check every manifest: it exists, parses, and every audio file it lists exists.

        Manifests are never rewritten: utterances with empty transcripts are dropped (and
        logged) whenever a manifest is read. A missing audio file raises :class:`BadAudioError`
        naming the utterances and the manifest, or, with ``skip_bad_audio``, is logged (the
        data loader then leaves it out). Unreadable content is found when the file is read.
        """
        for part, paths in self._manifests.items():
            for path in paths:
                if not path.is_file():
                    raise ValueError(f"{part}: no such manifest {path}")
                missing = [u for u in read_manifest(path) if not Path(u.audio_filepath).is_file()]
                if not missing:
                    continue
                listed = "; ".join(f"{u.describe()}: {u.audio_filepath}" for u in missing[:_SHOWN])
                message = (f"manifest {path}: {len(missing)} audio file(s) missing: {listed}"
                           f"{'; ...' if len(missing) > _SHOWN else ''}")
                if not skip_bad_audio:
                    raise BadAudioError(message)
                log.warning("%s (skip_bad_audio: they are left out when read)", message)

    def manifests(self, part: str) -> list[Path]:
        """Return the manifest paths of ``part`` (``train``, ``dev`` or ``test``)."""
        if part not in self._manifests:
            raise ValueError(f"part must be one of {sorted(self._manifests)}, got {part!r}")
        return list(self._manifests[part])
