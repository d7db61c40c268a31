"""trainer=ddp_cpu: two processes over gloo train in lock-step (run as a subprocess, since Lightning's
DDP launcher re-executes the command line)."""
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def test_ddp_two_cpu_processes(tiny_data_overrides, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    done = subprocess.run([sys.executable, str(HERE / "ddp_train.py"), str(tmp_path), *tiny_data_overrides],
                          cwd=HERE.parents[1], env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for result in ranks:
        assert result["world_size"] == 2 and result["global_step"] == 4
        assert result["train_loss"] is not None and result["val_wer"] is not None
    # gradients were averaged across the ranks: the weights are identical after every step
    assert ranks[0]["checksum"] == ranks[1]["checksum"]
    assert ranks[0]["val_wer"] == ranks[1]["val_wer"]
