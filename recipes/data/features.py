"""Log-mel filterbank features and global mean/variance normalisation."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch

from recipes.utils.files import partial_path as partial_path_for

SAMPLE_RATE = 16000
FRAME_SHIFT_S = 0.010  # 100 frames per second
FRAME_LENGTH_S = 0.025


@functools.lru_cache(maxsize=16)
def _resampler(orig_freq: int, new_freq: int):
    """Return a cached resampling module (building its sinc kernel dominates a single call)."""
    import torchaudio

    return torchaudio.transforms.Resample(orig_freq, new_freq)


def resample(samples: torch.Tensor, orig_freq: int, new_freq: int) -> torch.Tensor:
    """Return ``samples`` taken at ``orig_freq`` Hz resampled to ``new_freq`` Hz."""
    if orig_freq == new_freq:
        return samples
    return _resampler(int(orig_freq), int(new_freq))(samples)


def num_frames(num_samples: int) -> int:
    """Return how many feature frames :func:`fbank` makes of ``num_samples`` 16 kHz samples."""
    window, shift = round(FRAME_LENGTH_S * SAMPLE_RATE), round(FRAME_SHIFT_S * SAMPLE_RATE)
    return 0 if num_samples < window else 1 + (num_samples - window) // shift


def fbank(samples: np.ndarray | torch.Tensor, num_mel_bins: int = 80) -> torch.Tensor:
    """Return the (T, num_mel_bins) Kaldi log-mel filterbank of 16 kHz samples in [-1, 1].

    25 ms windows every 10 ms (``T = num_frames(len(samples))``), no dither, so the features
    of a file are always the same.
    """
    import torchaudio.compliance.kaldi

    waveform = torch.as_tensor(samples, dtype=torch.float32).reshape(1, -1)
    return torchaudio.compliance.kaldi.fbank(
        waveform * 32768.0, num_mel_bins=num_mel_bins, frame_length=FRAME_LENGTH_S * 1000,
        frame_shift=FRAME_SHIFT_S * 1000, dither=0.0, energy_floor=0.0,
        sample_frequency=SAMPLE_RATE,
    )


class GlobalCMVN:
    """Per-dimension mean and standard deviation of features over a training set."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        if mean.shape != std.shape or mean.dim() != 1:
            raise ValueError(f"mean and std must be equal-length vectors, got {tuple(mean.shape)} "
                             f"and {tuple(std.shape)}")
        self.mean, self.std = mean.float(), std.float()

    @classmethod
    def estimate(cls, features: Iterable[torch.Tensor], min_std: float = 1e-5) -> GlobalCMVN:
        """Return the statistics of all frames of ``features`` ((T, F) tensors), in float64."""
        count, total, total_sq = 0, None, None
        for frames in features:
            frames = frames.double()
            total = frames.sum(0) if total is None else total + frames.sum(0)
            total_sq = frames.square().sum(0) if total_sq is None else total_sq + frames.square().sum(0)
            count += frames.shape[0]
        if count == 0:
            raise ValueError("features: no frames to estimate statistics from")
        mean = total / count
        std = (total_sq / count - mean.square()).clamp_min(0).sqrt().clamp_min(min_std)
        return cls(mean, std)

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        """Return ``(features - mean) / std``."""
        return (features - self.mean) / self.std

    def save(self, path: str | os.PathLike) -> None:
        path = Path(path)
        partial_path = partial_path_for(path)
        torch.save({"mean": self.mean, "std": self.std}, partial_path)
        os.replace(partial_path, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> GlobalCMVN:
        state = torch.load(path, weights_only=True)
        return cls(state["mean"], state["std"])


def load_or_estimate_cmvn(path: str | os.PathLike,
                          features: Callable[[], Iterable[torch.Tensor]]) -> GlobalCMVN:
    """Return the statistics stored at ``path``, estimating them from ``features()`` if absent."""
    path = Path(path)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        GlobalCMVN.estimate(features()).save(path)
    return GlobalCMVN.load(path)
