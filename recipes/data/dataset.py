"""The map-style dataset behind the data loaders: one item is one collated batch."""

from __future__ import annotations

import logging
import zlib
from collections.abc import Sequence

import torch

from recipes.data.audio import BadAudioError
from recipes.data.augment import SpecAugment, choose_speed, speed_perturb
from recipes.data.features import SAMPLE_RATE, GlobalCMVN, fbank, resample
from recipes.data.manifest import Utterance
from recipes.data.noise import AdditiveNoise, NoiseDraw

log = logging.getLogger(__name__)


def load_waveform(utterance: Utterance, speed: float = 1.0) -> torch.Tensor:
    """Return ``utterance``'s mono audio (:meth:`Utterance.read_audio`) resampled to 16 kHz and
    sped up by ``speed``; bad audio raises :class:`BadAudioError` naming the file, the utterance
    and the manifest line it came from."""
    try:
        samples, sample_rate = utterance.read_audio()
    except BadAudioError as error:
        raise BadAudioError(f"{utterance.describe()}: {error}") from error
    waveform = torch.from_numpy(samples)
    waveform = speed_perturb(resample(waveform, sample_rate, SAMPLE_RATE), speed, SAMPLE_RATE)
    if waveform.numel() < round(0.025 * SAMPLE_RATE):
        raise BadAudioError(f"{utterance.describe()}: audio file {utterance.audio_filepath} is "
                            f"shorter than one frame")
    return waveform


def load_features(utterance: Utterance, num_mel_bins: int = 80,
                  speed: float = 1.0) -> torch.Tensor:
    """Return the (T, num_mel_bins) fbank of :func:`load_waveform`."""
    return fbank(load_waveform(utterance, speed), num_mel_bins)


class ASRBatchDataset(torch.utils.data.Dataset):
    """Turns a sampler item ``(epoch, indices)`` into a batch dict (see ``ASRDataModule``).

    Features are normalised with ``cmvn`` and, with ``utterance_mean_norm``, each utterance's
    own mean over its frames is then subtracted (per dimension). With ``cache_features`` the
    normalised features of an utterance read at speed 1.0 are kept in memory after their first
    load (per process: each DataLoader worker keeps those it loaded), so later epochs skip audio
    decoding and the filterbank; about 32 KB per second of audio at 80 bins. Training datasets
    add speed perturbation (a factor from ``speed_factors`` per utterance), additive ``noise``
    (mixed into the sped-up waveform) and ``spec_augment``. The random draws of an utterance come
    from generators seeded by (``seed``, epoch, utterance index) for speed and SpecAugment and by
    (``seed``, epoch, utterance id) for noise, so a batch is the same whichever worker builds it.
    Noised features are never cached. With ``skip_bad_audio`` an unreadable file is logged, left
    out of its batch and counted in ``num_bad_audio`` (per process); otherwise its error
    propagates.
    """

    def __init__(self, utterances: Sequence[Utterance], texts: Sequence[str],
                 targets: Sequence[Sequence[int]], cmvn: GlobalCMVN, num_mel_bins: int = 80,
                 speed_factors: Sequence[float] = (1.0,), spec_augment: SpecAugment | None = None,
                 seed: int = 0, skip_bad_audio: bool = False, utterance_mean_norm: bool = False,
                 cache_features: bool = False, noise: AdditiveNoise | None = None) -> None:
        if not len(utterances) == len(texts) == len(targets):
            raise ValueError(f"utterances, texts and targets must have one entry each, got "
                             f"{len(utterances)}, {len(texts)}, {len(targets)}")
        if not speed_factors or any(f <= 0 for f in speed_factors):
            raise ValueError(f"speed_factors must be positive numbers, got {speed_factors!r}")
        self.utterances, self.texts, self.targets = list(utterances), list(texts), list(targets)
        self.cmvn, self.num_mel_bins = cmvn, num_mel_bins
        self.speed_factors, self.spec_augment = tuple(speed_factors), spec_augment
        self.seed, self.skip_bad_audio = seed, skip_bad_audio
        self.utterance_mean_norm = bool(utterance_mean_norm)
        self.cache_features = bool(cache_features)
        self.noise = noise
        self._cache: dict[int, torch.Tensor] = {}
        self.num_bad_audio = 0

    def __len__(self) -> int:
        return len(self.utterances)

    def _generator(self, epoch: int, index: int) -> torch.Generator:
        key = f"{self.seed}-{epoch}-{index}".encode()
        return torch.Generator().manual_seed(zlib.crc32(key))

    def _noise_generator(self, epoch: int, index: int) -> torch.Generator:
        key = f"noise-{self.seed}-{epoch}-{self.utterances[index].id}".encode()
        return torch.Generator().manual_seed(zlib.crc32(key))

    def _normalised_features(self, index: int, speed: float, noise: NoiseDraw | None = None) -> torch.Tensor:
        cacheable = self.cache_features and speed == 1.0 and noise is None
        if cacheable and index in self._cache:
            return self._cache[index]
        if noise is None:
            features = load_features(self.utterances[index], self.num_mel_bins, speed)
        else:
            waveform = self.noise.mix(load_waveform(self.utterances[index], speed), noise)
            features = fbank(waveform, self.num_mel_bins)
        features = self.cmvn(features)
        if self.utterance_mean_norm:
            features = features - features.mean(dim=0, keepdim=True)
        if cacheable:
            self._cache[index] = features
        return features

    def _features(self, epoch: int, index: int) -> torch.Tensor:
        augment = self.spec_augment is not None or self.speed_factors != (1.0,)
        generator = self._generator(epoch, index) if augment else None
        speed = choose_speed(self.speed_factors, generator) if augment else 1.0
        noise = self.noise.draw(self._noise_generator(epoch, index)) if self.noise is not None else None
        features = self._normalised_features(index, speed, noise)
        if self.spec_augment is not None:
            features = self.spec_augment(features, generator)
        return features

    def __getitem__(self, item: tuple[int, Sequence[int]]) -> dict:
        epoch, indices = item
        kept, features = [], []
        for index in indices:
            try:
                features.append(self._features(epoch, index))
            except BadAudioError as error:
                if not self.skip_bad_audio:
                    raise
                self.num_bad_audio += 1
                log.warning("skipping: %s", error)  # the error names the utterance and file
                continue
            kept.append(index)
        return self.collate(kept, features)

    def collate(self, indices: Sequence[int], features: Sequence[torch.Tensor]) -> dict:
        """Return the padded batch of the utterances ``indices`` with their ``features``."""
        targets = [torch.tensor(self.targets[i], dtype=torch.int64) for i in indices]
        feature_lengths = torch.tensor([f.shape[0] for f in features], dtype=torch.int64)
        max_frames = int(feature_lengths.max()) if features else 0
        padded = torch.zeros(len(features), max_frames, self.num_mel_bins)
        for row, frames in enumerate(features):
            padded[row, : frames.shape[0]] = frames
        target_lengths = torch.tensor([len(t) for t in targets], dtype=torch.int64)
        max_tokens = int(target_lengths.max()) if targets else 0
        padded_targets = torch.zeros(len(targets), max_tokens, dtype=torch.int64)
        for row, tokens in enumerate(targets):
            padded_targets[row, : len(tokens)] = tokens
        return {
            "features": padded,
            "feature_lengths": feature_lengths,
            "targets": padded_targets,
            "target_lengths": target_lengths,
            "texts": [self.texts[i] for i in indices],
            "ids": [self.utterances[i].id for i in indices],
            "durations": torch.tensor([self.utterances[i].duration for i in indices],
                                      dtype=torch.float32),
        }
