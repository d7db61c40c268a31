"""Every config group composes and instantiates; `loss=X` changes only the objective and its heads."""

from pathlib import Path

import hydra
import lightning as L
import pytest
import torch
from omegaconf import OmegaConf, open_dict
from recipe_cfg import CONF, compose_train

from recipes.utils import instantiate_callbacks, instantiate_loggers

LOSSES = ["ctc", "rnnt", "modified_rnnt", "ssnt"]
HEADS = {  # which components each loss builds (the transducers keep a CTC head for the auxiliary loss)
    "ctc": {"ctc_head"},
    "rnnt": {"predictor", "joiner", "ctc_head"},
    "modified_rnnt": {"predictor", "joiner", "ctc_head"},
    "ssnt": {"predictor", "joiner", "choose_head", "ctc_head"},
}


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize("group", ["data", "tokenizer", "model", "loss", "decoding", "trainer", "logger", "callbacks",
                                   "experiment", "debug", "paths", "hydra"])
def test_every_option_composes(group, tmp_path):
    options = _options(group)
    assert options, f"conf/{group}/ is empty"
    for option in options:
        cfg = compose_train([f"{group}={option}"], tmp_path)
        for key, value in cfg.items():  # every interpolation resolves (`???` values stay missing)
            if key != "hydra" and OmegaConf.is_config(value):
                OmegaConf.to_container(value, resolve=True)


@pytest.mark.parametrize("loss", LOSSES)
def test_model_instantiates_with_the_heads_of_its_loss(loss, tmp_path):
    cfg = compose_train([f"loss={loss}"], tmp_path, tiny_model=False)
    assert cfg.tags[0] == loss
    assert f"/runs/{loss}/" in cfg.hydra.run.dir
    model = hydra.utils.instantiate(cfg.model)
    assert isinstance(model, L.LightningModule) and model.objective.name == loss
    built = {name for name in ("predictor", "joiner", "ctc_head", "choose_head") if getattr(model, name) is not None}
    assert built == HEADS[loss]
    optimizers = model.configure_optimizers()
    assert isinstance(optimizers["optimizer"], torch.optim.AdamW)


def test_losses_share_the_encoder_initialisation(tmp_path):
    states = []
    for loss in LOSSES:
        cfg = compose_train([f"loss={loss}"], tmp_path)
        L.seed_everything(cfg.seed)
        states.append(hydra.utils.instantiate(cfg.model).transcriber.state_dict())
    for state in states[1:]:
        assert all(torch.equal(state[k], states[0][k]) for k in state)


# what the options with mandatory (`???`) values need
DATA_REQUIRED = {
    "librispeech": ["data.root={tmp}"],
    "manifest": ["data.root={tmp}", "data.corpus.train=[train.jsonl]", "data.corpus.dev=[dev.jsonl]",
                 "data.corpus.test=[test.jsonl]"],
}


DATA_PRESETS = [option for option in _options("data") if option != "base"]  # base.yaml: the keys they share


@pytest.mark.parametrize("option", DATA_PRESETS)
def test_data_instantiates(option, tmp_path):
    required = [item.format(tmp=tmp_path) for item in DATA_REQUIRED.get(option, [])]
    cfg = compose_train([f"data={option}", *required], tmp_path)
    datamodule = hydra.utils.instantiate(cfg.data)
    assert isinstance(datamodule, L.LightningDataModule)


@pytest.mark.parametrize("option", _options("trainer"))
def test_trainer_instantiates(option, tmp_path):
    cfg = compose_train([f"trainer={option}"], tmp_path)
    with open_dict(cfg):
        cfg.trainer.accelerator = "cpu"  # gpu options are checked here for their other settings
        if cfg.trainer.get("devices") == -1:
            cfg.trainer.devices = 2
        if str(cfg.trainer.precision).startswith("16"):
            cfg.trainer.precision = "bf16-mixed"
    trainer = hydra.utils.instantiate(cfg.trainer)
    assert isinstance(trainer, L.Trainer)
    assert trainer.gradient_clip_val == cfg.trainer.gradient_clip_val


@pytest.mark.parametrize("option", _options("callbacks"))
def test_callbacks_instantiate(option, tmp_path):
    cfg = compose_train([f"callbacks={option}"], tmp_path)
    callbacks = instantiate_callbacks(cfg.get("callbacks"))
    assert len(callbacks) == len([v for v in (cfg.get("callbacks") or {}).values() if "_target_" in v])
    if option == "default":
        names = {type(c).__name__ for c in callbacks}
        assert {"ModelCheckpoint", "InterruptCheckpoint", "PerfMonitor", "TQDMProgressBar"} <= names


@pytest.mark.parametrize("option", _options("logger"))
def test_loggers_instantiate(option, tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))  # not logged in, whatever this machine has
    cfg = compose_train([f"logger={option}"], tmp_path)
    loggers = instantiate_loggers(cfg.get("logger"))
    names = sorted(type(logger).__name__ for logger in loggers)
    expected = {"default": ["CSVLogger", "WandbLogger"], "wandb": ["WandbLogger"], "csv": ["CSVLogger"], "none": []}
    assert names == expected[option]
    for logger in loggers:
        if type(logger).__name__ == "WandbLogger":
            assert logger._offline  # not logged in: offline


def test_wandb_goes_online_when_logged_in(tmp_path, monkeypatch):
    """`wandb login` stores the key in netrc; WANDB_API_KEY works too; neither: offline."""
    from recipes.utils.instantiate import wandb_logged_in

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_BASE_URL", raising=False)
    stored = tmp_path / "netrc"
    monkeypatch.setenv("NETRC", str(stored))
    assert not wandb_logged_in()
    stored.write_text("machine api.wandb.ai\n  login user\n  password 0123456789abcdef\n")
    stored.chmod(0o600)
    assert wandb_logged_in()
    monkeypatch.setenv("WANDB_BASE_URL", "https://wandb.example.org")
    assert not wandb_logged_in()  # a key for another host
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert wandb_logged_in()


def test_decoding_instantiates(tmp_path):
    cfg = compose_train([], tmp_path)
    decoder = hydra.utils.instantiate(cfg.decoding)
    assert decoder.max_symbols_per_frame == cfg.decoding.max_symbols_per_frame


@pytest.mark.parametrize("loss", ["rnnt", "modified_rnnt", "ssnt"])
def test_joiner_mode_is_a_loss_key(loss, tmp_path):
    """The objective evaluates the joiner, so its mode is `loss.joiner_mode`; the joiner refuses the old key."""
    assert hydra.utils.instantiate(compose_train([f"loss={loss}"], tmp_path).model).objective.joiner_mode == "dense"
    cfg = compose_train([f"loss={loss}", "loss.joiner_mode=packed"], tmp_path)
    assert hydra.utils.instantiate(cfg.model).objective.joiner_mode == "packed"
    assert "mode" not in cfg.model.joiner
    old = compose_train([f"loss={loss}", "+model.joiner.mode=fused"], tmp_path)
    with pytest.raises(Exception, match=r"set loss\.joiner_mode=fused"):
        hydra.utils.instantiate(old.model)


def test_configs_with_the_old_joiner_mode_key_still_build(tmp_path):
    """A run's config.yaml or a model file written with `model.joiner.mode` builds the same model, mode moved."""
    import copy

    from recipes.models.joiner import upgrade_model_config

    new = OmegaConf.to_container(compose_train(["loss=ssnt", "loss.joiner_mode=fused"], tmp_path).model, resolve=True)
    old = copy.deepcopy(new)
    del old["objective"]["joiner_mode"]
    old["joiner"]["mode"] = "fused"
    model = hydra.utils.instantiate(upgrade_model_config(OmegaConf.create(old)))  # as decode.py reads config.yaml
    assert model.objective.joiner_mode == "fused"
    assert upgrade_model_config(old) == new  # as inference.py reads a model file's dict
    assert upgrade_model_config(copy.deepcopy(new)) == new  # nothing to move
    ctc = OmegaConf.to_container(compose_train(["loss=ctc"], tmp_path).model, resolve=True)
    assert upgrade_model_config(copy.deepcopy(ctc)) == ctc  # no joiner


def test_subsampling_factor_follows_the_transcriber(tmp_path):
    for option in _options("data"):
        cfg = compose_train([f"data={option}", "model.transcriber.stack=6"], tmp_path)
        assert cfg.data.subsampling_factor == 6, option
    assert compose_train([], tmp_path).data.subsampling_factor == 4


@pytest.mark.parametrize("overrides", [[], ["data=librispeech"], ["trainer=gpu"], ["trainer=ddp"],
                                       ["experiment=rnnt_bf16"], ["experiment=librispeech_100h_rnnt"]])
def test_no_wall_clock_cap_unless_asked(overrides, tmp_path):
    """Only the README run (experiment=readme_run, which scripts/run.sh adds) stops after 14 minutes."""
    assert compose_train(overrides, tmp_path).trainer.max_time is None
    assert compose_train(["experiment=readme_run"], tmp_path).trainer.max_time == "00:00:14:00"


def test_run_sh_adds_the_readme_budget_unless_given_an_experiment(tmp_path):
    """scripts/run.sh's choice of experiment, run by bash with train.py and decode.py replaced by `echo`."""
    import subprocess

    script = (CONF.parent / "scripts" / "run.sh").read_text()
    script = script.replace("bash scripts/setup_env.sh", "true").replace(".venv/bin/python", "echo")
    script = script.replace('cd "$(dirname "$0")/.."', "")
    (tmp_path / "run.sh").write_text(script)

    def train_args(*args):
        out = subprocess.run(["bash", str(tmp_path / "run.sh"), *args], capture_output=True, text=True, check=True)
        return out.stdout.splitlines()[0].split()

    assert train_args() == ["train.py", "experiment=readme_run"]
    assert train_args("loss=ctc") == ["train.py", "experiment=readme_run", "loss=ctc"]
    assert train_args("experiment=librispeech_100h_rnnt") == ["train.py", "experiment=librispeech_100h_rnnt"]


def test_base_data_config_is_not_a_corpus(tmp_path):
    cfg = compose_train(["data=base"], tmp_path)
    with pytest.raises(Exception, match=r"Missing mandatory value: data\.root"):
        hydra.utils.instantiate(cfg.data)


@pytest.mark.parametrize("option", DATA_PRESETS)
def test_data_presets_resolve_to_their_frozen_values(option, tmp_path):
    """Each preset composes (conf/data/base.yaml + what differs) to exactly the values in expected_data_configs.yaml."""
    expected = OmegaConf.to_container(OmegaConf.load(Path(__file__).parent / "expected_data_configs.yaml"))
    assert sorted(expected) == DATA_PRESETS
    cfg = compose_train([f"data={option}"], tmp_path)
    data = OmegaConf.to_container(cfg.data, resolve=True)
    data["root"] = data["root"].replace(str(cfg.paths.data_dir), "${paths.data_dir}", 1)
    assert data == expected[option]
    assert list(data) == list(expected[option])  # the order too: `--cfg job` prints the same


def repeated_keys(preset: dict, base: dict, prefix: str = "") -> list[str]:
    """Keys that `preset` sets to the value `base` already gives them (leaf by leaf in nested nodes)."""
    found = []
    for key, value in preset.items():
        if key == "defaults" or key not in base:
            continue
        if isinstance(value, dict) and isinstance(base[key], dict):
            found += repeated_keys(value, base[key], f"{prefix}{key}.")
        elif value == base[key]:
            found.append(prefix + key)
    return found


def test_data_presets_list_only_what_differs_from_base():
    base = OmegaConf.to_container(OmegaConf.load(CONF / "data" / "base.yaml"))
    assert repeated_keys({"seed": 0, "spec_augment": {"num_time_masks": 2, "freq_mask_width": 9}}, base) == [
        "seed", "spec_augment.num_time_masks"]  # a repeated key, at the top and inside a node, is found
    for option in DATA_PRESETS:
        preset = OmegaConf.to_container(OmegaConf.load(CONF / "data" / f"{option}.yaml"))
        assert preset["defaults"] == ["base", "_self_"], option
        assert repeated_keys(preset, base) == [], option
