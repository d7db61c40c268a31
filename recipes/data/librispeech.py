"""Reader of the LibriSpeech directory layout (a real LibriSpeech copy or the synthetic corpus).

``<root>/<split>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt`` lists ``<utt-id> <TEXT>``
lines; the audio of each is ``<utt-id>.flac`` in the same folder.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from recipes.data.audio import BadAudioError, audio_duration
from recipes.data.manifest import Utterance, drop_empty_transcripts, write_manifest

log = logging.getLogger(__name__)


def read_librispeech_split(split_dir: str | os.PathLike, skip_bad_audio: bool = False,
                           ) -> tuple[list[Utterance], int]:
    """Return the utterances of one LibriSpeech split folder, sorted by id, and a skip count.

    Durations come from the audio headers. A listed file that is missing or unreadable raises
    :class:`BadAudioError` naming it, the utterance and its transcript file, or, with
    ``skip_bad_audio``, is left out and counted. Utterances whose transcript normalises to
    nothing are left out with a warning naming them (:func:`drop_empty_transcripts`).
    """
    split_dir = Path(split_dir)
    if not split_dir.is_dir():
        raise ValueError(f"split_dir: no such folder {split_dir}")
    transcripts = sorted(split_dir.glob("*/*/*.trans.txt"))
    if not transcripts:
        raise ValueError(f"split_dir: {split_dir} holds no <speaker>/<chapter>/*.trans.txt")
    utterances, skipped = [], 0
    for transcript in transcripts:
        for number, line in enumerate(transcript.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            utt_id, _, text = line.strip().partition(" ")
            audio = transcript.parent / f"{utt_id}.flac"
            source = f"{transcript}, line {number}"
            try:
                duration = audio_duration(audio)
            except BadAudioError as error:
                if not skip_bad_audio:
                    raise BadAudioError(f"utterance {utt_id!r} ({source}): {error}") from error
                log.warning("skipping utterance %r (%s): %s", utt_id, source, error)
                skipped += 1
                continue
            utterances.append(Utterance(utt_id, audio, duration, text, source=source))
    kept = drop_empty_transcripts(sorted(utterances, key=lambda u: u.id), f"folder {split_dir}")
    return kept, skipped


def is_librispeech_split(folder: str | os.PathLike) -> bool:
    """Return whether ``folder`` holds a split in the LibriSpeech layout (a
    ``<speaker>/<chapter>/*.trans.txt``; the search stops at the first one found)."""
    return next(Path(folder).glob("*/*/*.trans.txt"), None) is not None


class LibriSpeechCorpus:
    """A corpus in the LibriSpeech layout under ``root``, with named splits per part.

    :meth:`prepare` writes one manifest per configured split, ``<cache_dir>/manifests/<split>.jsonl``,
    once; later runs reuse it. Any other split folder under ``root`` can be read by name
    (:meth:`split_names`, :meth:`split_manifests`; decode.py's ``split=``), its manifest written
    on first use. ``cache_dir`` (default ``root``) also receives the tokenizer and the
    normalisation statistics, so a read-only LibriSpeech copy can have them elsewhere.
    """

    def __init__(self, root: str | os.PathLike, train_splits: Sequence[str] = ("train-clean-100",),
                 dev_splits: Sequence[str] = ("dev-clean",),
                 test_splits: Sequence[str] = ("test-clean",),
                 cache_dir: str | os.PathLike | None = None) -> None:
        self.root = Path(root)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else self.root
        self._splits = {}
        for part, splits in (("train", train_splits), ("dev", dev_splits), ("test", test_splits)):
            if isinstance(splits, (str, os.PathLike)):
                raise ValueError(f"{part}_splits must be a list of split names, got {splits!r}")
            self._splits[part] = list(splits)

    def manifest_path(self, split: str) -> Path:
        """Return where the manifest of ``split`` is kept."""
        return self.cache_dir / "manifests" / f"{split}.jsonl"

    def prepare(self, skip_bad_audio: bool = False) -> None:
        """Write the manifest of every split that has none yet."""
        for splits in self._splits.values():
            for split in splits:
                self._write_manifest(split, skip_bad_audio)

    def _write_manifest(self, split: str, skip_bad_audio: bool) -> None:
        path = self.manifest_path(split)
        if path.exists():
            return
        utterances, skipped = read_librispeech_split(self.root / split, skip_bad_audio)
        write_manifest(path, utterances)
        log.info("wrote %s: %d utterances, %.2f h%s", path, len(utterances),
                 sum(u.duration for u in utterances) / 3600,
                 f", {skipped} unreadable files skipped" if skipped else "")

    def manifests(self, part: str) -> list[Path]:
        """Return the manifest paths of ``part`` (``train``, ``dev`` or ``test``)."""
        if part not in self._splits:
            raise ValueError(f"part must be one of {sorted(self._splits)}, got {part!r}")
        return [self.manifest_path(split) for split in self._splits[part]]

    def split_names(self) -> list[str]:
        """Return the names of every split this corpus can read, sorted.

        They are the configured splits of every part and every folder of ``root`` in the
        LibriSpeech layout (holding ``<speaker>/<chapter>/*.trans.txt``), e.g. ``train-clean-100``,
        ``dev-clean``, ``dev-other``, ``test-clean``, ``test-other``.
        """
        names = {split for splits in self._splits.values() for split in splits}
        if self.root.is_dir():
            names.update(folder.name for folder in self.root.iterdir()
                         if folder.is_dir() and is_librispeech_split(folder))
        return sorted(names)

    def split_manifests(self, name: str, skip_bad_audio: bool = False) -> list[Path]:
        """Return the manifest of the split ``name`` (one of :meth:`split_names`), as a one-item
        list, writing it first if it does not exist yet (like :meth:`prepare`).

        An unknown name raises a ValueError naming it and the known ones.
        """
        known = self.split_names()
        if name not in known:
            raise ValueError(f"split {name!r} is not a split of the corpus in {self.root}; known splits: "
                             f"{', '.join(known) or 'none'}")
        self._write_manifest(name, skip_bad_audio)
        return [self.manifest_path(name)]
