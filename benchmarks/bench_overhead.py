"""Per-call cost of seqloss's CPU losses against their peers, ragged vs full lengths, in one process.

    OMP_NUM_THREADS=1 python benchmarks/bench_overhead.py                    # every case
    OMP_NUM_THREADS=1 python benchmarks/bench_overhead.py --cases rnnt_tiny --rounds 50

Each case builds seeded float32 inputs twice: with ragged lengths (the first utterance at full
size, the others drawn from 4/5 of T and 1/2 of U up, as in bench_losses.py) and with every
utterance at full size. Every implementation is warmed up (seqloss: three calls, which also
compile its V-wide stages where it compiles them), then the implementations take turns, one
forward + backward call (``torch.autograd.grad`` w.r.t. the scores) each per round, so that the
drift of a shared machine hits them alike; the time is the median over the rounds. Ratios are
seqloss native / peer from the same run.

Peers: torchaudio's ``rnnt_loss`` and, where importable, optimized_transducer's ``transducer_loss``
(``from_log_softmax=False``: log-softmax inside, as seqloss and torchaudio; packed logits of the
valid cells, made once outside the timing) for RNN-T; torch's ``F.ctc_loss`` for CTC; for SSNT,
where importable, ssnt-loss's ``ssnt_loss_mem`` (pure PyTorch, target rows packed: (sum_b J_b, S, V)
log-probs and the choose logits, made once outside the timing). For RNN-T and SSNT seqloss runs
twice: on the dense padded input ("seqloss") and on the same packed rows as the peer ("seqloss
packed"), which shows what the padded cells of the dense input cost.
How to make the two peers importable: docs/kernels.md, "Benchmark peers".
"""
import argparse
import statistics
import time

import torch

import seqloss

CASES = {
    # name: (loss, shape)
    "rnnt_tiny": ("rnnt", dict(B=32, T=100, U=20, V=30)),
    "rnnt_small": ("rnnt", dict(B=8, T=200, U=50, V=500)),
    "rnnt_large": ("rnnt", dict(B=4, T=400, U=100, V=1000)),
    "ctc_long": ("ctc", dict(T=500, B=16, V=500, U=100)),
    "ctc_wide_batch": ("ctc", dict(T=128, B=256, V=32, U=30)),
    "ssnt": ("ssnt", dict(B=8, S=200, J=40, V=500)),
}


def _lengths(gen, batch, high, low, full):
    lengths = torch.randint(low, high + 1, (batch,), generator=gen)
    lengths[0] = high
    return torch.full_like(lengths, high) if full else lengths


def make_inputs(loss, shape, full):
    """(leaves requiring grad, other arguments) for `loss`, seeded."""
    gen = torch.Generator().manual_seed(0)
    if loss == "rnnt":
        B, T, U, V = shape["B"], shape["T"], shape["U"], shape["V"]
        logits = torch.randn(B, T, U + 1, V, generator=gen).requires_grad_()
        targets = torch.randint(1, V, (B, U), generator=gen, dtype=torch.int32)
        return (logits,), (targets, _lengths(gen, B, T, T * 4 // 5, full).int(),
                           _lengths(gen, B, U, U // 2, full).int())
    if loss == "ctc":
        T, B, V, U = shape["T"], shape["B"], shape["V"], shape["U"]
        log_probs = torch.randn(T, B, V, generator=gen).log_softmax(-1).requires_grad_()
        targets = torch.randint(1, V, (B, U), generator=gen)
        return (log_probs,), (targets, _lengths(gen, B, T, T * 4 // 5, full), _lengths(gen, B, U, U // 2, full))
    B, S, J, V = shape["B"], shape["S"], shape["J"], shape["V"]
    log_probs = torch.randn(B, J, S, V, generator=gen).log_softmax(-1).requires_grad_()
    log_p_choose = torch.nn.functional.logsigmoid(torch.randn(B, J, S, generator=gen) - 1).requires_grad_()
    targets = torch.randint(0, V, (B, J), generator=gen)
    return (log_probs, log_p_choose), (targets, _lengths(gen, B, S, S * 4 // 5, full),
                                       _lengths(gen, B, J, J // 2, full))


def implementations(loss, leaves, rest, peers=True):
    """{name: call} for seqloss and (``peers``) the importable peers of `loss`; call() runs one forward + backward."""
    def grad_of(fn, inputs):
        return lambda: torch.autograd.grad(fn(*inputs, *rest), inputs)

    if not peers:
        return {"seqloss": implementations(loss, leaves, rest)["seqloss"]}
    if loss == "rnnt":
        import torchaudio
        impls = {
            "seqloss": grad_of(lambda x, tg, ll, tl: seqloss.rnnt_loss(x, tg, ll, tl, blank=0, reduction="sum",
                                                                       backend="native"), leaves),
            "torchaudio": grad_of(lambda x, tg, ll, tl: torchaudio.functional.rnnt_loss(x, tg, ll, tl, blank=0,
                                                                                        reduction="sum"), leaves),
        }
        # the valid rows only, packed (sum_b T_b (U_b+1), V), made once here: seqloss on them ("seqloss
        # packed", to compare with its dense input) and optimized_transducer, which writes the gradient over
        # them (from the second call on it runs on the previous gradient: same cost)
        (x,), (_, ll, tl) = leaves, rest
        packed = torch.cat([x[b, : ll[b], : tl[b] + 1].reshape(-1, x.shape[-1]) for b in range(x.shape[0])])
        impls["seqloss packed"] = grad_of(lambda p, tg, ll, tl: seqloss.rnnt_loss(p, tg, ll, tl, blank=0,
                                                                                  reduction="sum", backend="native"),
                                          (packed.detach().requires_grad_(),))
        try:
            import optimized_transducer
        except ImportError:
            return impls
        impls["optimized_transducer"] = grad_of(
            lambda p, tg, ll, tl: optimized_transducer.transducer_loss(p, tg, ll, tl, blank=0, from_log_softmax=False,
                                                                       reduction="sum"),
            (packed.detach().requires_grad_(),))
        return impls
    if loss == "ctc":
        return {"seqloss": grad_of(lambda lp, tg, il, tl: seqloss.ctc_loss(lp, tg, il, tl, reduction="sum",
                                                                           backend="native"), leaves),
                "torch": grad_of(lambda lp, tg, il, tl: torch.nn.functional.ctc_loss(lp, tg, il, tl, reduction="sum"),
                                 leaves)}
    (log_probs, log_p_choose), (targets, source_lengths, target_lengths) = leaves, rest
    # the valid target rows only, b then j (seqloss's packed layout and ssnt-loss's), made once here
    rows = torch.arange(targets.shape[1])[None, :] < target_lengths[:, None]
    packed_lp = log_probs.detach()[rows].requires_grad_()
    packed_choose = log_p_choose.detach()[rows].requires_grad_()
    packed_targets = targets[rows]

    def ours(lp, tg, ch):
        return lambda: torch.autograd.grad(
            seqloss.ssnt_loss(lp, tg, ch, source_lengths, target_lengths, reduction="sum", backend="native"), (lp, ch))

    impls = {"seqloss": ours(log_probs, targets, log_p_choose),
             "seqloss packed": ours(packed_lp, packed_targets, packed_choose)}
    try:
        import inspect

        from ssnt_loss import ssnt_loss_mem
    except ImportError:
        return impls
    # its current API takes the choose logits (emit_logits, logsigmoid inside), older ones log_p_choose
    choose_logits = (packed_choose - torch.log(-torch.expm1(packed_choose))).detach().requires_grad_()
    peer_lp = packed_lp.detach().clone().requires_grad_()
    if "emit_logits" in inspect.signature(ssnt_loss_mem).parameters:
        def peer(lp, ch):
            return ssnt_loss_mem(lp, packed_targets, source_lengths, target_lengths, emit_logits=ch, reduction="sum")
    else:
        def peer(lp, ch):
            return ssnt_loss_mem(lp, packed_targets, torch.nn.functional.logsigmoid(ch), source_lengths,
                                 target_lengths, reduction="sum")
    def peer_loss(lp, ch):  # newer versions return (loss, lattice, log_emit)
        out = peer(lp, ch)
        return out[0] if isinstance(out, tuple) else out

    with torch.no_grad():  # the same numbers, or the comparison means nothing
        ours_value = seqloss.ssnt_loss(packed_lp, packed_targets, packed_choose, source_lengths, target_lengths,
                                       reduction="sum")
        torch.testing.assert_close(peer_loss(peer_lp, choose_logits), ours_value, rtol=1e-4, atol=1e-3)
    impls["ssnt_loss_mem"] = lambda: torch.autograd.grad(peer_loss(peer_lp, choose_logits), (peer_lp, choose_logits))
    return impls


def run_case(name, rounds, peers=True):
    loss, shape = CASES[name]
    rows = []
    for full in (False, True):
        leaves, rest = make_inputs(loss, shape, full)
        calls = implementations(loss, leaves, rest, peers)
        for call in calls.values():
            for _ in range(3):
                call()
        times = {key: [] for key in calls}
        for _ in range(rounds):
            for key, call in calls.items():
                start = time.perf_counter()
                call()
                times[key].append(time.perf_counter() - start)
        medians = {key: statistics.median(values) * 1e3 for key, values in times.items()}
        rows.append((full, medians))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--rounds", type=int, default=0,
                        help="timed rounds per case (default: 30 for the small cases, 8 for the others)")
    parser.add_argument("--no-peers", action="store_true", help="time seqloss alone (e.g. to compare two commits)")
    args = parser.parse_args()
    print(f"threads={torch.get_num_threads()}; fwd+bwd ms per call, median; ratio = seqloss / peer")
    print("| case | lengths | seqloss ms | peer | peer ms | ratio |")
    print("|---|---|---|---|---|---|")
    for name in args.cases:
        rounds = args.rounds or {"rnnt_tiny": 30, "rnnt_large": 5}.get(name, 8)
        shape_text = ",".join(f"{k}={v}" for k, v in CASES[name][1].items())
        for full, medians in run_case(name, rounds, not args.no_peers):
            lengths = "full" if full else "ragged"
            ours = [key for key in medians if key.startswith("seqloss")]
            peers = [key for key in medians if not key.startswith("seqloss")]
            for mine in ours:
                label = f"{name} ({shape_text}){' packed' if mine != 'seqloss' else ''}"
                for peer in peers or [None]:
                    peer_text = (f"{peer} | {medians[peer]:.2f} | **{medians[mine] / medians[peer]:.3f}**"
                                 if peer else "- | - | -")
                    print(f"| {label} | {lengths} | {medians[mine]:.2f} | {peer_text} |", flush=True)


if __name__ == "__main__":
    main()
