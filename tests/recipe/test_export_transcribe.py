"""export.py writes one self-contained model file; transcribe.py turns audio into the same text as
decode.py for the same weights and decoder, without the run folder or the corpus."""
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import open_dict

from decode import decode
from export import export
from recipes.data.text import normalize_text
from recipes.inference import ExportedModel, ModelFileError, load_model_file
from tests.recipe.recipe_cfg import CONF, REPO, compose_train
from train import train
from transcribe import build_decoder


def _compose(config: str, overrides: list[str], log_dir: Path):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config, overrides=overrides)
    with open_dict(cfg):
        cfg.paths.log_dir = str(log_dir)
        if config == "decode.yaml":
            cfg.log_to_wandb = False
    return cfg


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_corpus):
    """A tiny rnnt run (2 epochs), its greedy and beam decodes of the test set, and its exported file."""
    from tests.recipe.conftest import TINY_CORPUS

    out = tmp_path_factory.mktemp("export_rnnt")
    data = [f"data.root={tiny_corpus}", *[f"data.corpus.{k}={v}" for k, v in TINY_CORPUS.items()],
            "data.max_duration=10", "data.eval_max_duration=20", "data.num_workers=0", "data.cmvn_max_utts=20",
            "tokenizer.vocab_size=64"]
    cfg = compose_train(["loss=rnnt", "logger=csv", "callbacks=[default,epoch_checkpoint]", "trainer.max_epochs=2",
                         "trainer.limit_train_batches=6", "trainer.limit_val_batches=1", "test=false"], out, data=data)
    train(cfg)
    log_dir, run_dir = out / "logs", Path(cfg.paths.output_dir)
    selection = ["ckpt_path=last", "avg=2"]
    decodes = {kind: decode(_compose("decode.yaml", [*selection, f"decoding={kind}", "decoding.beam_size=2"]
                                     if kind == "beam" else [*selection], log_dir))
               for kind in ("greedy", "beam")}
    model_file = export(_compose("export.yaml", [*selection, f"out={out / 'model.pt'}"], log_dir))
    return {"run_dir": run_dir, "model_file": model_file, "decodes": decodes}


def _decode_hypotheses(run_dir: Path, summary: dict) -> dict[str, list[str]]:
    """utterance id -> hypothesis words, read back from decode.py's recogs file."""
    hyps = {}
    for line in (run_dir / "decode" / f"recogs-test-{summary['suffix']}.txt").read_text().splitlines():
        uid, _, value = line.partition(":\t")
        if value.startswith("hyp="):
            hyps[uid] = eval(value[4:])  # a Python list literal of words, as decode.py writes it
    return hyps


def _test_set(run_dir: Path) -> list:
    """The test utterances decode.py scored, from the training run's own data module."""
    import hydra
    from omegaconf import OmegaConf

    datamodule = hydra.utils.instantiate(OmegaConf.load(run_dir / "config.yaml").data)
    datamodule.setup("test")
    return datamodule.datasets["test"].utterances


def test_model_file_holds_everything(exported):
    contents = load_model_file(exported["model_file"])
    assert contents["loss"] == "rnnt" and contents["tokenizer"]["kind"] == "sentencepiece"
    assert [Path(p).name for p in contents["checkpoints"]][-1] == "last.ckpt" and len(contents["checkpoints"]) == 2
    assert contents["cmvn"]["mean"].shape == (80,) and contents["features"]["num_mel_bins"] == 80
    # the weights are the average of the two checkpoints, as decode.py loads them
    from decode import averaged_state_dict

    averaged = averaged_state_dict([Path(p) for p in contents["checkpoints"]])
    assert averaged.keys() == contents["state_dict"].keys()
    assert all(torch.equal(averaged[k], contents["state_dict"][k]) for k in averaged)


@pytest.mark.parametrize("kind", ["greedy", "beam"])
def test_transcribe_equals_decode(exported, kind, tmp_path):
    utterances = _test_set(exported["run_dir"])
    expected = _decode_hypotheses(exported["run_dir"], exported["decodes"][kind])
    assert set(expected) == {u.id for u in utterances}
    # the model file alone: the run folder moved away
    model_file = shutil.copy(exported["model_file"], tmp_path / "model.pt")
    model = ExportedModel.load(model_file)
    decoder = build_decoder(kind, beam_size=2 if kind == "beam" else None)
    texts = model.transcribe([u.audio_filepath for u in utterances], decoder, batch_size=5)
    got = {u.id: normalize_text(text).split() for u, text in zip(utterances, texts, strict=True)}
    assert got == expected
    # the comparison is sensitive: the same model with one feature setting flipped says otherwise
    model.utterance_mean_norm = not model.utterance_mean_norm
    flipped = model.transcribe([u.audio_filepath for u in utterances[:4]], decoder, batch_size=5)
    assert [normalize_text(t).split() for t in flipped] != [expected[u.id] for u in utterances[:4]]


def test_command_line_needs_only_the_model_file(exported, tmp_path):
    utterances = _test_set(exported["run_dir"])[:3]
    audio = []
    for k, utterance in enumerate(utterances):  # copies: the corpus is not needed either
        audio.append(tmp_path / f"utt{k}.flac")
        shutil.copy(utterance.audio_filepath, audio[-1])
    model_file = shutil.copy(exported["model_file"], tmp_path / "model.pt")
    # another sample rate and two channels: resampled and averaged
    samples, rate = soundfile.read(audio[0], dtype="float32")
    import torchaudio

    resampled = torchaudio.functional.resample(torch.from_numpy(samples), rate, 22050).numpy()
    soundfile.write(tmp_path / "stereo_22k.wav", np.stack([resampled, resampled], axis=1), 22050)
    moved = exported["run_dir"].with_name("moved-away")
    exported["run_dir"].rename(moved)
    try:
        proc = subprocess.run([sys.executable, str(REPO / "transcribe.py"), "--model", str(model_file),
                               *map(str, audio), str(tmp_path / "stereo_22k.wav"), "--device", "cpu",
                               "--num-threads", "1"],
                              cwd=tmp_path, capture_output=True, text=True, timeout=300)
    finally:
        moved.rename(exported["run_dir"])
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert [line.split("\t")[0] for line in lines] == [*map(str, audio), str(tmp_path / "stereo_22k.wav")]
    expected = _decode_hypotheses(exported["run_dir"], exported["decodes"]["greedy"])
    for utterance, line in zip(utterances, lines, strict=False):
        assert normalize_text(line.split("\t")[1]).split() == expected[utterance.id]


def test_command_line_errors_name_the_file(exported, tmp_path):
    not_a_model = tmp_path / "model.pt"
    torch.save({"state_dict": {}}, not_a_model)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(Path(exported["model_file"]).read_bytes()[:1000])
    audio = _test_set(exported["run_dir"])[0].audio_filepath
    cases = [(not_a_model, audio, "not a seqloss-asr-model file"), (truncated, audio, "cannot read"),
             (exported["model_file"], tmp_path / "missing.wav", "no such audio file")]
    for model_file, audio_path, message in cases:
        proc = subprocess.run([sys.executable, str(REPO / "transcribe.py"), "--model", str(model_file),
                               str(audio_path), "--device", "cpu"], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
        assert str(model_file if "audio" not in message else audio_path) in proc.stderr
    with pytest.raises(ModelFileError, match="no such file"):
        load_model_file(tmp_path / "absent.pt")
