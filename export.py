"""Writes one self-contained model file: `python export.py ckpt_path=<file>|last|best [avg=N] out=<file>`.

Selects (and averages) checkpoints exactly as decode.py does, rebuilds the run's data module to
read its tokenizer and CMVN statistics, and stores them with the weights and the resolved model
config (recipes/inference.py). `python transcribe.py --model <file> AUDIO...` then needs neither
the run folder nor the corpus.
"""
import logging
import os
from pathlib import Path

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parent))

import hydra  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from decode import averaged_state_dict, select_checkpoints  # noqa: E402
from recipes.inference import build_model_file, save_model_file  # noqa: E402
from recipes.models.joiner import upgrade_model_config  # noqa: E402

log = logging.getLogger(__name__)


def export(cfg: DictConfig) -> Path:
    """Writes the model file `cfg.out`; returns its path."""
    run_dir, checkpoints = select_checkpoints(cfg)
    train_cfg = OmegaConf.load(run_dir / "config.yaml")
    datamodule = hydra.utils.instantiate(train_cfg.data)
    datamodule.prepare_data()
    datamodule.setup("test")
    contents = build_model_file(
        model_config=upgrade_model_config(OmegaConf.to_container(train_cfg.model, resolve=True)),
        state_dict=averaged_state_dict(checkpoints),
        tokenizer=datamodule.tokenizer, cmvn=datamodule.cmvn, num_mel_bins=datamodule.feature_dim,
        utterance_mean_norm=datamodule.utterance_mean_norm, loss=train_cfg.loss.name,
        decoding=OmegaConf.to_container(train_cfg.decoding, resolve=True), checkpoints=checkpoints,
    )
    out = save_model_file(contents, cfg.out)
    size_mb = out.stat().st_size / 2**20
    names = [p.name for p in checkpoints]
    log.info(f"wrote {out} ({size_mb:.1f} MB): loss {train_cfg.loss.name}, checkpoints {names} of {run_dir}")
    print(f"{out}\t{train_cfg.loss.name}\t{size_mb:.1f} MB\t{'+'.join(names)}")
    return out


@hydra.main(version_base="1.3", config_path="conf", config_name="export.yaml")
def main(cfg: DictConfig) -> None:
    export(cfg)


if __name__ == "__main__":
    main()
