"""The LibriSpeech experiments (conf/experiment/librispeech_*.yaml): each composes with the real
config to the values docs/librispeech.md states, its model has the intended size, the 8-GPU
variants differ from their one-GPU experiment only in how the same batch is spread, and one of
them trains on a LibriSpeech-layout folder made from the embedded corpus."""
import math
from pathlib import Path

import hydra
import pytest
from omegaconf import OmegaConf, open_dict
from recipe_cfg import CONF, compose_train

from train import train

EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("librispeech_*.yaml"))
LOSSES = ("ctc", "rnnt", "modified_rnnt", "ssnt")
SPLITS = {
    "100h": ["train-clean-100"],
    "960h": ["train-clean-100", "train-clean-360", "train-other-500"],
}
# seconds of audio per optimizer step (devices x max_duration x accumulate_grad_batches);
# 960 h: icefall lstm_transducer_stateless's 4 GPUs x 500 s
GLOBAL_BATCH_S = {"100h": 800.0, "960h": 2000.0}
# parameters with the 500-piece BPE (icefall's LSTM transducer: 84.7 M)
PARAMS_M = {"ctc": (70.0, 85.0), "transducer": (78.0, 90.0)}
# what an 8-GPU variant may change relative to its one-GPU experiment
DDP_KEYS = {"trainer.strategy", "trainer.devices", "trainer.accelerator", "trainer.num_nodes",
            "trainer.sync_batchnorm", "trainer.accumulate_grad_batches", "data.max_duration",
            "data.num_workers"}


def _parse(name: str) -> tuple[str, str, bool]:
    """(hours, loss, 8-GPU?) of an experiment named librispeech_<hours>_<loss>[_8gpu]."""
    rest = name.removeprefix("librispeech_")
    multi = rest.endswith("_8gpu")
    hours, _, loss = rest.removesuffix("_8gpu").partition("_")
    return hours, loss, multi


def _compose(name: str, tmp_path: Path, overrides=()):
    cfg = compose_train([f"experiment={name}", *overrides], tmp_path, tiny_model=False)
    with open_dict(cfg):
        cfg.vocab_size = cfg.tokenizer.vocab_size  # train() reads it from the tokenizer
    return cfg


def intended_problems(name: str, cfg) -> list[str]:
    """Every way the composed ``cfg`` of experiment ``name`` departs from the intended settings."""
    hours, loss, multi = _parse(name)
    data, trainer, corpus = cfg.data, cfg.trainer, cfg.data.corpus
    expect = {
        "loss.name": (cfg.loss.name, loss),
        "tokenizer": (cfg.tokenizer._target_.rsplit(".", 1)[-1], "build_sentencepiece_tokenizer"),
        "tokenizer.model_type": (cfg.tokenizer.model_type, "bpe"),
        "tokenizer.vocab_size": (cfg.tokenizer.vocab_size, 500),
        "data.corpus": (corpus._target_, "recipes.data.librispeech.LibriSpeechCorpus"),
        "train_splits": (list(corpus.train_splits), SPLITS[hours]),
        "dev_splits": (list(corpus.dev_splits), ["dev-clean", "dev-other"]),
        "test_splits": (list(corpus.test_splits), ["test-clean", "test-other"]),
        "cache_dir": (Path(corpus.cache_dir).name, f"librispeech_{hours}"),
        "speed_factors": (list(data.speed_factors), [0.9, 1.0, 1.1]),
        "spec_augment": ({k: v for k, v in data.spec_augment.items() if k != "_target_"},
                         {"num_freq_masks": 2, "freq_mask_width": 27, "num_time_masks": 2,
                          "time_mask_width": 100, "time_mask_max_ratio": 0.075}),
        "max_utt_duration": (data.max_utt_duration, 20.0),
        "trainer.max_time": (trainer.max_time, None),
        "trainer.max_epochs": (trainer.max_epochs, 105),
        "trainer.max_steps": (trainer.max_steps, -1),
        "trainer.precision": (trainer.precision, "bf16-mixed"),
        "optimizer.lr": (cfg.model.optimizer.lr, 0.001),
        "scheduler.warmup_steps": (cfg.model.scheduler.warmup_steps, 5000),
        "transcriber": ({k: cfg.model.transcriber[k] for k in ("stack", "hidden_dim", "num_layers",
                                                               "bidirectional", "output_dim")},
                        {"stack": 4, "hidden_dim": 768, "num_layers": 6, "bidirectional": True,
                         "output_dim": 512}),
        "epoch checkpoints": ((cfg.callbacks.epoch_checkpoint.every_n_epochs,
                               cfg.callbacks.epoch_checkpoint.save_top_k), (3, 15)),
        "tags": (list(cfg.tags)[1:], ["librispeech", hours]),
        "strategy": (trainer.get("strategy"), "ddp" if multi else None),
        "devices": (trainer.devices, 8 if multi else 1),
        # the trainer option chosen (compose_train has since set the accelerator to the CPU)
        "trainer option": (cfg.hydra.runtime.choices.trainer, "ddp" if multi else "gpu"),
    }
    if loss != "ctc":
        expect["joiner"] = ((cfg.model.joiner.joiner_dim, cfg.model.objective.joiner_mode), (512, "packed"))
        expect["predictor"] = ((cfg.model.predictor.embed_dim, cfg.model.predictor.output_dim), (512, 512))
    problems = [f"{key}: {got!r}, intended {want!r}" for key, (got, want) in expect.items() if got != want]
    step_s = trainer.devices * data.max_duration * trainer.get("accumulate_grad_batches", 1)
    if step_s != GLOBAL_BATCH_S[hours]:
        problems.append(f"audio per optimizer step: {step_s} s, intended {GLOBAL_BATCH_S[hours]} s")
    return problems


def test_every_loss_has_a_100h_and_an_8gpu_experiment():
    expected = {f"librispeech_100h_{loss}{suffix}" for loss in LOSSES for suffix in ("", "_8gpu")}
    expected |= {"librispeech_960h_rnnt", "librispeech_960h_rnnt_8gpu"}
    assert set(EXPERIMENTS) == expected


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_composes_to_the_intended_values(name, tmp_path):
    cfg = _compose(name, tmp_path)
    assert intended_problems(name, cfg) == []
    for key, value in cfg.items():  # every interpolation resolves
        if key != "hydra" and OmegaConf.is_config(value):
            OmegaConf.to_container(value, resolve=True)


@pytest.mark.parametrize("name", [n for n in EXPERIMENTS if not n.endswith("_8gpu")])
def test_model_size(name, tmp_path):
    _, loss, _ = _parse(name)
    cfg = _compose(name, tmp_path)
    model = hydra.utils.instantiate(cfg.model)
    assert model.objective.name == loss
    assert (model.predictor is None) == (loss == "ctc") and (model.joiner is None) == (loss == "ctc")
    millions = sum(p.numel() for p in model.parameters()) / 1e6
    low, high = PARAMS_M["ctc" if loss == "ctc" else "transducer"]
    assert low <= millions <= high, f"{name}: {millions:.1f} M parameters"


@pytest.mark.parametrize("name", [n for n in EXPERIMENTS if n.endswith("_8gpu")])
def test_8gpu_variant_changes_only_how_the_batch_is_spread(name, tmp_path):
    single = _compose(name.removesuffix("_8gpu"), tmp_path)
    multi = _compose(name, tmp_path)

    def flat(cfg):
        container = OmegaConf.to_container(cfg, resolve=False)
        container.pop("hydra")
        out = {}

        def walk(node, prefix):
            if isinstance(node, dict) and node:
                for key, value in node.items():
                    walk(value, f"{prefix}.{key}" if prefix else key)
            else:
                out[prefix] = node
        walk(container, "")
        return out

    a, b = flat(single), flat(multi)
    changed = {key for key in a.keys() | b.keys() if a.get(key) != b.get(key)}
    assert changed <= DDP_KEYS, sorted(changed - DDP_KEYS)
    assert multi.trainer.strategy == "ddp" and multi.trainer.devices == 8


@pytest.mark.parametrize("fault,problem", [
    (["tokenizer.vocab_size=256"], "tokenizer.vocab_size"),
    (["trainer.max_time=00:00:14:00"], "trainer.max_time"),
    (["data.corpus.dev_splits=[dev-clean]"], "dev_splits"),
    (["data.speed_factors=[1.0]"], "speed_factors"),
    (["data.max_duration=400"], "audio per optimizer step"),
    (["trainer.accumulate_grad_batches=1"], "audio per optimizer step"),
    (["loss=ssnt"], "loss.name"),
    (["model.transcriber.num_layers=4"], "transcriber"),
])
def test_the_value_check_catches_a_departure(fault, problem, tmp_path):
    """intended_problems() flags each injected departure (on the 960 h experiment, which
    accumulates batches), so the composition test above would fail on it."""
    cfg = _compose("librispeech_960h_rnnt", tmp_path, fault)
    found = intended_problems("librispeech_960h_rnnt", cfg)
    assert any(p.startswith(problem) for p in found), found


def _librispeech_layout(tiny_corpus: Path, root: Path) -> Path:
    """A LibriSpeech folder under ``root`` whose splits are symlinks to the tiny corpus' speakers:
    its training speakers spread over the three training splits, and its two dev (test)
    speakers one each in dev-clean and dev-other (test-clean and test-other)."""
    plan = {"train": ["train-clean-100", "train-clean-360", "train-other-500"],
            "dev": ["dev-clean", "dev-other"], "test": ["test-clean", "test-other"]}
    for part, splits in plan.items():
        speakers = sorted(p for p in (tiny_corpus / part).iterdir() if p.is_dir())
        assert len(speakers) >= len(splits), f"{tiny_corpus / part}: too few speakers"
        for index, speaker in enumerate(speakers):
            split_dir = root / splits[index % len(splits)]
            split_dir.mkdir(parents=True, exist_ok=True)
            (split_dir / speaker.name).symlink_to(speaker, target_is_directory=True)
    return root


def test_960h_rnnt_trains_two_steps_on_a_librispeech_folder(tiny_corpus, tmp_path):
    """Two optimizer steps (2 x 2 accumulated batches) of librispeech_960h_rnnt, tiny model and
    BPE, on the CPU; every configured split is read from its LibriSpeech folder name."""
    root = _librispeech_layout(tiny_corpus, tmp_path / "LibriSpeech")
    cache = tmp_path / "cache"
    cfg = compose_train(
        ["experiment=librispeech_960h_rnnt", "logger=none", "tokenizer.vocab_size=64",
         "trainer.max_steps=2", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1",
         "trainer.num_sanity_val_steps=0", "trainer.precision=32-true"],
        tmp_path,
        [f"data.root={root}", f"data.corpus.cache_dir={cache}", "data.max_duration=10",
         "data.eval_max_duration=20", "data.num_workers=0", "data.cmvn_max_utts=20"])
    metrics, objects = train(cfg)
    trainer = objects["trainer"]
    assert trainer.global_step == 2
    assert trainer.fit_loop.epoch_loop.batch_progress.total.completed == 4  # 2 batches per step
    assert math.isfinite(metrics["train/loss"]) and math.isfinite(metrics["test/wer"])
    assert objects["model"].objective.joiner_mode == "packed"
    manifests = sorted(p.stem for p in (cache / "manifests").glob("*.jsonl"))
    assert manifests == sorted(SPLITS["960h"] + ["dev-clean", "dev-other", "test-clean", "test-other"])
    assert (cache / "lang_bpe_64" / "sp.model").exists() and not any(root.glob("lang_*"))
    train_ids = {u.id for u in objects["datamodule"].datasets["train"].utterances}
    speakers = {split: {p.name for p in (root / split).iterdir()} for split in SPLITS["960h"]}
    for split, names in speakers.items():  # every training split contributes utterances
        assert any(i.split("-")[0] in names for i in train_ids), split
