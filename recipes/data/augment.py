"""Training-time augmentation: speed perturbation of the waveform and SpecAugment masks.

Both take an explicit ``torch.Generator`` so that the augmentation of an utterance depends only
on (seed, epoch, utterance), never on the data loader's worker count or order.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from recipes.data.features import resample


def speed_perturb(samples: torch.Tensor, factor: float, sample_rate: int = 16000) -> torch.Tensor:
    """Return ``samples`` played ``factor`` times faster (pitch moves too, as in Kaldi's sox).

    The waveform is resampled from ``sample_rate * factor`` to ``sample_rate``, so its duration
    is divided by ``factor``.
    """
    if factor <= 0:
        raise ValueError(f"factor must be > 0, got {factor}")
    return resample(samples, round(sample_rate * factor), sample_rate)


class SpecAugment:
    """Frequency and time masking (Park et al., 2019) of a (T, F) feature matrix, masked to 0.

    ``num_freq_masks`` bands of width uniform in [0, freq_mask_width]; ``num_time_masks`` spans of
    width uniform in [0, min(time_mask_width, time_mask_max_ratio * T)]. On normalised features
    the value 0 is the training mean.
    """

    def __init__(self, num_freq_masks: int = 2, freq_mask_width: int = 27,
                 num_time_masks: int = 2, time_mask_width: int = 40,
                 time_mask_max_ratio: float = 0.2) -> None:
        for name, value in (("num_freq_masks", num_freq_masks), ("freq_mask_width", freq_mask_width),
                            ("num_time_masks", num_time_masks), ("time_mask_width", time_mask_width)):
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an int >= 0, got {value!r}")
        if not 0 <= time_mask_max_ratio <= 1:
            raise ValueError(f"time_mask_max_ratio must be in [0, 1], got {time_mask_max_ratio}")
        self.num_freq_masks, self.freq_mask_width = num_freq_masks, freq_mask_width
        self.num_time_masks, self.time_mask_width = num_time_masks, time_mask_width
        self.time_mask_max_ratio = time_mask_max_ratio

    def __call__(self, features: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Return a masked copy of ``features`` (T, F)."""
        features = features.clone()
        num_frames, num_bins = features.shape
        max_time_width = min(self.time_mask_width, int(self.time_mask_max_ratio * num_frames))
        for count, max_width, size, axis in (
            (self.num_freq_masks, min(self.freq_mask_width, num_bins), num_bins, 1),
            (self.num_time_masks, max_time_width, num_frames, 0),
        ):
            for _ in range(count):
                width = int(torch.randint(0, max_width + 1, (), generator=generator))
                start = int(torch.randint(0, size - width + 1, (), generator=generator))
                features.narrow(axis, start, width).zero_()
        return features


def choose_speed(factors: Sequence[float], generator: torch.Generator) -> float:
    """Return one of ``factors`` drawn uniformly with ``generator``."""
    return float(factors[int(torch.randint(0, len(factors), (), generator=generator))])
