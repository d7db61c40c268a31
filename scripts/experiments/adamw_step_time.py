"""Time of one AdamW optimizer.step() for the default model's parameters, fused vs the per-tensor
loop (RESULTS.md: why conf/model/lstm.yaml sets `fused: true`).

    OMP_NUM_THREADS=1 python scripts/experiments/adamw_step_time.py [--loss rnnt] [--vocab-size 257]
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "conf"
sys.path.insert(0, str(ROOT))  # `recipes`, for the _target_ nodes


def model_parameters(loss: str, vocab_size: int) -> list[torch.nn.Parameter]:
    """Parameters of the transcriber, predictor, joiner and heads that `train.py loss=<loss>` builds."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=[f"loss={loss}", f"vocab_size={vocab_size}"])
    params = []
    for part in ("transcriber", "predictor", "joiner", "ctc_head", "choose_head"):
        node = cfg.model.get(part)
        if node is not None:
            params += list(instantiate(node).parameters())
    return params


def step_time(params, fused: bool, repeats: int) -> float:
    """Median seconds of optimizer.step() over `repeats` steps (after 3 warm-up steps)."""
    for p in params:
        p.grad = torch.randn_like(p)
    optimizer = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.98), weight_decay=0.01, fused=fused)
    times = []
    for i in range(repeats + 3):
        start = time.perf_counter()
        optimizer.step()
        if i >= 3:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--loss", default="rnnt", choices=["ctc", "rnnt", "modified_rnnt", "ssnt"])
    parser.add_argument("--vocab-size", type=int, default=257, help="tokens including blank (BPE 256 + blank)")
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args(argv)
    params = model_parameters(args.loss, args.vocab_size)
    count = sum(p.numel() for p in params)
    for fused in (True, False):
        print(f"{count / 1e6:.2f} M parameters, fused={fused}: "
              f"{1e3 * step_time(params, fused, args.repeats):.1f} ms per step")


if __name__ == "__main__":
    main(sys.argv[1:])
