"""decode.py split=<name> and split=[a,b]: any split the data module knows, each scored on its own."""
import functools
import json
import shutil
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import open_dict

from decode import decode, requested_splits
from recipes.data.augment import SpecAugment
from recipes.data.datamodule import ASRDataModule
from recipes.data.librispeech import LibriSpeechCorpus
from recipes.data.manifest import ManifestCorpus
from recipes.data.synthesis import SyntheticCorpus
from tests.recipe.conftest import TINY_CORPUS
from tests.recipe.recipe_cfg import CONF, compose_train
from train import train

LIBRI_SPLITS = {"train_splits": ["train-clean-5"], "dev_splits": ["dev-clean"], "test_splits": ["test-clean"]}


def _folder_ids(split_dir: Path) -> set[str]:
    """Utterance ids listed by the transcripts of a LibriSpeech-layout split folder."""
    return {line.split()[0] for path in split_dir.glob("*/*/*.trans.txt") for line in path.read_text().splitlines()}


@pytest.fixture(scope="module")
def libri_root(tiny_corpus, tmp_path_factory) -> Path:
    """The tiny corpus in LibriSpeech layout with LibriSpeech split names: train-clean-5, dev-clean, and
    its two test speakers apart, one in test-clean and the other in test-other."""
    root = tmp_path_factory.mktemp("libri") / "LibriSpeech"
    shutil.copytree(tiny_corpus / "train", root / "train-clean-5")
    shutil.copytree(tiny_corpus / "dev", root / "dev-clean")
    first, second = sorted(p for p in (tiny_corpus / "test").iterdir() if p.is_dir())
    shutil.copytree(first, root / "test-clean" / first.name)
    shutil.copytree(second, root / "test-other" / second.name)
    (root / "README.TXT").write_text("not a split\n")
    (root / "empty-folder").mkdir()  # a folder without the layout is not a split
    return root


def _libri_data(root: Path) -> list[str]:
    return [f"data.root={root}", *[f"data.corpus.{key}=[{value[0]}]" for key, value in LIBRI_SPLITS.items()],
            "data.speed_factors=[1.0]", "data.spec_augment=null", "data.max_utt_duration=null",
            "data.max_duration=10", "data.eval_max_duration=20", "data.num_workers=0", "data.num_buckets=4",
            "data.cmvn_max_utts=20", "tokenizer.vocab_size=64"]


@pytest.fixture(scope="module")
def libri_run(libri_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("decode_splits")
    cfg = compose_train(["data=librispeech", "loss=ctc", "logger=csv", "trainer.max_epochs=1",
                         "trainer.limit_train_batches=3", "trainer.limit_val_batches=1", "test=false"],
                        out, data=_libri_data(libri_root))
    train(cfg)
    return out / "logs", Path(cfg.paths.output_dir)


def _decode(log_dir, overrides):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("decode.yaml", overrides=overrides)
    with open_dict(cfg):
        cfg.paths.log_dir = str(log_dir)
        cfg.log_to_wandb = False
        cfg.num_threads = 1
    return decode(cfg)


def _recog_ids(path: Path) -> set[str]:
    return {line.split(":\t")[0] for line in path.read_text().splitlines()}


def test_a_list_of_splits_is_scored_split_by_split(libri_run, libri_root):
    log_dir, run_dir = libri_run
    both = _decode(log_dir, ["split=[test-clean,test-other]"])
    assert set(both) == {"test-clean", "test-other"}
    clean_ids, other_ids = _folder_ids(libri_root / "test-clean"), _folder_ids(libri_root / "test-other")
    assert len(clean_ids) == len(other_ids) == 6 and not clean_ids & other_ids
    out = run_dir / "decode"
    for split, ids in (("test-clean", clean_ids), ("test-other", other_ids)):
        summary = both[split]
        suffix = summary["suffix"]
        assert summary["set"] == split and summary["settings"]["split"] == split and summary["utterances"] == 6
        for kind in ("recogs", "errs", "wer-summary"):
            assert (out / f"{kind}-{split}-{suffix}.txt").is_file()
        assert json.loads((out / f"results-{split}-{suffix}.json").read_text())["wer"] == summary["wer"]
        assert _recog_ids(out / f"recogs-{split}-{suffix}.txt") == ids  # exactly that folder's utterances
        alone = _decode(log_dir, [f"split={split}"])  # one name: one summary, the same scores
        assert (alone["wer"], alone["ref_words"], alone["utterances"]) == \
            (summary["wer"], summary["ref_words"], summary["utterances"])


def test_split_test_is_the_configured_test_split(libri_run, libri_root):
    log_dir, run_dir = libri_run
    test = _decode(log_dir, ["split=test"])
    named = _decode(log_dir, ["split=test-clean"])  # test_splits=[test-clean]
    assert test["set"] == "test" and (test["wer"], test["ref_words"]) == (named["wer"], named["ref_words"])
    assert _recog_ids(run_dir / "decode" / f"recogs-test-{test['suffix']}.txt") == \
        _folder_ids(libri_root / "test-clean")
    dev = _decode(log_dir, ["split=dev", "max_utterances=2"])
    assert dev["set"] == "dev" and 2 <= dev["utterances"] <= 12


def test_viterbi_aligns_each_split(libri_run, libri_root):
    log_dir, _ = libri_run
    both = _decode(log_dir, ["alignment=viterbi", "alignment.num_plots=0", "split=[test-other,dev-clean]"])
    other = {line.split()[0] for line in Path(both["test-other"]["ctm"]).read_text().splitlines()}
    assert both["test-other"]["utterances"] == 6 and other <= _folder_ids(libri_root / "test-other")
    assert both["dev-clean"]["utterances"] == 12 and "ctm-dev-clean-" in both["dev-clean"]["ctm"]


def test_an_unknown_split_is_named_with_the_known_ones(libri_run):
    log_dir, _ = libri_run
    with pytest.raises(ValueError, match=r"unknown split name\(s\) 'test-nope'; .* knows: dev, test, dev-clean, "
                                         r"test-clean, test-other, train-clean-5$"):
        _decode(log_dir, ["split=[test-clean,test-nope]"])
    with pytest.raises(ValueError, match="non-empty list"):
        _decode(log_dir, ["split=[]"])


def test_requested_splits():
    assert requested_splits("test") == ["test"]
    assert requested_splits(["test-clean", "test-other", "test-clean"]) == ["test-clean", "test-other"]
    for bad in ([], "", [""], [3]):
        with pytest.raises(ValueError, match="split must be"):
            requested_splits(bad)


def test_a_named_split_is_evaluated_like_the_test_set(libri_root, tmp_path):
    """A split read by name, even the training one, gets no augmentation, keeps every utterance,
    and has the test set's features and CMVN."""
    from recipes.data.tokenizer import build_sentencepiece_tokenizer

    dm = ASRDataModule(
        root=libri_root, corpus=functools.partial(LibriSpeechCorpus, **LIBRI_SPLITS, cache_dir=tmp_path),
        tokenizer=functools.partial(build_sentencepiece_tokenizer, vocab_size=64), max_duration=10.0,
        eval_max_duration=20.0, num_workers=0, cmvn_max_utts=20, speed_factors=(0.9, 1.0, 1.1),
        spec_augment=SpecAugment(num_freq_masks=2, freq_mask_width=10, num_time_masks=2, time_mask_width=10),
        max_utt_duration=1.0, subsampling_factor=6)
    dm.prepare_data()
    assert dm.known_splits() == ["dev", "test", "dev-clean", "test-clean", "test-other", "train-clean-5"]
    assert not (tmp_path / "manifests" / "test-other.jsonl").exists()  # not configured: written on first use
    loader = dm.split_dataloader("train-clean-5")
    dataset = loader.dataset
    assert dataset.speed_factors == (1.0,) and dataset.spec_augment is None
    assert len(dataset) == 60  # max_utt_duration and the frames filter drop training utterances only
    dm.setup("fit")
    assert 0 < len(dm.datasets["train"]) < 60 and dm.datasets["train"].spec_augment is not None
    batch = next(iter(loader))  # the same features on every read: nothing random
    again = {uid: row for uid, row in zip(next(iter(loader))["ids"], next(iter(loader))["features"])}
    assert all(torch.equal(row, again[uid]) for uid, row in zip(batch["ids"], batch["features"]))
    named = next(iter(dm.split_dataloader("test-clean")))
    test = next(iter(dm.split_dataloader("test")))
    assert dm.datasets["split/test-clean"].cmvn is dm.datasets["test"].cmvn
    assert named["ids"] == test["ids"] and torch.equal(named["features"], test["features"])
    other = [i for b in dm.split_dataloader("test-other") for i in b["ids"]]
    assert set(other) == _folder_ids(libri_root / "test-other")
    assert (tmp_path / "manifests" / "test-other.jsonl").is_file()
    with pytest.raises(ValueError, match=r"split 'test-nope' is not a split of this data module; known splits: dev, "):
        dm.split_dataloader("test-nope")
    with pytest.raises(ValueError, match=r"split 'empty-folder' is not a split of the corpus .*known splits: dev-cl"):
        dm.corpus.split_manifests("empty-folder")


def test_split_names_of_the_synthetic_and_manifest_corpora(tiny_corpus, tmp_path):
    assert SyntheticCorpus(tiny_corpus, **TINY_CORPUS).split_names() == ["dev", "test", "train"]
    corpus = ManifestCorpus(tmp_path, train=["train.jsonl"], dev=["sets/dev-clean.jsonl"],
                            test=["sets/test-clean.jsonl", "/elsewhere/test-other.jsonl"])
    assert corpus.split_names() == ["dev-clean", "test-clean", "test-other", "train"]
    assert corpus.split_manifests("test-other") == [Path("/elsewhere/test-other.jsonl")]
    assert corpus.split_manifests("dev-clean") == [tmp_path / "sets" / "dev-clean.jsonl"]
    with pytest.raises(ValueError, match=r"'test-nope' is not one of the configured manifests; known splits "
                                         r"\(manifest file stems\): dev-clean, test-clean, test-other, train"):
        corpus.split_manifests("test-nope")
    twice = ManifestCorpus(tmp_path, train=["a/x.jsonl"], dev=["b/x.jsonl"], test=["a/x.jsonl"])
    assert twice.split_names() == ["x"]
    with pytest.raises(ValueError, match="split 'x' names several manifests"):
        twice.split_manifests("x")
