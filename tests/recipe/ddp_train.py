"""DDP over gloo with 2 CPU processes: `python ddp_train.py OUT_DIR [DATA_OVERRIDES...]`.

Lightning's DDP launcher re-runs this script for rank 1, so both ranks compose the same config.
Each rank writes OUT_DIR/rank<r>.json with its world size, step count, skipped batches and a
checksum of its weights (equal on both ranks when gradients were all-reduced).
"""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from recipe_cfg import compose_train  # noqa: E402
from train import train  # noqa: E402


def main() -> None:
    out_dir = Path(sys.argv[1])
    cfg = compose_train(["loss=rnnt", "trainer=ddp_cpu", "logger=csv", "trainer.max_steps=4", "trainer.max_epochs=-1",
                         "trainer.val_check_interval=2", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1",
                         "trainer.num_sanity_val_steps=0"], out_dir, data=sys.argv[2:])
    metrics, objects = train(cfg)
    trainer, model = objects["trainer"], objects["model"]
    weights = torch.cat([p.detach().flatten().double() for p in model.parameters()])
    result = {
        "world_size": trainer.world_size,
        "global_step": trainer.global_step,
        "checksum": [float(weights.sum()), float((weights * torch.arange(len(weights))).sum())],
        "val_wer": metrics.get("val/wer"),
        "train_loss": metrics.get("train/loss"),
    }
    (out_dir / f"rank{trainer.global_rank}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main()
