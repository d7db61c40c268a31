"""Benchmark seqloss on a CUDA GPU against torchaudio's rnnt_loss and torch's ctc_loss (cuDNN and native).

    python benchmarks/bench_gpu.py --json out.json              # LibriSpeech-like shapes on cuda
    python benchmarks/bench_gpu.py --tiny --device cpu           # tiny shapes on the CPU (a smoke run)

Shapes: B=32, T=500, U=100 and V=500 and 1024 (``--tiny``: B=2, T=20, U=5, V=16 and 32).
Cases (each in float32, and in bf16 where the implementation supports it; an implementation
that rejects a dtype is reported as unsupported, not as a failure):

* ``ctc``: ``seqloss.ctc_loss`` vs ``F.ctc_loss`` with padded int64 targets (torch's native CUDA
  kernel) and with concatenated int32 targets and every input length == T (the cuDNN kernel,
  when cuDNN accepts the call: ``torch._use_cudnn_ctc_loss`` is recorded);
* ``rnnt``: ``seqloss.rnnt_loss`` vs ``torchaudio.functional.rnnt_loss`` on dense logits;
* ``joiner+rnnt``: ``seqloss.fused_transducer_loss`` (never builds the (B, T, U+1, V) logits) vs
  ``seqloss.Joiner`` dense logits + torchaudio (joiner dimension 512; ``--tiny``: 16).

Each measurement is forward + backward (the gradient w.r.t. every input); the time is the median
over ``--reps`` calls after ``--warmup`` calls, with CUDA events on a GPU (perf_counter on the CPU);
the peak memory is ``torch.cuda.max_memory_allocated`` during one call minus the memory allocated
before it (GPU only). Every seqloss loss must equal its peer's within a tolerance (float32: 1e-3
relative): a mismatch, or any seqloss failure, fails the run (exit status 1).
"""
import argparse
import gc
import json
import statistics
import sys
import time

import torch

LIBRISPEECH = dict(B=32, T=500, U=100, vocabs=(500, 1024), joiner_dim=512)
TINY = dict(B=2, T=20, U=5, vocabs=(16, 32), joiner_dim=16)
DTYPES = {"float32": torch.float32, "bf16": torch.bfloat16}


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(fn, device, warmup, reps):
    """(median seconds, peak extra MB or None, the last value) of ``fn()`` (which returns a loss and
    runs its backward)."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(reps):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            value = fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            begin = time.perf_counter()
            value = fn()
            times.append(time.perf_counter() - begin)
    peak = None
    if device.type == "cuda":
        gc.collect()
        _sync(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        value = fn()
        _sync(device)
        peak = (torch.cuda.max_memory_allocated(device) - before) / 2**20
    return statistics.median(times), peak, value


def _grad_call(loss_fn, leaves):
    def call():
        loss = loss_fn()
        torch.autograd.grad(loss, leaves)
        return float(loss.detach())
    return call


def ctc_cases(shape, V, dtype, device):
    """name -> (callable, is_seqloss)."""
    import seqloss

    B, T, U = shape["B"], shape["T"], shape["U"]
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(T, B, V, generator=gen).log_softmax(-1).to(device, dtype).requires_grad_()
    targets = torch.randint(1, V, (B, U), generator=gen)
    target_lengths = torch.randint(U // 2, U + 1, (B,), generator=gen)
    target_lengths[0] = U
    input_lengths = torch.full((B,), T, dtype=torch.long)  # all == T: one of cuDNN's conditions
    padded, il, tl = targets.to(device), input_lengths.to(device), target_lengths.to(device)
    concatenated = torch.cat([targets[b, : target_lengths[b]] for b in range(B)]).int().to(device)
    il32, tl32 = input_lengths.int().to(device), target_lengths.int().to(device)
    cases = {
        "seqloss": (_grad_call(lambda: seqloss.ctc_loss(x, padded, il, tl, reduction="sum"), [x]), True),
        "torch native": (_grad_call(lambda: torch.nn.functional.ctc_loss(x, padded, il, tl, reduction="sum"), [x]),
                         False),
        "torch cudnn": (_grad_call(lambda: torch.nn.functional.ctc_loss(x, concatenated, il32, tl32,
                                                                        reduction="sum"), [x]), False),
    }
    info = {}
    try:
        info["cudnn_eligible"] = bool(torch._use_cudnn_ctc_loss(x, concatenated, il32, tl32, 0))
    except (AttributeError, RuntimeError, TypeError) as error:
        info["cudnn_eligible"] = f"unknown ({type(error).__name__})"
    return cases, info


def rnnt_cases(shape, V, dtype, device):
    import seqloss

    B, T, U = shape["B"], shape["T"], shape["U"]
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(B, T, U + 1, V, generator=gen).to(device, dtype).requires_grad_()
    targets = torch.randint(1, V, (B, U), generator=gen, dtype=torch.int32).to(device)
    ll = torch.randint(T * 4 // 5, T + 1, (B,), generator=gen, dtype=torch.int32)
    tl = torch.randint(U // 2, U + 1, (B,), generator=gen, dtype=torch.int32)
    ll[0], tl[0] = T, U
    ll, tl = ll.to(device), tl.to(device)

    def torchaudio_loss():
        import torchaudio.functional as TAF
        return TAF.rnnt_loss(logits, targets, ll, tl, blank=0, reduction="sum")

    return {"seqloss": (_grad_call(lambda: seqloss.rnnt_loss(logits, targets, ll, tl, blank=0, reduction="sum"),
                                   [logits]), True),
            "torchaudio": (_grad_call(torchaudio_loss, [logits]), False)}, {}


def joiner_cases(shape, V, dtype, device):
    import seqloss

    B, T, U, H = shape["B"], shape["T"], shape["U"], shape["joiner_dim"]
    torch.manual_seed(2)
    joiner = seqloss.Joiner(H, H, H, V).to(device, dtype)
    gen = torch.Generator().manual_seed(2)
    enc = torch.randn(B, T, H, generator=gen).to(device, dtype).requires_grad_()
    pred = torch.randn(B, U + 1, H, generator=gen).to(device, dtype).requires_grad_()
    targets = torch.randint(1, V, (B, U), generator=gen, dtype=torch.int32).to(device)
    ll = torch.randint(T * 4 // 5, T + 1, (B,), generator=gen, dtype=torch.int32)
    tl = torch.randint(U // 2, U + 1, (B,), generator=gen, dtype=torch.int32)
    ll[0], tl[0] = T, U
    ll, tl = ll.to(device), tl.to(device)
    leaves = [enc, pred, *joiner.parameters()]

    def dense_torchaudio():
        import torchaudio.functional as TAF
        return TAF.rnnt_loss(joiner(enc, pred), targets, ll, tl, blank=0, reduction="sum")

    fused = lambda: seqloss.fused_transducer_loss(joiner, enc, pred, targets, ll, tl, blank=0,  # noqa: E731
                                                  reduction="sum")
    return {"seqloss fused": (_grad_call(fused, leaves), True),
            "dense+torchaudio": (_grad_call(dense_torchaudio, leaves), False)}, {}


CASES = {"ctc": ctc_cases, "rnnt": rnnt_cases, "joiner+rnnt": joiner_cases}


def run(device, shape, warmup, reps, rtol):
    """Every (case, V, dtype, implementation) row; `ok` is False if a seqloss row failed or disagreed."""
    rows, ok = [], True
    for case, make in CASES.items():
        for V in shape["vocabs"]:
            for dtype_name, dtype in DTYPES.items():
                cases, info = make(shape, V, dtype, device)
                reference = None
                for impl, (fn, is_seqloss) in cases.items():
                    row = {"case": case, "V": V, "dtype": dtype_name, "impl": impl, **info}
                    try:
                        seconds, peak, value = measure(fn, device, warmup, reps)
                        row.update(status="ok", ms=1e3 * seconds, peak_mb=peak, loss=value)
                    except (RuntimeError, ValueError, NotImplementedError, TypeError) as error:
                        text = str(error).strip()
                        message = text.splitlines()[0][:200] if text else type(error).__name__
                        # a peer that rejects a dtype or shape is a fact about the peer; seqloss must run
                        row.update(status="failed" if is_seqloss else "unsupported", error=message)
                        ok &= not is_seqloss
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
                    rows.append(row)
                    if row["status"] != "ok":
                        continue
                    if is_seqloss:
                        reference = row
                    elif reference is not None:
                        tol = rtol if dtype == torch.float32 else 5e-2
                        agree = abs(row["loss"] - reference["loss"]) <= tol * max(1.0, abs(reference["loss"]))
                        row["agrees_with_seqloss"] = agree
                        row["time_ratio_seqloss_to_peer"] = reference["ms"] / row["ms"]
                        if reference["peak_mb"] and row["peak_mb"]:
                            row["memory_ratio_seqloss_to_peer"] = reference["peak_mb"] / row["peak_mb"]
                        ok &= agree or dtype != torch.float32  # bf16 values differ by rounding alone
                del cases
                gc.collect()
    return rows, ok


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="tiny shapes (a smoke run, e.g. on the CPU)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--rtol", type=float, default=1e-3)
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: CUDA is not available (use --device cpu --tiny)")
    shape = TINY if args.tiny else LIBRISPEECH
    rows, ok = run(device, shape, args.warmup, args.reps, args.rtol)
    print(f"{'case':<12} {'V':>5} {'dtype':<8} {'implementation':<17} {'ms':>9} {'peak MB':>9} {'loss':>14}  note")
    for r in rows:
        note = r.get("error", "")
        if "time_ratio_seqloss_to_peer" in r:
            memory = r.get("memory_ratio_seqloss_to_peer")
            note = (f"seqloss/this: time {r['time_ratio_seqloss_to_peer']:.2f}" +
                    (f", memory {memory:.2f}" if memory is not None else "") +
                    ("" if r["agrees_with_seqloss"] else "  LOSS MISMATCH"))
        ms = f"{r['ms']:9.2f}" if "ms" in r else f"{r['status']:>9}"
        peak = f"{r['peak_mb']:9.1f}" if r.get("peak_mb") is not None else f"{'-':>9}"
        loss = f"{r['loss']:14.4f}" if "loss" in r else f"{'-':>14}"
        print(f"{r['case']:<12} {r['V']:>5} {r['dtype']:<8} {r['impl']:<17} {ms} {peak} {loss}  {note}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": str(device), "shape": shape, "ok": ok, "rows": rows,
                       "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None}, f, indent=2)
    print("benchmark " + ("passed" if ok else "FAILED: a seqloss row failed or disagreed with its peer"))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
