"""Additive noise augmentation from a folder of noise recordings (the MUSAN layout or any folder).

``data.noise={dir: /data/musan, snr_db: [0, 20], prob: 0.5}`` mixes, into each training utterance
with probability ``prob``, a segment of a noise file chosen at random, looped or cropped to the
utterance's length, at an SNR drawn uniformly from ``snr_db``. The draws come from a generator that
the dataset seeds with (seed, epoch, utterance id), so the noise an utterance gets does not depend
on the data loader's workers or order, and a resumed run sees the noise of an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import soundfile
import torch

from recipes.data.features import SAMPLE_RATE, resample

EXTENSIONS = (".wav", ".flac")


class NoiseError(ValueError):
    """A noise folder or file cannot be used; the message names it."""


@dataclasses.dataclass(frozen=True)
class NoiseDraw:
    """What one utterance gets: the noise file, the SNR and where in the file the segment starts
    (a fraction of its length)."""

    path: Path
    snr_db: float
    start: float


def find_noise_files(folder: str | os.PathLike) -> list[Path]:
    """Return the noise files under ``folder``, sorted.

    The MUSAN layout (``<folder>/noise/**``, leaving out ``music/`` and ``speech/``) when
    ``<folder>/noise`` is a folder, otherwise every file under ``folder``; ``.wav`` and ``.flac``
    files at any depth. A missing folder or one without such files raises :class:`NoiseError`.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise NoiseError(f"noise dir: no such folder {folder}")
    searched = folder / "noise" if (folder / "noise").is_dir() else folder
    files = sorted(p for p in searched.rglob("*") if p.suffix.lower() in EXTENSIONS and p.is_file())
    if not files:
        raise NoiseError(f"noise dir: no {'/'.join(EXTENSIONS)} files under {searched}")
    return files


class AdditiveNoise:
    """Mix noise recordings into waveforms at a random SNR (see the module docstring).

    ``dir``: a MUSAN copy (its ``noise/`` part is used) or any folder of ``.wav``/``.flac``
    files; ``snr_db``: ``[low, high]`` in dB; ``prob``: the chance that an utterance is noised.
    The SNR is the ratio of the utterance's mean power to the added noise's, over the whole
    utterance. The mix is not clipped (features are computed from it directly). An utterance or a
    noise segment that is all zeros is left as it is (no SNR is defined).
    """

    def __init__(self, dir: str | os.PathLike, snr_db: Sequence[float] = (0.0, 20.0), prob: float = 0.5) -> None:
        snr_db = list(snr_db) if not isinstance(snr_db, (str, bytes)) else snr_db
        if not isinstance(snr_db, list) or len(snr_db) != 2 or not all(math.isfinite(float(x)) for x in snr_db) \
                or float(snr_db[0]) > float(snr_db[1]):
            raise ValueError(f"snr_db must be [low, high] in dB with low <= high, got {snr_db!r}")
        if not 0.0 <= float(prob) <= 1.0:
            raise ValueError(f"prob must be in [0, 1], got {prob!r}")
        self.dir = Path(dir)
        self.snr_db = (float(snr_db[0]), float(snr_db[1]))
        self.prob = float(prob)
        self.files = find_noise_files(self.dir)

    @classmethod
    def from_config(cls, config) -> AdditiveNoise | None:
        """``None`` for ``None``, the object itself, or one built from a mapping (``data.noise``)."""
        if config is None or isinstance(config, AdditiveNoise):
            return config
        if isinstance(config, Mapping):
            unknown = set(config) - {"dir", "snr_db", "prob"}
            if unknown or "dir" not in config:
                raise ValueError(f"noise must have dir and optionally snr_db, prob; got keys {sorted(config)}")
            return cls(**{key: config[key] for key in config})
        raise ValueError(f"noise must be null or a mapping with dir, snr_db, prob; got {config!r}")

    def draw(self, generator: torch.Generator) -> NoiseDraw | None:
        """Draw whether, which file, which SNR and where; ``None``: leave the utterance clean.

        Always four draws, so the file, SNR and position of an utterance do not depend on ``prob``.
        """
        u, which, snr, start = torch.rand(4, generator=generator, dtype=torch.float64).tolist()
        if not u < self.prob:
            return None
        low, high = self.snr_db
        return NoiseDraw(self.files[min(int(which * len(self.files)), len(self.files) - 1)],
                         low + (high - low) * snr, start)

    def segment(self, draw: NoiseDraw, num_samples: int) -> torch.Tensor:
        """Return ``num_samples`` 16 kHz samples of ``draw``'s file from its start, looped as needed."""
        try:
            info = soundfile.info(str(draw.path))
            frames, rate = info.frames, info.samplerate
            if frames <= 0:
                raise NoiseError(f"noise file {draw.path} is empty")
            needed = num_samples if rate == SAMPLE_RATE else math.ceil(num_samples * rate / SAMPLE_RATE) + 64
            start = min(int(draw.start * frames), frames - 1)
            if start + needed <= frames:
                samples, _ = soundfile.read(str(draw.path), start=start, stop=start + needed, dtype="float32",
                                            always_2d=True)
            else:  # loop the file
                whole, _ = soundfile.read(str(draw.path), dtype="float32", always_2d=True)
                samples = np.take(whole, np.arange(start, start + needed), axis=0, mode="wrap")
        except NoiseError:
            raise
        except Exception as error:  # soundfile raises several types for corrupt files
            raise NoiseError(f"cannot read noise file {draw.path}: {error}") from error
        waveform = resample(torch.from_numpy(np.ascontiguousarray(samples.mean(axis=1))), rate, SAMPLE_RATE)
        if waveform.numel() < num_samples:  # resampling rounded down
            waveform = waveform.repeat(math.ceil(num_samples / max(waveform.numel(), 1)))
        return waveform[:num_samples]

    def mix(self, waveform: torch.Tensor, draw: NoiseDraw | None) -> torch.Tensor:
        """Return ``waveform`` (1-D, 16 kHz) plus ``draw``'s noise at ``draw.snr_db``; itself for ``None``."""
        if draw is None:
            return waveform
        noise = self.segment(draw, waveform.numel()).to(torch.float64)
        signal_power = float(waveform.to(torch.float64).square().mean())
        noise_power = float(noise.square().mean())
        if signal_power == 0.0 or noise_power == 0.0:
            return waveform
        gain = math.sqrt(signal_power / (noise_power * 10.0 ** (draw.snr_db / 10.0)))
        return (waveform.to(torch.float64) + gain * noise).to(waveform.dtype)

    def __call__(self, waveform: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """:meth:`mix` with a fresh :meth:`draw` from ``generator``."""
        return self.mix(waveform, self.draw(generator))

    def __repr__(self) -> str:
        return f"AdditiveNoise(dir={str(self.dir)!r}, snr_db={list(self.snr_db)}, prob={self.prob}, " \
               f"{len(self.files)} files)"
