"""Features: fbank shape and rate, CMVN, SpecAugment, speed perturbation."""

import pytest
import torch

from recipes.data.augment import SpecAugment, speed_perturb
from recipes.data.dataset import load_features
from recipes.data.features import GlobalCMVN, fbank, load_or_estimate_cmvn, num_frames
from recipes.data.librispeech import read_librispeech_split


@pytest.fixture(scope="module")
def train_utterances(tiny_corpus):
    return read_librispeech_split(tiny_corpus / "train")[0][:20]


@pytest.mark.parametrize("num_samples", [400, 401, 559, 560, 16000, 44100])
def test_fbank_shape_and_frame_rate(num_samples):
    features = fbank(torch.randn(num_samples) * 0.1)
    assert features.shape == (num_frames(num_samples), 80) == (1 + (num_samples - 400) // 160, 80)
    assert features.dtype == torch.float32 and torch.isfinite(features).all()


def test_features_of_a_file_follow_its_duration(train_utterances):
    for utterance in train_utterances[:3]:
        features = load_features(utterance)
        assert features.shape == (num_frames(round(utterance.duration * 16000)), 80)
        assert torch.equal(features, load_features(utterance))  # no dither


def test_cmvn_normalises_training_features(train_utterances, tmp_path):
    path = tmp_path / "cmvn.pt"
    cmvn = load_or_estimate_cmvn(path, lambda: (load_features(u) for u in train_utterances))
    normalised = torch.cat([cmvn(load_features(u)) for u in train_utterances])
    assert normalised.mean(0).abs().max() < 1e-3
    assert (normalised.std(0) - 1).abs().max() < 1e-2
    reloaded = load_or_estimate_cmvn(path, lambda: pytest.fail("statistics must be reused"))
    assert torch.equal(reloaded.mean, cmvn.mean) and torch.equal(reloaded.std, cmvn.std)
    with pytest.raises(ValueError, match="features"):
        GlobalCMVN.estimate([])


def test_spec_augment_masks_within_limits_and_is_reproducible():
    features = torch.randn(300, 80) + 5.0  # no natural zeros
    augment = SpecAugment(num_freq_masks=2, freq_mask_width=10, num_time_masks=2, time_mask_width=20,
                          time_mask_max_ratio=0.5)
    masked = augment(features, torch.Generator().manual_seed(3))
    zero = masked == 0
    masked_bins = zero.all(0).sum().item()
    masked_frames = zero.all(1).sum().item()
    assert 0 < masked_bins <= 20 and 0 < masked_frames <= 40
    assert torch.equal(masked[~zero], features[~zero])
    assert torch.equal(masked, augment(features, torch.Generator().manual_seed(3)))
    assert not torch.equal(masked, augment(features, torch.Generator().manual_seed(4)))
    with pytest.raises(ValueError, match="freq_mask_width"):
        SpecAugment(freq_mask_width=-1)


@pytest.mark.parametrize("factor", [0.9, 1.1])
def test_speed_perturbation_changes_duration(factor):
    samples = torch.randn(16000)
    assert abs(speed_perturb(samples, factor).numel() - 16000 / factor) <= 1
    with pytest.raises(ValueError, match="factor"):
        speed_perturb(samples, 0.0)
