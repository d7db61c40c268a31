"""Self-checks of the brute-force references against outside implementations and hand computations."""

import math
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

try:
    from . import brute_force as bf
except ImportError:  # tests/seqloss is not a package: pytest puts this directory on sys.path
    import brute_force as bf

torch.set_num_threads(1)
F64 = torch.float64
LSE = torch.logaddexp


def _close(a, b, tol=1e-9):
    a, b = (float(x.detach()) if isinstance(x, torch.Tensor) else float(x) for x in (a, b))
    if math.isinf(a) or math.isinf(b):
        return a == b
    return abs(a - b) <= tol * max(1.0, abs(b))


# ------------------------------------------------------------------------------------ CTC


CTC_CASES = [  # (T, V, target, blank)
    (1, 2, [1], 0),
    (3, 3, [1, 1], 0),
    (2, 3, [1, 1], 0),  # infeasible: needs 3 frames
    (4, 3, [1, 2], 0),
    (5, 4, [1, 1, 2], 0),
    (6, 4, [3, 1, 3], 0),
    (6, 4, [2, 2, 2], 0),
    (4, 3, [], 0),
    (5, 4, [0, 0], 3),  # blank at the end
    (6, 3, [1, 0, 1], 2),
]


@pytest.mark.parametrize("T,V,target,blank", CTC_CASES)
def test_ctc_matches_torch(T, V, target, blank):
    g = torch.Generator().manual_seed(T * 100 + V * 10 + len(target) + blank)
    logits = torch.randn(T, V, generator=g, dtype=F64, requires_grad=True)
    lp = logits.log_softmax(-1)
    ref = torch.nn.functional.ctc_loss(
        lp.unsqueeze(1), torch.tensor([target], dtype=torch.long).reshape(1, -1), [T], [len(target)],
        blank=blank, reduction="none",
    )[0]
    mine = bf.ctc_logp(lp, target, blank)
    assert _close(-mine, ref), (float(-mine), float(ref))
    if math.isfinite(float(ref.detach())):
        # torch's gradient is right w.r.t. logits when the input is log_softmax(logits)
        g_ref, = torch.autograd.grad(ref, logits, retain_graph=True)
        g_mine, = torch.autograd.grad(-mine, logits)
        torch.testing.assert_close(g_mine, g_ref, rtol=1e-7, atol=1e-9)


def test_ctc_unnormalised_hand_case():
    # T=2, target [1]: paths (1,1), (0,1), (1,0)
    s = torch.randn(2, 3, dtype=F64)
    want = torch.logsumexp(torch.stack([s[0, 1] + s[1, 1], s[0, 0] + s[1, 1], s[0, 1] + s[1, 0]]), 0)
    assert _close(bf.ctc_logp(s, [1], 0), want)
    assert len(bf.ctc_paths(3, [1, 1], 0)) == 1  # only (1, 0, 1)


# ------------------------------------------------------------------------------------ simplified CTC


@pytest.mark.parametrize("T,L", [(1, 0), (1, 1), (3, 1), (4, 2), (6, 3), (5, 5), (3, 4)])
def test_simple_ctc_counts_paths(T, L):
    target = [1 + (k % 2) for k in range(L)]
    want = math.log(math.comb(T, L)) if L <= T else -math.inf
    assert _close(bf.simple_ctc_logp(torch.zeros(T, 3, dtype=F64), target, 0), want)


def test_simple_ctc_hand_cases():
    s = torch.randn(2, 4, dtype=F64)
    # T=2, target [2]: (2, b) or (b, 2), blank=0
    assert _close(bf.simple_ctc_logp(s, [2], 0), LSE(s[0, 2] + s[1, 0], s[0, 0] + s[1, 2]))
    # T=2, target [3, 3]: repeats are not merged, single path
    assert _close(bf.simple_ctc_logp(s, [3, 3], 0), s[0, 3] + s[1, 3])
    # blank last
    assert _close(bf.simple_ctc_logp(s, [1], 3), LSE(s[0, 1] + s[1, 3], s[0, 3] + s[1, 1]))


# ------------------------------------------------------------------------------------ RNN-T

RNNT_CASES = [  # (T, U, V)
    (1, 0, 2),
    (1, 2, 3),
    (2, 1, 3),
    (3, 2, 4),
    (4, 3, 3),
    (5, 2, 5),
]


@pytest.mark.parametrize("T,U,V", RNNT_CASES)
@pytest.mark.parametrize("blank", [0, -1])
def test_rnnt_matches_torchaudio(T, U, V, blank):
    torchaudio_functional = pytest.importorskip("torchaudio.functional")
    g = torch.Generator().manual_seed(1000 + T * 100 + U * 10 + V)
    b = blank % V
    non_blank = [v for v in range(V) if v != b]
    target = [non_blank[int(k)] for k in torch.randint(len(non_blank), (U,), generator=g)]
    logits = torch.randn(T, U + 1, V, generator=g, dtype=F64, requires_grad=True)
    lp = logits.log_softmax(-1)
    mine = bf.rnnt_logp(lp, target, blank)

    args = dict(
        targets=torch.tensor([target], dtype=torch.int32).reshape(1, U),
        logit_lengths=torch.tensor([T], dtype=torch.int32),
        target_lengths=torch.tensor([U], dtype=torch.int32),
        blank=blank, reduction="none",
    )
    ref = torchaudio_functional.rnnt_loss(lp.detach().float().unsqueeze(0), fused_log_softmax=False, **args)[0]
    assert _close(-mine, ref, tol=1e-5), (float(-mine), float(ref))

    # gradient w.r.t. logits (torchaudio's fused log-softmax path)
    x = logits.detach().float().requires_grad_(True)
    ref2 = torchaudio_functional.rnnt_loss(x.unsqueeze(0), fused_log_softmax=True, **args)[0]
    assert _close(-mine, ref2, tol=1e-5)
    g_ref, = torch.autograd.grad(ref2, x)
    g_mine, = torch.autograd.grad(-mine, logits)
    torch.testing.assert_close(g_mine, g_ref.to(F64), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("T,U", [(1, 0), (1, 3), (3, 2), (4, 4)])
def test_rnnt_counts_paths(T, U):
    want = math.log(math.comb(T - 1 + U, U))
    assert _close(bf.rnnt_logp(torch.zeros(T, U + 1, 3, dtype=F64), [1] * U, 0), want)
    assert len(bf.rnnt_paths(T, [1] * U, 0)) == math.comb(T - 1 + U, U)


def test_rnnt_no_frames():
    lp = torch.zeros(0, 2, 3, dtype=F64, requires_grad=True)
    out = bf.rnnt_logp(lp, [1], 0)
    assert out.item() == -math.inf
    out.backward()
    assert lp.grad.shape == lp.shape


# ------------------------------------------------------------------------------------ modified transducer


def test_modified_hand_T2_U1():
    s = torch.randn(2, 2, 3, dtype=F64)  # blank = 0, y_1 = 2
    blank = lambda t, u: s[t, u, 0]  # noqa: E731
    sym = lambda t, u: s[t, u, 2]  # noqa: E731
    k2 = LSE(sym(0, 0) + blank(1, 1), blank(0, 0) + sym(1, 0))
    ot = sym(0, 0) + blank(1, 1)
    assert _close(bf.modified_rnnt_logp(s, [2], 0, final_blank=False), k2)
    assert _close(bf.modified_rnnt_logp(s, [2], 0, final_blank=True), ot)


def test_modified_hand_T3_U1_final_blank():
    s = torch.randn(3, 2, 4, dtype=F64)  # blank = 3 (given as -1), y_1 = 1
    want = LSE(s[0, 0, 1] + s[1, 1, 3], s[0, 0, 3] + s[1, 0, 1]) + s[2, 1, 3]
    assert _close(bf.modified_rnnt_logp(s, [1], -1, final_blank=True), want)


@pytest.mark.parametrize("T,U", [(1, 0), (1, 1), (2, 2), (4, 1), (5, 3), (6, 2), (2, 3)])
def test_modified_counts_paths(T, U):
    z = torch.zeros(T, U + 1, 4, dtype=F64)
    want_k2 = math.log(math.comb(T, U)) if U <= T else -math.inf
    want_ot = math.log(math.comb(T - 1, U)) if U <= T - 1 else -math.inf
    assert _close(bf.modified_rnnt_logp(z, [1] * U, 0, final_blank=False), want_k2)
    assert _close(bf.modified_rnnt_logp(z, [1] * U, 0, final_blank=True), want_ot)


def test_modified_without_context_is_simple_ctc():
    # with scores that do not depend on u, the k2 modified lattice is the simplified CTC
    s = torch.randn(5, 4, dtype=F64)
    target = [1, 3, 1]
    grid = s.unsqueeze(1).expand(5, len(target) + 1, 4)
    assert _close(bf.modified_rnnt_logp(grid, target, 0, final_blank=False), bf.simple_ctc_logp(s, target, 0))


# ------------------------------------------------------------------------------------ SSNT


def _ssnt_vector():
    lp = torch.log_softmax(torch.sin(torch.arange(36, dtype=F64)).reshape(2, 2, 3, 3), -1)
    q = torch.nn.functional.logsigmoid(torch.cos(torch.arange(12, dtype=F64)).reshape(2, 2, 3))
    return lp, q, [[1, 2], [2, 0]], [3, 2], [2, 1]


def test_ssnt_reference_vector():
    lp, q, targets, S, J = _ssnt_vector()
    lp.requires_grad_(True)
    q.requires_grad_(True)
    losses = [-bf.ssnt_logp(lp[b, : J[b], : S[b]], targets[b][: J[b]], q[b, : J[b], : S[b]]) for b in range(2)]
    assert abs(losses[0].item() - 4.3494873) < 2e-6
    assert abs(losses[1].item() - 3.8322430) < 2e-6
    sum(losses).backward()
    assert torch.isfinite(lp.grad).all() and torch.isfinite(q.grad).all()
    assert lp.grad[1, 1].abs().sum() == 0 and lp.grad[:, :, 2][1].abs().sum() == 0  # cut-off parts untouched


def test_ssnt_hand_J2_S2():
    g = torch.Generator().manual_seed(7)
    lp = torch.randn(2, 2, 3, generator=g, dtype=F64).log_softmax(-1)
    q = torch.nn.functional.logsigmoid(torch.randn(2, 2, generator=g, dtype=F64))
    r = torch.log1p(-q.exp())
    y = [2, 1]
    ell = lambda j, i: lp[j, i, y[j]]  # noqa: E731
    # alignments (a_0, a_1) = (0, 1) and (1, 1)
    p01 = ell(0, 0) + q[0, 0] + r[1, 0] + ell(1, 1) + q[1, 1]
    p11 = r[0, 0] + ell(0, 1) + q[0, 1] + ell(1, 1) + q[1, 1]
    assert _close(bf.ssnt_logp(lp, y, q), LSE(p01, p11))


def test_ssnt_single_target_and_empty():
    q = torch.nn.functional.logsigmoid(torch.randn(1, 4, dtype=F64))
    lp = torch.randn(1, 4, 3, dtype=F64).log_softmax(-1)
    want = torch.log1p(-q[0, :3].exp()).sum() + q[0, 3] + lp[0, 3, 2]
    assert _close(bf.ssnt_logp(lp, [2], q), want)
    assert bf.ssnt_logp(torch.zeros(0, 1, 3, dtype=F64), [], torch.zeros(0, 1, dtype=F64)).item() == 0.0
    assert bf.ssnt_logp(torch.zeros(0, 3, 3, dtype=F64), [], torch.zeros(0, 3, dtype=F64)).item() == -math.inf
    # J > S is allowed: several targets on one frame
    assert len(bf.ssnt_alignments(3, 1)) == 1 and len(bf.ssnt_alignments(3, 3)) == math.comb(3 + 1, 2)
