"""Joiner + loss: dense (torchaudio / seqloss) vs packed vs fused — time and peak extra memory, CPU.

    OMP_NUM_THREADS=1 python benchmarks/bench_joiner.py [--reps 3] [--scale 0.25]

Each (implementation, shape) runs in its own process: forward + backward of joiner + loss,
repeated; the median time is reported, and the peak extra memory is the largest rise of the
process's peak RSS (VmHWM, reset through /proc/self/clear_refs before each repetition) above the
RSS held before it (inputs and weights excluded). Ratios are against "dense+torchaudio" measured
in the same run.

FUSED_BUDGET_MB=<m> sets the fused path's ``memory_budget_mb`` (default: the function's).

Shapes: (B=4, T=200, U=50, H=256, V=1000), (B=8, T=200, U=50, H=512, V=500),
(B=4, T=400, U=100, H=512, V=1000), and a batch of 30
LibriSpeech-like utterances (T 31-680 after 4x subsampling, U 2-151, V=500, H=512; lengths drawn
from a fixed seed, then multiplied by --scale so that the dense path fits in 24 GiB).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

IMPLEMENTATIONS = ["dense+torchaudio", "dense+seqloss", "packed+seqloss", "fused+seqloss"]


def shapes(scale):
    import torch

    gen = torch.Generator().manual_seed(0)
    frames = torch.randint(31, 681, (30,), generator=gen)
    labels = (frames.float() * torch.empty(30).uniform_(0.08, 0.22, generator=gen)).long().clamp(2, 151)
    frames = (frames.float() * scale).long().clamp(min=2)
    labels = (labels.float() * scale).long().clamp(min=1)
    return {
        "B4-T200-U50-H256-V1000": dict(frames=[200] * 4, labels=[50] * 4, vocab=1000, hidden=256),
        "B8-T200-U50-H512-V500": dict(frames=[200] * 8, labels=[50] * 8, vocab=500, hidden=512),
        "B4-T400-U100-H512-V1000": dict(frames=[400] * 4, labels=[100] * 4, vocab=1000, hidden=512),
        f"LibriSpeech-like-B30-H512-V500-x{scale}": dict(frames=frames.tolist(), labels=labels.tolist(), vocab=500,
                                                        hidden=512),
    }


def _rss_kb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1])
    raise RuntimeError(field)


def measure(impl, shape, reps):
    import torch

    import seqloss

    torch.manual_seed(0)
    hidden = shape["hidden"]
    frames, labels, vocab = torch.tensor(shape["frames"]), torch.tensor(shape["labels"]), shape["vocab"]
    batch = len(frames)
    joiner = seqloss.Joiner(hidden, hidden, hidden, vocab)
    enc = torch.randn(batch, int(frames.max()), hidden, requires_grad=True)
    pred = torch.randn(batch, int(labels.max()) + 1, hidden, requires_grad=True)
    targets = torch.randint(1, vocab, (batch, int(labels.max())), dtype=torch.int32)
    frames32, labels32 = frames.int(), labels.int()

    def step():
        if impl == "dense+torchaudio":
            import torchaudio.functional as TAF
            loss = TAF.rnnt_loss(joiner(enc, pred), targets, frames32, labels32, blank=0, reduction="sum")
        elif impl == "dense+seqloss":
            loss = seqloss.rnnt_loss(joiner(enc, pred), targets, frames32, labels32, blank=0, reduction="sum")
        elif impl == "packed+seqloss":
            loss = seqloss.rnnt_loss(joiner.packed(enc, pred, frames, labels), targets, frames32, labels32, blank=0,
                                     reduction="sum")
        else:
            budget = os.environ.get("FUSED_BUDGET_MB")
            budget = {"memory_budget_mb": float(budget)} if budget else {}
            loss = seqloss.fused_transducer_loss(joiner, enc, pred, targets, frames32, labels32, blank=0,
                                                 reduction="sum", **budget)
        loss.backward()
        joiner.zero_grad(set_to_none=True)
        enc.grad = pred.grad = None
        return float(loss.detach())

    value = step()  # warm-up
    times, peaks = [], []
    for _ in range(reps):
        before = _rss_kb("VmRSS")
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
        peaks.append((_rss_kb("VmHWM") - before) / 1024)
    return {"time_s": statistics.median(times), "peak_mb": max(peaks), "loss": value}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--scale", type=float, default=0.25)
    parser.add_argument("--only", help=argparse.SUPPRESS)
    parser.add_argument("--shape", help=argparse.SUPPRESS)
    parser.add_argument("--shapes", nargs="+", help="only these shapes (names as printed)")
    args = parser.parse_args()
    if args.only:
        print(json.dumps(measure(args.only, shapes(args.scale)[args.shape], args.reps)))
        return
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    print(f"OMP_NUM_THREADS={env['OMP_NUM_THREADS']}, reps={args.reps}, forward+backward of joiner + loss")
    for name in args.shapes or shapes(args.scale):
        results = {}
        for impl in IMPLEMENTATIONS:
            out = subprocess.run([sys.executable, __file__, "--only", impl, "--shape", name, "--scale", str(args.scale),
                                  "--reps", str(args.reps)], capture_output=True, text=True, env=env)
            if out.returncode != 0:
                results[impl] = None
                print(f"  {impl} failed: {out.stderr.strip().splitlines()[-1:]}")
                continue
            results[impl] = json.loads(out.stdout.strip().splitlines()[-1])
        base = results["dense+torchaudio"]
        print(f"\n{name}")
        dense = results.get("dense+seqloss")
        print(f"  {'implementation':<18} {'time s':>8} {'x dense+ta':>10} {'x dense+sl':>10} {'peak MB':>9}"
              f" {'x dense+ta':>10}  loss")
        for impl, r in results.items():
            if r is None:
                continue
            t_ratio = r["time_s"] / base["time_s"] if base else float("nan")
            t_dense = r["time_s"] / dense["time_s"] if dense else float("nan")
            m_ratio = r["peak_mb"] / base["peak_mb"] if base else float("nan")
            print(f"  {impl:<18} {r['time_s']:8.3f} {t_ratio:10.2f} {t_dense:10.2f} {r['peak_mb']:9.1f}"
                  f" {m_ratio:10.3f}  {r['loss']:.4f}", flush=True)


if __name__ == "__main__":
    main()
