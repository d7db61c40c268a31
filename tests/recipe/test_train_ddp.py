"""DDP over gloo on CPU processes (run as subprocesses, since Lightning's DDP launcher re-executes the
command line): training in lock-step on disjoint shares, and evaluation that counts every utterance once."""
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def _run(args: list[str], out_dir: Path, world_size: int) -> list[dict]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    out_dir.mkdir(parents=True, exist_ok=True)
    done = subprocess.run([sys.executable, str(HERE / "ddp_train.py"), *args], cwd=HERE.parents[1], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return [json.loads((out_dir / f"rank{r}.json").read_text()) for r in range(world_size)]


def test_ddp_two_cpu_processes(tiny_data_overrides, tmp_path):
    ranks = _run(["train", str(tmp_path), *tiny_data_overrides], tmp_path, 2)
    for result in ranks:
        assert result["world_size"] == 2 and result["global_step"] == 4
        assert result["train_loss"] is not None and result["val_wer"] is not None
    # gradients were averaged across the ranks: the weights are identical after every step
    assert ranks[0]["checksum"] == ranks[1]["checksum"]
    assert ranks[0]["val_wer"] == ranks[1]["val_wer"]
    # every epoch, the ranks trained on equally many batches with no utterance in common
    epochs = {epoch for result in ranks for epoch, _ in result["train_batches"]}
    assert len(epochs) >= 2
    for epoch in epochs:
        shares = [[ids for e, ids in result["train_batches"] if e == epoch] for result in ranks]
        assert len(shares[0]) == len(shares[1])
        assert not {i for batch in shares[0] for i in batch} & {i for batch in shares[1] for i in batch}
    # every validation run scored each dev utterance on exactly one rank
    runs = [result["val_ids"] for result in ranks]
    assert len(runs[0]) == len(runs[1]) == 2
    for run in zip(*runs):
        counts = Counter(i for ids in run for i in ids)
        assert len(counts) == 12 and set(counts.values()) == {1}


@pytest.fixture
def single_process_evaluation(tiny_data_overrides, tmp_path):
    """`val/*` and `test/*` of one process evaluating fixed weights (saved at tmp_path/weights.pt)."""
    data = list(tiny_data_overrides)
    return _run(["evaluate", "1", str(tmp_path / "single"), str(tmp_path / "weights.pt"), *data],
                tmp_path / "single", 1)[0], data


def test_ddp_evaluation_counts_every_utterance_once(single_process_evaluation, tmp_path):
    """Three ranks evaluating the same weights log the single-process val/* and test/* values: no
    utterance is counted twice (padding) or left out, and counts are summed, not per-rank rates averaged."""
    single, data = single_process_evaluation
    assert single["num_val_batches"] % 3 != 0  # uneven shards: padding would repeat batches
    for stage in ("val", "test"):  # errors of every kind: a WER that double counting would change
        assert all(single[stage][f"{stage}/{name}_rate"] > 0 for name in ("sub", "del", "ins"))
    ranks = _run(["evaluate", "3", str(tmp_path / "ddp"), str(tmp_path / "weights.pt"), *data], tmp_path / "ddp", 3)
    for result in ranks:
        assert result["world_size"] == 3
        for stage in ("val", "test"):
            for name in ("wer", "sub_rate", "del_rate", "ins_rate"):
                assert result[stage][f"{stage}/{name}"] == single[stage][f"{stage}/{name}"], (stage, name)
            assert result[stage][f"{stage}/loss"] == pytest.approx(single[stage][f"{stage}/loss"], rel=1e-6)
    for stage in ("val", "test"):
        evaluated = Counter(i for result in ranks for i in result[f"{stage}_ids"])
        assert evaluated == Counter(single[f"{stage}_ids"]) and set(evaluated.values()) == {1}
