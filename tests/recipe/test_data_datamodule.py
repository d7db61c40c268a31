"""The data module: batch contract, filtering, Hydra configs, bad audio, exact resume under Lightning."""

import functools
import logging
import shutil
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate

from recipes.data.audio import BadAudioError
from recipes.data.datamodule import ASRDataModule, frames_needed
from recipes.data.features import num_frames
from recipes.data.librispeech import LibriSpeechCorpus
from recipes.data.tokenizer import build_char_tokenizer

CONF = Path(__file__).resolve().parents[2] / "conf"


@pytest.fixture(scope="module")
def datamodule(tiny_corpus):
    from recipes.data.synthesis import SyntheticCorpus
    from recipes.data.tokenizer import build_sentencepiece_tokenizer
    from tests.recipe.conftest import TINY_CORPUS

    dm = ASRDataModule(tiny_corpus, functools.partial(SyntheticCorpus, **TINY_CORPUS),
                       functools.partial(build_sentencepiece_tokenizer, vocab_size=64),
                       max_duration=10.0, eval_max_duration=20.0, num_workers=0, cmvn_max_utts=20)
    dm.prepare_data()
    dm.setup()
    return dm


def test_batches_follow_the_contract(datamodule):
    assert datamodule.feature_dim == 80 and datamodule.tokenizer.blank_id == 0
    seen = []
    for loader in (datamodule.train_dataloader(), datamodule.val_dataloader(), datamodule.test_dataloader()):
        for batch in loader:
            size = len(batch["ids"])
            assert batch["features"].dtype == torch.float32 and batch["features"].shape[0] == size
            assert batch["features"].shape[1:] == (int(batch["feature_lengths"].max()), 80)
            assert batch["feature_lengths"].dtype == batch["targets"].dtype == torch.int64
            assert batch["target_lengths"].dtype == torch.int64 and batch["durations"].dtype == torch.float32
            assert batch["targets"].shape == (size, int(batch["target_lengths"].max()))
            assert float(batch["durations"].sum()) <= 20.0
            for row in range(size):
                frames, tokens = int(batch["feature_lengths"][row]), int(batch["target_lengths"][row])
                assert frames == num_frames(round(float(batch["durations"][row]) * 16000))
                assert batch["features"][row, frames:].eq(0).all()
                target = batch["targets"][row, :tokens].tolist()
                assert 0 not in target and batch["targets"][row, tokens:].eq(0).all()
                assert datamodule.tokenizer.decode(target) == batch["texts"][row]
                assert frames // 4 >= frames_needed(target)
            seen += batch["ids"]
    assert len(seen) == len(set(seen)) == 84


def test_validation_features_are_normalised(datamodule):
    frames = torch.cat([b["features"][i, : b["feature_lengths"][i]]
                        for b in datamodule.val_dataloader() for i in range(len(b["ids"]))])
    assert frames.mean().abs() < 0.3 and 0.7 < frames.std() < 1.3  # dev speakers are unseen


def test_spec_augment_only_in_training(tiny_datamodule_kwargs):
    from recipes.data.augment import SpecAugment

    dm = ASRDataModule(**{**tiny_datamodule_kwargs, "spec_augment": SpecAugment(2, 10, 2, 20, 0.2)})
    dm.prepare_data()
    dm.setup()
    train_batch = next(iter(dm.train_dataloader()))
    val_batch = next(iter(dm.val_dataloader()))
    masked_bins = lambda b: b["features"][0, : b["feature_lengths"][0]].eq(0).all(0).sum()  # noqa: E731
    assert masked_bins(train_batch) > 0 and masked_bins(val_batch) == 0


def test_feature_cache_gives_the_same_batches_without_rereading_audio(tiny_datamodule_kwargs, monkeypatch):
    import recipes.data.dataset as dataset_module

    plain = ASRDataModule(**tiny_datamodule_kwargs)
    cached = ASRDataModule(**{**tiny_datamodule_kwargs, "cache_features": True})
    for dm in (plain, cached):
        dm.prepare_data()
        dm.setup()
    loads = []
    real_load = dataset_module.load_features
    monkeypatch.setattr(dataset_module, "load_features", lambda *a, **k: loads.append(a[0].id) or real_load(*a, **k))
    first = list(cached.val_dataloader())
    reads_first = len(loads)
    second = list(cached.val_dataloader())
    assert reads_first == len(cached.datasets["dev"].utterances) and len(loads) == reads_first
    for a, b, c in zip(list(plain.val_dataloader()), first, second):
        assert a["ids"] == b["ids"] == c["ids"]
        torch.testing.assert_close(a["features"], b["features"], rtol=0, atol=0)
        torch.testing.assert_close(a["features"], c["features"], rtol=0, atol=0)


def test_speed_perturbed_features_are_not_cached(tiny_datamodule_kwargs):
    dm = ASRDataModule(**{**tiny_datamodule_kwargs, "cache_features": True, "speed_factors": [0.9, 1.1]})
    dm.prepare_data()
    dm.setup()
    next(iter(dm.train_dataloader()))
    assert dm.datasets["train"]._cache == {}
    next(iter(dm.val_dataloader()))
    assert len(dm.datasets["dev"]._cache) > 0  # evaluation reads at speed 1.0


def test_utterance_mean_norm_centres_every_utterance(tiny_datamodule_kwargs):
    dm = ASRDataModule(**{**tiny_datamodule_kwargs, "utterance_mean_norm": True})
    dm.prepare_data()
    dm.setup()
    batch = next(iter(dm.val_dataloader()))
    for row in range(len(batch["ids"])):
        frames = batch["features"][row, : batch["feature_lengths"][row]]
        torch.testing.assert_close(frames.mean(0), torch.zeros(80), atol=1e-5, rtol=0)
        assert frames.std() > 0.5


def test_frames_needed_is_the_tightest_loss():
    assert frames_needed([5, 6, 7]) == 4  # transducer with a final blank: U + 1
    assert frames_needed([5, 5, 5]) == 5  # CTC: U + repeats
    assert frames_needed([]) == 1


def test_utterances_that_cannot_carry_their_tokens_are_dropped(tiny_corpus, tiny_datamodule_kwargs,
                                                              caplog):
    kwargs = {**tiny_datamodule_kwargs, "subsampling_factor": 6,  # ~17 frames/s, ~15 chars/s
              "tokenizer": functools.partial(build_char_tokenizer)}
    dm = ASRDataModule(**kwargs)
    dm.prepare_data()
    with caplog.at_level(logging.WARNING, logger="recipes.data.datamodule"):
        dm.setup("fit")
    kept = len(dm.datasets["train"])
    assert 0 < kept < 60
    assert f"dropped {60 - kept} utterances" in caplog.text
    assert len(dm.datasets["dev"]) == 12  # dev keeps every utterance, with a warning
    assert "dev:" in caplog.text


def test_corrupt_audio_raises_or_is_skipped(tiny_corpus, tiny_datamodule_kwargs, tmp_path):
    root = shutil.copytree(tiny_corpus, tmp_path / "corpus",
                           ignore=shutil.ignore_patterns("manifests", "lang_*", "cmvn*"))
    kwargs = {**tiny_datamodule_kwargs, "root": root,
              "corpus": functools.partial(LibriSpeechCorpus, train_splits=["train"],
                                          dev_splits=["dev"], test_splits=["test"])}
    dm = ASRDataModule(**kwargs)
    dm.prepare_data()
    dm.setup("test")
    victim = dm.datasets["test"].utterances[0].audio_filepath
    victim.write_bytes(b"garbage" * 100)  # corrupted after the manifest was written
    with pytest.raises(BadAudioError, match=victim.name):
        list(dm.test_dataloader())
    skipping = ASRDataModule(**{**kwargs, "skip_bad_audio": True})
    skipping.prepare_data()
    skipping.setup("test")
    ids = [i for batch in skipping.test_dataloader() for i in batch["ids"]]
    assert len(ids) == 11 and victim.stem not in ids
    assert skipping.datasets["test"].num_bad_audio == 1


def test_hydra_configs_instantiate(tiny_data_overrides, tmp_path):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train.yaml", overrides=["data=synthetic", "tokenizer=bpe", *tiny_data_overrides])
        librispeech = compose("train.yaml", overrides=["data=librispeech", f"data.root={tmp_path}",
                                                       "tokenizer=char"])
        manifest = compose("train.yaml", overrides=["data=manifest", f"data.root={tmp_path}",
                                                    "data.corpus.train=[a.jsonl]", "data.corpus.dev=[b.jsonl]",
                                                    "data.corpus.test=[c.jsonl]"])
    dm = instantiate(cfg.data)
    dm.prepare_data()
    dm.setup("validate")
    assert dm.tokenizer.vocab_size <= 64 and next(iter(dm.val_dataloader()))["features"].shape[-1] == 80
    assert instantiate(librispeech.data).corpus.manifests("dev") == [tmp_path / "manifests" / "dev-clean.jsonl"]
    assert instantiate(manifest.data).corpus.manifests("test") == [tmp_path / "c.jsonl"]


class _Recorder(L.LightningModule):
    """A linear model that records the utterance ids of every training batch."""

    def __init__(self, seen: list) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(80, 1)
        self.seen = seen

    def training_step(self, batch, batch_idx):
        self.seen.append(tuple(batch["ids"]))
        return self.layer(batch["features"]).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def _fit(kwargs, root, seen, ckpt_path=None, callbacks=()):
    trainer = L.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
                        default_root_dir=root, callbacks=list(callbacks), reload_dataloaders_every_n_epochs=1)
    trainer.fit(_Recorder(seen), datamodule=ASRDataModule(**kwargs), ckpt_path=ckpt_path)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_resume_mid_epoch_sees_the_uninterrupted_batches(tiny_datamodule_kwargs, tmp_path, num_workers):
    kwargs = {**tiny_datamodule_kwargs, "num_workers": num_workers, "max_duration": 6.0}
    uninterrupted = []
    checkpoint = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=3,
                                                     save_top_k=-1, filename="{step}")
    _fit(kwargs, tmp_path, uninterrupted, callbacks=[checkpoint])
    batches_per_epoch = len(uninterrupted) // 2
    assert batches_per_epoch > 5 and uninterrupted[:batches_per_epoch] != uninterrupted[batches_per_epoch:]
    step = 3 if batches_per_epoch % 3 else 6  # a step inside the first epoch, not at its end
    resumed = []
    _fit(kwargs, tmp_path, resumed, ckpt_path=tmp_path / "ckpt" / f"step={step}.ckpt")
    assert resumed == uninterrupted[step:]
