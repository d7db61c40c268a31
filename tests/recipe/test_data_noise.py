"""Additive noise augmentation (`data.noise`): SNR, determinism per (seed, epoch, utterance), training only,
independent of loader workers, feature cache, exact resume, folders and configs."""

import functools
import math
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import soundfile
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from recipe_cfg import CONF

from recipes.data.datamodule import ASRDataModule
from recipes.data.dataset import ASRBatchDataset
from recipes.data.noise import AdditiveNoise, NoiseDraw, NoiseError, find_noise_files


def _write(path: Path, seconds: float, rate: int, seed: int, channels: int = 1) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    samples = np.random.default_rng(seed).normal(0.0, 0.1, (round(seconds * rate), channels)).astype(np.float32)
    soundfile.write(path, samples, rate, subtype="PCM_16")
    return path


@pytest.fixture(scope="module")
def musan(tmp_path_factory) -> Path:
    """A MUSAN-like folder: noise/ with a 3 s 16 kHz file, a 0.4 s 8 kHz stereo file (looped, resampled);
    music/ and speech/ files that must not be used."""
    root = tmp_path_factory.mktemp("musan") / "musan"
    _write(root / "noise" / "free-sound" / "noise-free-sound-0000.wav", 3.0, 16000, 1)
    _write(root / "noise" / "sound-bible" / "noise-sound-bible-0000.wav", 0.4, 8000, 2, channels=2)
    _write(root / "music" / "fma" / "music-fma-0000.wav", 1.0, 16000, 3)
    _write(root / "speech" / "us-gov" / "speech-us-gov-0000.wav", 1.0, 16000, 4)
    return root


def _measured_snr(clean: torch.Tensor, mixed: torch.Tensor) -> float:
    clean, noise = clean.double(), mixed.double() - clean.double()
    return 10 * math.log10(float(clean.square().mean()) / float(noise.square().mean()))


def test_noise_files_musan_layout_and_any_folder(musan, tmp_path):
    assert [p.name for p in find_noise_files(musan)] == ["noise-free-sound-0000.wav", "noise-sound-bible-0000.wav"]
    plain = tmp_path / "plain"
    _write(plain / "a" / "b" / "x.wav", 0.5, 16000, 5)
    _write(plain / "y.FLAC", 0.5, 16000, 6)
    (plain / "notes.txt").write_text("not audio")
    assert [p.name for p in find_noise_files(plain)] == ["x.wav", "y.FLAC"]
    with pytest.raises(NoiseError, match=f"no such folder {tmp_path / 'missing'}"):
        AdditiveNoise(tmp_path / "missing")
    (tmp_path / "empty" / "noise").mkdir(parents=True)
    with pytest.raises(NoiseError, match=f"no .wav/.flac files under {tmp_path / 'empty' / 'noise'}"):
        AdditiveNoise(tmp_path / "empty")


def test_arguments_are_checked(musan):
    for bad in ([5], [10, 0], "5", [0, float("nan")]):
        with pytest.raises(ValueError, match="snr_db"):
            AdditiveNoise(musan, snr_db=bad)
    with pytest.raises(ValueError, match="prob"):
        AdditiveNoise(musan, prob=1.5)
    with pytest.raises(ValueError, match="got keys \\['dir', 'snr'\\]"):
        AdditiveNoise.from_config({"dir": str(musan), "snr": [0, 1]})
    assert AdditiveNoise.from_config(None) is None


@pytest.mark.parametrize("snr_db", [-5.0, 0.0, 7.5, 20.0, 40.0])
@pytest.mark.parametrize("file", [0, 1])  # 1: shorter than the utterance (looped), 8 kHz stereo
def test_the_mix_has_the_requested_snr(snr_db, file, musan, tiny_corpus):
    utterance_audio = sorted((tiny_corpus / "train").glob("*/*/*.flac"))[0]
    clean = torch.from_numpy(soundfile.read(utterance_audio, dtype="float32")[0])
    noise = AdditiveNoise(musan)
    draw = NoiseDraw(noise.files[file], snr_db, start=0.7)
    mixed = noise.mix(clean, draw)
    assert mixed.dtype == clean.dtype and mixed.shape == clean.shape
    assert abs(_measured_snr(clean, mixed) - snr_db) < 0.1
    segment = noise.segment(draw, clean.numel())
    assert segment.shape == clean.shape and float(segment.abs().max()) > 0
    if file == 1:  # a 0.4 s file looped over a longer utterance: the noise repeats every 0.4 s (6400 samples)
        # away from the joins (at 1920 + k * 6400: the file starts 70% in), where resampling smooths
        assert clean.numel() > 15000
        assert torch.allclose(segment[2000:8000], segment[8400:14400], atol=1e-5)
        assert not torch.allclose(segment[2000:8000], segment[2100:8100], atol=1e-2)


def test_draws_cover_the_range_and_prob(musan):
    noise = AdditiveNoise(musan, snr_db=[5, 15], prob=0.3)
    draws = [noise.draw(torch.Generator().manual_seed(i)) for i in range(400)]
    used = [d for d in draws if d is not None]
    assert 0.22 < len(used) / len(draws) < 0.38
    assert all(5 <= d.snr_db <= 15 for d in used) and max(d.snr_db for d in used) - min(d.snr_db for d in used) > 8
    assert {d.path for d in used} == set(noise.files)
    # prob changes which utterances are noised, never the noise they get
    always = AdditiveNoise(musan, snr_db=[5, 15], prob=1.0)
    for i, d in enumerate(draws):
        if d is not None:
            assert always.draw(torch.Generator().manual_seed(i)) == d
    zero = AdditiveNoise(musan, prob=0.0)
    clean = torch.linspace(-0.5, 0.5, 1000)
    assert all(zero(clean, torch.Generator().manual_seed(i)) is clean for i in range(50))


def test_silence_is_left_alone(musan):
    noise = AdditiveNoise(musan)
    silence = torch.zeros(4000)
    assert torch.equal(noise.mix(silence, NoiseDraw(noise.files[0], 10.0, 0.0)), silence)


def test_unreadable_noise_file_is_named(tmp_path):
    folder = tmp_path / "noise"
    folder.mkdir()
    (folder / "broken.wav").write_bytes(b"RIFF not really a wav")
    noise = AdditiveNoise(tmp_path, prob=1.0)
    with pytest.raises(NoiseError, match=f"cannot read noise file {folder / 'broken.wav'}"):
        noise(torch.ones(1000), torch.Generator().manual_seed(0))


# -- in the data module --------------------------------------------------------------------------------------------
def _dm(kwargs, **extra) -> ASRDataModule:
    dm = ASRDataModule(**{**kwargs, **extra})
    dm.prepare_data()
    dm.setup()
    return dm


def _features(dm, part: str, epoch: int) -> list[torch.Tensor]:
    dataset = dm.datasets[part]
    batch = dataset[(epoch, list(range(len(dataset))))]
    return [f[:n] for f, n in zip(batch["features"], batch["feature_lengths"])]


def _config(musan, **kw) -> dict:
    return {"dir": str(musan), "snr_db": [0.0, 10.0], "prob": 0.5, **kw}


@pytest.fixture(scope="module")
def clean_dm(tiny_datamodule_kwargs_module):
    return _dm(tiny_datamodule_kwargs_module)


@pytest.fixture(scope="module")
def tiny_datamodule_kwargs_module(tiny_corpus):
    from recipes.data.synthesis import SyntheticCorpus
    from recipes.data.tokenizer import build_sentencepiece_tokenizer
    from tests.recipe.conftest import TINY_CORPUS

    return {"root": tiny_corpus, "corpus": functools.partial(SyntheticCorpus, **TINY_CORPUS),
            "tokenizer": functools.partial(build_sentencepiece_tokenizer, vocab_size=64),
            "max_duration": 10.0, "eval_max_duration": 20.0, "num_workers": 0, "cmvn_max_utts": 20}


def test_noise_is_deterministic_per_seed_epoch_and_utterance(tiny_datamodule_kwargs_module, clean_dm, musan):
    kwargs = tiny_datamodule_kwargs_module
    a = _dm(kwargs, noise=_config(musan))
    b = _dm(kwargs, noise=AdditiveNoise(musan, snr_db=[0.0, 10.0], prob=0.5))
    clean = _features(clean_dm, "train", 0)
    epoch0, again, epoch1 = _features(a, "train", 0), _features(b, "train", 0), _features(a, "train", 1)
    assert all(torch.equal(x, y) for x, y in zip(epoch0, again))
    noised0 = [not torch.equal(x, c) for x, c in zip(epoch0, clean)]
    noised1 = [not torch.equal(x, c) for x, c in zip(epoch1, clean)]
    assert 0.25 < sum(noised0) / len(clean) < 0.75 and noised0 != noised1
    assert any(not torch.equal(x, y) for x, y, n, m in zip(epoch0, epoch1, noised0, noised1) if n and m)
    # an utterance's noise is keyed by its id, not its place: the same in a dataset holding it elsewhere
    dataset = a.datasets["train"]
    reordered = ASRBatchDataset(dataset.utterances[::-1], dataset.texts[::-1], dataset.targets[::-1], dataset.cmvn,
                                seed=dataset.seed, noise=dataset.noise)
    last = len(dataset) - 1
    assert all(torch.equal(reordered[(0, [last - i])]["features"][0], epoch0[i]) for i in range(len(dataset)))
    seed1 = _dm(kwargs, noise=_config(musan), seed=1)
    assert sum(not torch.equal(x, y) for x, y in zip(_features(seed1, "train", 0), epoch0)) > len(epoch0) // 4


def test_prob_zero_is_identity_and_dev_test_are_never_noised(tiny_datamodule_kwargs_module, clean_dm, musan):
    kwargs = tiny_datamodule_kwargs_module
    off = _dm(kwargs, noise=_config(musan, prob=0.0))
    always = _dm(kwargs, noise=_config(musan, prob=1.0))
    for epoch in (0, 1):
        assert all(torch.equal(x, y)
                   for x, y in zip(_features(off, "train", epoch), _features(clean_dm, "train", epoch)))
        assert all(not torch.equal(x, y)
                   for x, y in zip(_features(always, "train", epoch), _features(clean_dm, "train", epoch)))
    for part in ("dev", "test"):
        assert always.datasets[part].noise is None
        assert all(torch.equal(x, y) for x, y in zip(_features(always, part, 0), _features(clean_dm, part, 0)))
        for x, y in zip(always.val_dataloader() if part == "dev" else always.test_dataloader(),
                        clean_dm.val_dataloader() if part == "dev" else clean_dm.test_dataloader(), strict=True):
            assert torch.equal(x["features"], y["features"])


def test_feature_cache_never_holds_noise(tiny_datamodule_kwargs_module, musan):
    kwargs = tiny_datamodule_kwargs_module
    uncached = _dm(kwargs, noise=_config(musan))
    cached = _dm(kwargs, noise=_config(musan), cache_features=True)
    for epoch in (0, 1, 2):
        assert all(torch.equal(x, y) for x, y in zip(_features(cached, "train", epoch),
                                                      _features(uncached, "train", epoch)))
    assert 0 < len(cached.datasets["train"]._cache) < len(cached.datasets["train"])


def test_loader_workers_do_not_change_the_noise(tiny_datamodule_kwargs_module, musan):
    batches = {}
    for workers in (0, 2):
        dm = _dm(tiny_datamodule_kwargs_module, noise=_config(musan), num_workers=workers)
        loader = dm.train_dataloader()
        batches[workers] = []
        for epoch in (0, 1):
            loader.sampler.set_epoch(epoch)
            batches[workers] += [(b["ids"], b["features"]) for b in loader]
    assert len(batches[0]) > 5 and len(batches[0]) == len(batches[2])
    for (ids0, f0), (ids2, f2) in zip(batches[0], batches[2]):
        assert ids0 == ids2 and torch.equal(f0, f2)


class _Recorder(L.LightningModule):
    """Records the ids and a feature checksum of every training batch."""

    def __init__(self, seen: list) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(80, 1)
        self.seen = seen

    def training_step(self, batch, batch_idx):
        self.seen.append((tuple(batch["ids"]), float(batch["features"].double().sum())))
        return self.layer(batch["features"]).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def _fit(kwargs, root, seen, ckpt_path=None, callbacks=()):
    trainer = L.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
                        default_root_dir=root, callbacks=list(callbacks), reload_dataloaders_every_n_epochs=1)
    trainer.fit(_Recorder(seen), datamodule=ASRDataModule(**kwargs), ckpt_path=ckpt_path)


def test_resumed_training_sees_the_same_noise(tiny_datamodule_kwargs_module, musan, tmp_path):
    kwargs = {**tiny_datamodule_kwargs_module, "max_duration": 6.0, "noise": _config(musan)}
    uninterrupted, clean = [], []
    checkpoint = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=3,
                                                     save_top_k=-1, filename="{step}")
    _fit(kwargs, tmp_path, uninterrupted, callbacks=[checkpoint])
    _fit({**kwargs, "noise": None}, tmp_path / "clean", clean)
    per_epoch = len(uninterrupted) // 2
    assert per_epoch > 5
    assert [ids for ids, _ in clean] == [ids for ids, _ in uninterrupted]  # noise does not change the batches
    assert sum(a != b for (_, a), (_, b) in zip(clean, uninterrupted)) > per_epoch  # but their features
    step = 3 if per_epoch % 3 else 6  # inside the first epoch
    resumed = []
    _fit(kwargs, tmp_path, resumed, ckpt_path=tmp_path / "ckpt" / f"step={step}.ckpt")
    assert resumed == uninterrupted[step:]


def test_hydra_config(tiny_data_overrides, musan):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        for data in ("synthetic", "librispeech", "manifest", "lhotse"):
            assert compose("train.yaml", overrides=[f"data={data}"]).data.noise is None
        cfg = compose("train.yaml", overrides=["data=synthetic", *tiny_data_overrides,
                                               f"data.noise={{dir:{musan},snr_db:[3,9],prob:0.25}}"])
    dm = instantiate(cfg.data)
    assert isinstance(dm.noise, AdditiveNoise)
    assert (dm.noise.dir, dm.noise.snr_db, dm.noise.prob) == (musan, (3.0, 9.0), 0.25)
    assert len(dm.noise.files) == 2
