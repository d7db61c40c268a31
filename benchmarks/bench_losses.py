"""Benchmark seqloss against its peers on the CPU: median time and peak extra memory, as ratios.

    OMP_NUM_THREADS=1 python benchmarks/bench_losses.py            # every case, 1 thread
    python benchmarks/bench_losses.py --cases rnnt_small --threads 2

Each (case, implementation, mode) is measured in a fresh subprocess (``--worker``), so that
warm-up, compilation and allocator caches of one measurement never affect another:
* time: median over repeats (at least 3 and 2 s) after warm-up calls (seqloss: two, which compile
  its V-wide stages; the peers: one);
* peak extra memory: the process's peak resident set (VmHWM, reset through /proc/self/clear_refs)
  during one more call, minus the resident set before it; glibc is told to return every block of
  64 KiB or more to the system when freed (MALLOC_MMAP_THRESHOLD_), so the resident set follows
  live tensors.
Modes: ``fwd`` (the loss, inputs requiring grad as in training) and ``fwd+bwd`` (the loss and its
gradient w.r.t. every input, via torch.autograd.grad).
Implementations: seqloss with ``backend="native"`` and ``backend="torch"``, torch's
``F.ctc_loss``, torchaudio's ``rnnt_loss``. Ratios are taken between measurements of the same run.
``ssnt_gathered`` runs the SSNT case's utterances through ``ssnt_loss_gathered`` (no V dimension).
``--inplace`` adds RNN-T fwd+bwd with the logits made by a joiner output layer
(``linear(hidden, weight)``), ``inplace_grad=True`` against the default.
"""
import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

CASES = {
    # name: (loss, shape, peers)
    "ctc_long": ("ctc", dict(T=500, B=16, V=500, U=100), ["torch_ctc"]),
    "ctc_wide_batch": ("ctc", dict(T=128, B=256, V=32, U=30), ["torch_ctc"]),
    "rnnt_small": ("rnnt", dict(B=8, T=200, U=50, V=500), ["torchaudio"]),
    "rnnt_large": ("rnnt", dict(B=4, T=400, U=100, V=1000), ["torchaudio"]),
    "ssnt": ("ssnt", dict(B=8, S=200, J=40, V=500), []),
    # the same utterances through ssnt_loss_gathered: token scores (B, J, S) instead of (B, J, S, V)
    "ssnt_gathered": ("ssnt_gathered", dict(B=8, S=200, J=40), []),
}
MODES = ("fwd", "fwd+bwd")
JOINER_HIDDEN = 64  # hidden size of the joiner output layer in the --inplace comparison


def _inputs(loss, shape, torch):
    """Seeded inputs with ragged lengths (the longest at full size); leaves require grad."""
    gen = torch.Generator().manual_seed(0)

    def ragged(batch, high, low):
        lengths = torch.randint(low, high + 1, (batch,), generator=gen)
        lengths[0] = high
        return lengths

    if loss == "ctc":
        T, B, V, U = shape["T"], shape["B"], shape["V"], shape["U"]
        log_probs = torch.randn(T, B, V, generator=gen).log_softmax(-1).requires_grad_()
        targets = torch.randint(1, V, (B, U), generator=gen)
        return (log_probs,), (targets, ragged(B, T, T * 4 // 5), ragged(B, U, U // 2))
    if loss == "rnnt":
        B, T, U, V = shape["B"], shape["T"], shape["U"], shape["V"]
        logits = torch.randn(B, T, U + 1, V, generator=gen).requires_grad_()
        targets = torch.randint(1, V, (B, U), generator=gen, dtype=torch.int32)
        return (logits,), (targets, ragged(B, T, T * 4 // 5).int(), ragged(B, U, U // 2).int())
    if loss == "ssnt_gathered":
        B, S, J = shape["B"], shape["S"], shape["J"]
        token = torch.nn.functional.logsigmoid(torch.randn(B, J, S, generator=gen) - 3).requires_grad_()
        log_p_choose = torch.nn.functional.logsigmoid(torch.randn(B, J, S, generator=gen)).requires_grad_()
        return (token, log_p_choose), (ragged(B, S, S * 4 // 5), ragged(B, J, J // 2))
    B, S, J, V = shape["B"], shape["S"], shape["J"], shape["V"]
    log_probs = torch.randn(B, J, S, V, generator=gen).log_softmax(-1).requires_grad_()
    log_p_choose = torch.nn.functional.logsigmoid(torch.randn(B, J, S, generator=gen)).requires_grad_()
    targets = torch.randint(0, V, (B, J), generator=gen)
    return (log_probs, log_p_choose), (targets, ragged(B, S, S * 4 // 5), ragged(B, J, J // 2))


def _loss_fn(loss, impl, torch):
    if impl in ("native_from_op", "native_inplace"):
        # logits from a joiner's output layer: linear(hidden (B, T, U+1, H), weight (V, H))
        import seqloss
        inplace = impl == "native_inplace"
        return lambda h, w, tg, ll, tl: seqloss.rnnt_loss(torch.nn.functional.linear(h, w), tg, ll, tl, blank=0,
                                                          backend="native", inplace_grad=inplace)
    if impl in ("native", "torch"):
        import seqloss
        if loss == "ctc":
            return lambda lp, tg, il, tl: seqloss.ctc_loss(lp, tg, il, tl, backend=impl)
        if loss == "rnnt":
            return lambda x, tg, ll, tl: seqloss.rnnt_loss(x, tg, ll, tl, blank=0, backend=impl)
        if loss == "ssnt_gathered":
            return lambda tok, ch, sl, tl: seqloss.ssnt_loss_gathered(tok, ch, sl, tl, backend=impl)
        return lambda lp, ch, tg, sl, tl: seqloss.ssnt_loss(lp, tg, ch, sl, tl, backend=impl)
    if impl == "torch_ctc":
        return lambda lp, tg, il, tl: torch.nn.functional.ctc_loss(lp, tg, il, tl)
    import torchaudio
    return lambda x, tg, ll, tl: torchaudio.functional.rnnt_loss(x, tg, ll, tl, blank=0)


def _status_kib(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def worker(case, impl, mode, threads):
    import torch
    torch.set_num_threads(threads)
    loss, shape, _ = CASES[case]
    leaves, rest = _inputs(loss, shape, torch)
    if impl in ("native_from_op", "native_inplace"):
        gen = torch.Generator().manual_seed(1)
        hidden = torch.randn(*leaves[0].shape[:-1], JOINER_HIDDEN, generator=gen).requires_grad_()
        weight = (torch.randn(leaves[0].shape[-1], JOINER_HIDDEN, generator=gen) / JOINER_HIDDEN ** 0.5)
        leaves = (hidden, weight.requires_grad_())
    fn = _loss_fn(loss, impl, torch)

    def call():
        value = fn(*leaves, *rest)
        if mode == "fwd":
            return value
        return torch.autograd.grad(value, leaves)

    for _ in range(1 if impl in ("torch_ctc", "torchaudio") else 2):  # seqloss compiles its V-wide stages on first use
        call()
    times = []
    while len(times) < 3 or (sum(times) < 2.0 and len(times) < 15):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    gc.collect()
    before = _status_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")
    out = call()
    peak = _status_kib("VmHWM")
    del out
    return {"time_s": statistics.median(times), "repeats": len(times), "peak_extra_mb": (peak - before) / 1024}


def measure(case, impl, mode, threads):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MALLOC_MMAP_THRESHOLD_="65536")
    cmd = [sys.executable, __file__, "--worker", case, impl, mode, "--threads", str(threads)]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--scaling", action="store_true",
                        help="also time the native RNN-T and CTC fwd+bwd with 2 threads")
    parser.add_argument("--inplace", action="store_true",
                        help="also compare rnnt_loss(inplace_grad=True) with the default, logits from an op")
    parser.add_argument("--worker", nargs=3, metavar=("CASE", "IMPL", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(*args.worker, args.threads)))
        return
    rows = []
    for case in args.cases:
        loss, shape, peers = CASES[case]
        results = {}
        for impl in ["native", "torch", *peers]:
            for mode in MODES:
                results[impl, mode] = measure(case, impl, mode, args.threads)
                r = results[impl, mode]
                print(f"# {case} {impl:10s} {mode:8s} {r['time_s'] * 1e3:10.1f} ms  {r['peak_extra_mb']:8.1f} MB "
                      f"({r['repeats']} repeats)", flush=True)
        shape_text = ",".join(f"{k}={v}" for k, v in shape.items())
        for ref in [*peers, "torch"]:
            cells = []
            for mode in MODES:
                n, p = results["native", mode], results[ref, mode]
                cells += [f"{n['time_s'] * 1e3:.1f} / {p['time_s'] * 1e3:.1f} = **{n['time_s'] / p['time_s']:.3f}**",
                          f"{n['peak_extra_mb']:.0f} / {p['peak_extra_mb']:.0f} = "
                          f"**{n['peak_extra_mb'] / max(p['peak_extra_mb'], 1e-9):.2f}**"]
            name = {"torch": "seqloss torch backend"}.get(ref, ref)
            rows.append(f"| {case} ({shape_text}) | {name} | " + " | ".join(cells) + " |")
    if args.scaling:
        for case in ("rnnt_small", "ctc_long", "ctc_wide_batch"):
            one, two = measure(case, "native", "fwd+bwd", 1), measure(case, "native", "fwd+bwd", 2)
            rows.append(f"| {case} native fwd+bwd, 1 vs 2 threads | | {one['time_s'] * 1e3:.1f} ms / "
                        f"{two['time_s'] * 1e3:.1f} ms = **{one['time_s'] / two['time_s']:.2f}x** speed-up | | | |")
    if args.inplace:
        for case in ("rnnt_small", "rnnt_large"):
            default, inplace = (measure(case, impl, "fwd+bwd", args.threads) for impl in ("native_from_op",
                                                                                          "native_inplace"))
            rows.append(f"| {case} fwd+bwd, logits = linear(hidden H={JOINER_HIDDEN}, weight): inplace_grad=True / "
                        f"default | | | | "
                        f"{inplace['time_s'] * 1e3:.1f} / {default['time_s'] * 1e3:.1f} = "
                        f"**{inplace['time_s'] / default['time_s']:.3f}** | {inplace['peak_extra_mb']:.0f} / "
                        f"{default['peak_extra_mb']:.0f} = "
                        f"**{inplace['peak_extra_mb'] / max(default['peak_extra_mb'], 1e-9):.2f}** |")
    print(f"\nthreads={args.threads}; ratios are seqloss native / reference (time: lower is faster)\n")
    print("| case | reference | fwd time ms (native / ref = ratio) | fwd peak extra MB | "
          "fwd+bwd time ms | fwd+bwd peak extra MB |")
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
