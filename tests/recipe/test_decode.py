"""decode.py on a freshly trained tiny run: greedy, beam, Viterbi alignment, checkpoint averaging."""
import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import open_dict

from decode import decode
from tests.recipe.recipe_cfg import CONF, compose_train
from train import train


@pytest.fixture(scope="module", params=["rnnt", "ctc"])
def trained_run(request, tmp_path_factory, tiny_corpus):
    from tests.recipe.conftest import TINY_CORPUS

    out = tmp_path_factory.mktemp(f"decode_{request.param}")
    data = [f"data.root={tiny_corpus}", *[f"data.corpus.{k}={v}" for k, v in TINY_CORPUS.items()],
            "data.max_duration=10", "data.eval_max_duration=20", "data.num_workers=0", "data.cmvn_max_utts=20",
            "tokenizer.vocab_size=64"]
    cfg = compose_train([f"loss={request.param}", "logger=csv", "callbacks=[default,epoch_checkpoint]",
                         "trainer.max_epochs=2", "trainer.limit_train_batches=4",
                         "trainer.limit_val_batches=1", "test=false"], out, data=data)
    train(cfg)
    return request.param, out / "logs", Path(cfg.paths.output_dir)


def _decode(log_dir, overrides):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("decode.yaml", overrides=overrides)
    with open_dict(cfg):
        cfg.paths.log_dir = str(log_dir)
        cfg.log_to_wandb = False
    return decode(cfg)


def test_greedy_and_beam_write_wer_files(trained_run):
    loss, log_dir, run_dir = trained_run
    greedy = _decode(log_dir, [])  # the newest run and its best checkpoint, by default
    beam = _decode(log_dir, ["decoding=beam", "decoding.beam_size=3"])
    files = sorted(p.name for p in (run_dir / "decode").iterdir())
    for summary in (greedy, beam):
        suffix = summary["suffix"]
        for name in (f"recogs-test-{suffix}.txt", f"errs-test-{suffix}.txt", f"wer-summary-test-{suffix}.txt",
                     f"results-test-{suffix}.json"):
            assert name in files
        assert summary["utterances"] == 12 and summary["settings"]["loss"] == loss
        stored = json.loads((run_dir / "decode" / f"results-test-{suffix}.json").read_text())
        assert stored["wer"] == summary["wer"] and stored["real_time_factor"] > 0
    assert greedy["suffix"].startswith("greedy_") and beam["suffix"].startswith("beam_size3_rescored_")


def test_viterbi_writes_ctm_and_plots(trained_run):
    loss, log_dir, run_dir = trained_run
    result = _decode(log_dir, ["alignment=viterbi", "alignment.num_plots=2", "split=dev"])
    assert result["utterances"] == 12 and len(result["plots"]) == 2
    assert Path(result["ctm"]).name.startswith("ctm-dev-viterbi_")
    lines = Path(result["ctm"]).read_text().splitlines()
    ids = {line.split()[0] for line in lines}
    assert len(ids) == 12 - result["infeasible"]
    for line in lines:
        uid, channel, start, duration, token = line.split(maxsplit=4)
        assert channel == "1" and float(start) >= 0 and float(duration) == pytest.approx(0.04) and token
    for plot in result["plots"]:
        assert Path(plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_old_viterbi_decoding_option_names_its_replacement():
    import subprocess
    import sys

    from tests.recipe.recipe_cfg import REPO

    done = subprocess.run([sys.executable, "decode.py", "decoding=viterbi"], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 1 and "decoding=viterbi is now alignment=viterbi" in done.stderr
    assert "python decode.py alignment=viterbi" in done.stderr


def test_checkpoint_averaging(trained_run):
    _, log_dir, run_dir = trained_run
    last = run_dir / "checkpoints" / "epoch001.ckpt"
    summary = _decode(log_dir, [f"ckpt_path={last}", "avg=2", "max_utterances=4"])
    assert summary["suffix"].endswith("epoch001-avg2")
    first, second = summary["settings"]["checkpoints"]
    assert Path(second).name == "epoch001.ckpt" and "step000004" in Path(first).name  # best-epoch000-step000004
    with pytest.raises(ValueError, match="avg"):
        _decode(log_dir, [f"ckpt_path={last}", "avg=50"])


def test_last_names_the_newest_runs_last_checkpoint(trained_run):
    _, log_dir, run_dir = trained_run
    summary = _decode(log_dir, ["ckpt_path=last", "avg=2", "max_utterances=4"])
    assert summary["suffix"].endswith("last-avg2")
    older, newest = (Path(p) for p in summary["settings"]["checkpoints"])
    assert newest == run_dir / "checkpoints" / "last.ckpt" and older.parent == run_dir / "checkpoints"
    best = _decode(log_dir, ["ckpt_path=best", "max_utterances=4"])
    assert Path(best["settings"]["checkpoints"][0]).name.startswith("best-")


def test_averaged_state_dict_is_the_mean(tmp_path):
    import torch

    from decode import averaged_state_dict

    paths = []
    for k, value in enumerate([1.0, 2.0, 6.0]):
        path = tmp_path / f"c{k}.ckpt"
        torch.save({"state_dict": {"w": torch.full((2,), value), "count": torch.tensor(k)}}, path)
        paths.append(path)
    state = averaged_state_dict(paths)
    assert torch.equal(state["w"], torch.full((2,), 3.0)) and int(state["count"]) == 2


def test_device_is_chosen_like_training_and_recorded(trained_run, monkeypatch):
    import torch

    _, log_dir, run_dir = trained_run
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    auto = _decode(log_dir, ["max_utterances=4"])
    assert auto["device"] == expected and auto["settings"]["device"] == expected
    stored = json.loads((run_dir / "decode" / f"results-test-{auto['suffix']}.json").read_text())
    assert stored["device"] == expected
    on_cpu = _decode(log_dir, ["device=cpu", "max_utterances=4"])
    assert on_cpu["device"] == "cpu"
    if expected == "cpu":  # the CPU run is the same decoding as the automatic choice here
        assert on_cpu["wer"] == auto["wer"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="device=cuda: CUDA is not available"):
        _decode(log_dir, ["device=cuda"])
    with pytest.raises(ValueError, match="device='gpu0' is not a device name"):
        _decode(log_dir, ["device=gpu0"])


def test_resolve_device_checks_the_index(monkeypatch):
    import torch

    from decode import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device(None) == torch.device("cuda") and resolve_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(ValueError, match=r"device=cuda:1: this machine has 1 CUDA device"):
        resolve_device("cuda:1")
    assert resolve_device("cpu") == torch.device("cpu")


def test_truncated_last_ckpt_is_skipped_with_a_warning(trained_run, tmp_path, caplog):
    import logging
    import shutil

    _, log_dir, run_dir = trained_run
    copy = tmp_path / "logs"
    shutil.copytree(log_dir, copy)
    copied_run = copy / run_dir.relative_to(log_dir)
    last = copied_run / "checkpoints" / "last.ckpt"
    data = last.read_bytes()
    last.write_bytes(data[: len(data) // 2])  # as a crash in a non-atomic write would leave it
    with caplog.at_level(logging.WARNING):
        summary = _decode(copy, ["ckpt_path=last", "avg=2", "max_utterances=4"])
    assert f"skipping unreadable checkpoint {last}" in caplog.text
    used = [Path(p) for p in summary["settings"]["checkpoints"]]
    assert last not in used and len(used) == 2 and all(p.parent == last.parent for p in used)
    with pytest.raises(ValueError, match=f"cannot read checkpoint {last}"):
        _decode(copy, [f"ckpt_path={last}"])
    for path in (copied_run / "checkpoints").glob("*.ckpt"):
        path.write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="no readable checkpoint"):
        _decode(copy, ["ckpt_path=last"])
