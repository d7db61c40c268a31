"""lhotse CutSet manifests as a corpus: ``python train.py data=lhotse data.corpus.train_cuts=...``.

The cut manifests are read by lhotse itself (``CutSet.from_file``: ``.jsonl``, ``.jsonl.gz``,
``.json``...) and every cut's audio by ``cut.load_audio()``, which applies the cut's offset,
duration and channels. Everything after that is the recipe's own: resampling to 16 kHz, speed
perturbation, fbank, CMVN, tokenizer and the duration-bucketing sampler (whose state is
checkpointed for exact resume, see ``ASRDataModule``).

Transcript rule: a cut's text is the texts of its supervisions joined by single spaces, in
order of their start (then id). A cut without supervisions, or with a supervision without
text, is an error naming the cut and its manifest. Supervisions are taken whole, as lhotse
keeps them with the cut; those that reach outside the cut are counted in a warning (trim the
cuts to their supervisions beforehand, ``cuts.trim_to_supervisions()``, if that is not meant).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from recipes.data.audio import BadAudioError
from recipes.data.manifest import Utterance, drop_empty_transcripts

log = logging.getLogger(__name__)
_SHOWN = 5  # cuts named in one log line or error message
_OUTSIDE_TOLERANCE_S = 0.01  # supervisions may overhang their cut by rounding


@dataclasses.dataclass(frozen=True)
class CutUtterance(Utterance):
    """An utterance whose audio is a lhotse cut (read with ``cut.load_audio()``).

    ``audio_filepath`` names the cut's first audio source (for messages); the cut itself says
    which part and channels of which recordings make the audio.
    """

    cut: Any = dataclasses.field(default=None, compare=False, repr=False)

    def read_audio(self) -> tuple[np.ndarray, int]:
        """Return the cut's float32 samples (channels averaged) and the cut's sample rate."""
        try:
            samples = self.cut.load_audio()
        except Exception as error:  # lhotse and its audio backends raise many types
            raise BadAudioError(f"cannot read audio of cut {self.cut.id!r} from {self.audio_filepath}: "
                                f"{type(error).__name__}: {error}") from error
        samples = np.asarray(samples, dtype=np.float32)
        if samples.ndim == 2:
            samples = samples.mean(axis=0)
        if samples.size == 0:
            raise BadAudioError(f"audio of cut {self.cut.id!r} from {self.audio_filepath} is empty")
        return samples, int(self.cut.sampling_rate)


def _sources(cut) -> list:
    """The lhotse ``AudioSource`` objects ``cut`` reads (through mixes and padding)."""
    if getattr(cut, "tracks", None) is not None:  # a MixedCut
        return [source for track in cut.tracks for source in _sources(track.cut)]
    recording = getattr(cut, "recording", None)
    return list(recording.sources) if recording is not None else []


def _audio_path(cut) -> Path:
    sources = _sources(cut)
    if not sources:
        return Path(f"<cut {cut.id} has no audio>")
    first = sources[0]
    return Path(first.source) if first.type == "file" else Path(f"<{first.type} source of recording of {cut.id}>")


def cut_transcript(cut, where: str) -> str:
    """Return ``cut``'s text: its supervisions' texts joined by spaces, in order of start.

    Raises ValueError naming the cut and ``where`` for a cut without supervisions or with a
    supervision without text.
    """
    supervisions = sorted(cut.supervisions, key=lambda s: (s.start, s.id))
    if not supervisions:
        raise ValueError(f"cut {cut.id!r} ({where}) has no supervision, so no transcript: give every cut "
                         f"a SupervisionSegment with text, or leave the cut out")
    for supervision in supervisions:
        if supervision.text is None:
            raise ValueError(f"cut {cut.id!r} ({where}): supervision {supervision.id!r} has no text")
    return " ".join(s.text.strip() for s in supervisions if s.text.strip())


def read_cuts(path: str | os.PathLike, drop_empty: bool = True) -> list[CutUtterance]:
    """Return the utterances of the lhotse CutSet manifest at ``path`` (``CutSet.from_file``).

    Ids are the cut ids, durations the cut durations and texts :func:`cut_transcript`. Cuts with
    no audio (feature-only cuts) and unreadable files raise ValueError naming the file (and the
    cut). With ``drop_empty``, cuts whose text normalises to nothing are left out with a warning.
    """
    from lhotse import CutSet

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"lhotse cuts: no such file {path}")
    try:
        cuts = CutSet.from_file(path)
    except Exception as error:  # lhotse raises many types for unreadable manifests
        raise ValueError(f"lhotse cuts {path}: cannot read it as a CutSet: {type(error).__name__}: {error}") \
            from error
    utterances, outside = [], []
    try:
        for number, cut in enumerate(cuts, start=1):
            where = f"lhotse cuts {path}, cut {number}"
            if not cut.has_recording:
                raise ValueError(f"cut {cut.id!r} ({where}) has no recording (audio)")
            text = cut_transcript(cut, where)
            if any(s.start < -_OUTSIDE_TOLERANCE_S or s.end > cut.duration + _OUTSIDE_TOLERANCE_S
                   for s in cut.supervisions):
                outside.append(cut.id)
            utterances.append(CutUtterance(id=str(cut.id), audio_filepath=_audio_path(cut),
                                           duration=float(cut.duration), text=text, source=where, cut=cut))
    except (KeyError, TypeError, AttributeError) as error:  # malformed entries, found while iterating
        raise ValueError(f"lhotse cuts {path}, cut {len(utterances) + 1}: {type(error).__name__}: {error}") \
            from error
    if outside:
        log.warning("lhotse cuts %s: %d of %d cuts have supervisions reaching outside the cut (their whole "
                    "text is used): %s%s", path, len(outside), len(utterances), ", ".join(outside[:_SHOWN]),
                    ", ..." if len(outside) > _SHOWN else "")
    return drop_empty_transcripts(utterances, f"lhotse cuts {path}") if drop_empty else utterances


def read_cut_manifests(paths: Sequence[str | os.PathLike]) -> list[CutUtterance]:
    """Return the utterances of every CutSet in ``paths``, in order; cut ids must be unique."""
    utterances = [u for path in paths for u in read_cuts(path)]
    seen: dict[str, Utterance] = {}
    for utterance in utterances:
        if utterance.id in seen:
            raise ValueError(f"lhotse cuts {list(map(str, paths))}: cut id {utterance.id!r} occurs twice: "
                             f"{seen[utterance.id].source} and {utterance.source}")
        seen[utterance.id] = utterance
    return utterances


def _as_paths(part: str, paths) -> list[str]:
    if paths is None:
        return []
    if isinstance(paths, (str, os.PathLike)):
        return [paths]
    paths = list(paths)
    if not all(isinstance(p, (str, os.PathLike)) for p in paths):
        raise ValueError(f"{part}_cuts must be a path or a list of paths, got {paths!r}")
    return paths


class LhotseCorpus:
    """A corpus given as lhotse CutSet manifests per part (``train_cuts``, ``dev_cuts``, ``test_cuts``).

    Each is one path or a list of paths; relative paths are taken from ``root``, which also
    receives the derived files (tokenizer, CMVN statistics). Audio paths inside the cuts are
    lhotse's business (relative ones are taken from the working directory, as lhotse does).
    """

    def __init__(self, root: str | os.PathLike, train_cuts, dev_cuts, test_cuts) -> None:
        self.root = Path(root)
        self.cache_dir = self.root
        self._cuts = {part: [self.root / p for p in _as_paths(part, paths)]
                      for part, paths in (("train", train_cuts), ("dev", dev_cuts), ("test", test_cuts))}

    def cut_files(self, part: str) -> list[Path]:
        """Return the CutSet manifest paths of ``part`` (``train``, ``dev`` or ``test``)."""
        if part not in self._cuts:
            raise ValueError(f"part must be one of {sorted(self._cuts)}, got {part!r}")
        return list(self._cuts[part])

    def utterances(self, part: str) -> list[CutUtterance]:
        """Return the utterances of ``part`` (read by lhotse on every call; nothing is cached)."""
        return read_cut_manifests(self.cut_files(part))

    def prepare(self, skip_bad_audio: bool = False) -> None:
        """Check every CutSet: it exists, parses, and every audio file its cuts read exists.

        Nothing is written. A missing audio file raises :class:`BadAudioError` naming the cuts and
        the manifest, or, with ``skip_bad_audio``, is logged (the data loader then leaves the cut
        out). Unreadable content is found when the audio is read.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        for part, paths in self._cuts.items():
            for path in paths:
                missing = [(u, Path(s.source)) for u in read_cuts(path) for s in _sources(u.cut)
                           if s.type == "file" and not Path(s.source).is_file()]
                if not missing:
                    continue
                listed = "; ".join(f"{u.describe()}: {file}" for u, file in missing[:_SHOWN])
                message = (f"{part}: lhotse cuts {path}: {len(missing)} audio file(s) missing: {listed}"
                           f"{'; ...' if len(missing) > _SHOWN else ''}")
                if not skip_bad_audio:
                    raise BadAudioError(message)
                log.warning("%s (skip_bad_audio: they are left out when read)", message)
