"""Viterbi alignments against brute-force maximisation and torchaudio's forced_align; posteriors
against the loss gradients and their totals."""
import pytest
import torch
import torchaudio.functional as TAF
from brute_force import ctc_paths, modified_rnnt_paths, rnnt_paths, simple_ctc_paths, ssnt_alignments
from helpers import ctc_batch, pack_transducer, ssnt_batch, transducer_batch

import seqloss


def test_ctc_align_equals_torchaudio_forced_align():
    gen = torch.Generator().manual_seed(0)
    for trial in range(8):
        frames, classes = 30 + trial * 10, 6
        lp = torch.randn(frames, 1, classes, generator=gen).log_softmax(-1)
        length = 4 + trial
        target = torch.randint(1, classes, (1, length), generator=gen)
        if trial % 2:
            target[0, 1] = target[0, 0]  # a repeat
        ours = seqloss.ctc_align(lp, target, [frames], [length])
        ref_labels, ref_scores = TAF.forced_align(lp.transpose(0, 1), target.int(), torch.tensor([frames]),
                                                  torch.tensor([length]))
        assert torch.equal(ours.labels, ref_labels.long())
        torch.testing.assert_close(ours.scores, ref_scores.sum(1), rtol=1e-5, atol=1e-4)


def _best(paths, score):
    scores = [score(p) for p in paths]
    k = max(range(len(paths)), key=scores.__getitem__)
    return paths[k], scores[k]


@pytest.mark.parametrize("loss", ["ctc", "simple_ctc"])
def test_ctc_family_viterbi_is_the_best_path(loss):
    lp, targets, il, tl = ctc_batch(3, 7, 3, 4, 3)
    result = getattr(seqloss, f"{loss}_align")(lp, targets, il, tl)
    enumerate_paths = ctc_paths if loss == "ctc" else simple_ctc_paths
    for b in range(3):
        paths = enumerate_paths(int(il[b]), targets[b, : tl[b]].tolist(), 0)
        path, score = _best(paths, lambda p: sum(float(lp[t, b, v]) for t, v in enumerate(p)))
        assert result.labels[b, : il[b]].tolist() == list(path)
        assert (result.labels[b, il[b]:] == 0).all()
        assert abs(float(result.scores[b]) - score) < 1e-9
        # token frames: the first frame of each token's segment (ctc) / its frame (simple ctc)
        frames = result.token_frames[b, : tl[b]].tolist()
        assert all(path[f] == y for f, y in zip(frames, targets[b, : tl[b]].tolist()))
        assert frames == sorted(frames) and (result.token_frames[b, tl[b]:] == -1).all()


@pytest.mark.parametrize("variant", ["rnnt", "modified_true", "modified_false"])
@pytest.mark.parametrize("packed", [False, True])
def test_transducer_viterbi_is_the_best_path(variant, packed):
    logits, targets, ll, tl = transducer_batch(4, 3, 5, 3, 5)
    lp = logits.log_softmax(-1)
    inp = pack_transducer(logits, ll, tl) if packed else logits
    if variant == "rnnt":
        result = seqloss.rnnt_align(inp, targets, ll, tl, blank=0)
    else:
        result = seqloss.modified_rnnt_align(inp, targets, ll, tl, blank=0, final_blank=variant == "modified_true")
    for b in range(3):
        y = targets[b, : tl[b]].tolist()
        paths = rnnt_paths(int(ll[b]), y, 0) if variant == "rnnt" else \
            modified_rnnt_paths(int(ll[b]), y, 0, final_blank=variant == "modified_true")
        if not paths:
            assert torch.isinf(result.scores[b]) and (result.token_frames[b] == -1).all()
            continue
        path, score = _best(paths, lambda p: sum(float(lp[b, t, u, v]) for t, u, v in p))
        assert abs(float(result.scores[b]) - score) < 1e-9
        emitted = [t for t, u, v in path if v != 0]
        assert result.token_frames[b, : tl[b]].tolist() == emitted
        first_token_of_frame = {}
        for t, _u, v in path:
            if v != 0:
                first_token_of_frame.setdefault(t, v)
        expected = [first_token_of_frame.get(t, 0) for t in range(int(ll[b]))]
        assert result.labels[b, : ll[b]].tolist() == expected


def test_ssnt_viterbi_is_the_best_path():
    lp, targets, choose, sl, tl = ssnt_batch(5, 3, 3, 5, 4)
    result = seqloss.ssnt_align(lp, targets, choose, sl, tl)
    shift = torch.log(-torch.expm1(choose))
    for b in range(3):
        J, S = int(tl[b]), int(sl[b])
        alignments = ssnt_alignments(J, S)
        if not alignments:
            assert torch.isinf(result.scores[b])
            continue

        def score(a):
            total, previous = 0.0, 0
            for j, i in enumerate(a):
                total += float(shift[b, j, previous:i].sum() + choose[b, j, i] + lp[b, j, i, targets[b, j]])
                previous = i
            return total

        best, value = _best(alignments, score)
        assert abs(float(result.scores[b]) - value) < 1e-9
        assert result.token_frames[b, :J].tolist() == list(best)


def _minus_grad(fn, x):
    x = x.detach().clone().requires_grad_()
    (grad,) = torch.autograd.grad(fn(x), x)
    return -grad


@pytest.mark.parametrize("loss", ["ctc", "simple_ctc"])
def test_ctc_family_posteriors_are_the_gradient_and_sum_to_one(loss):
    lp, targets, il, tl = ctc_batch(6, 40, 4, 7, 10)
    post = getattr(seqloss, f"{loss}_posteriors")(lp, targets, il, tl)
    expected = _minus_grad(lambda v: getattr(seqloss, f"{loss}_loss")(v, targets, il, tl, reduction="sum"), lp)
    torch.testing.assert_close(post, expected)
    valid = torch.arange(40).unsqueeze(1) < il
    torch.testing.assert_close(post.sum(-1), valid.double())


@pytest.mark.parametrize("variant", ["rnnt", "modified_true", "modified_false"])
def test_transducer_posteriors_are_the_gradient_with_right_totals(variant):
    logits, targets, ll, tl = transducer_batch(8, 4, 30, 8, 12, min_frames=10)  # all feasible
    lp = logits.log_softmax(-1)
    if variant == "rnnt":
        post = seqloss.rnnt_posteriors(lp, targets, ll, tl, blank=0, fused_log_softmax=False)
        def loss(v):
            return seqloss.rnnt_loss(v, targets, ll, tl, blank=0, reduction="sum", fused_log_softmax=False)
    else:
        fb = variant == "modified_true"
        post = seqloss.modified_rnnt_posteriors(lp, targets, ll, tl, blank=0, fused_log_softmax=False, final_blank=fb)
        def loss(v):
            return seqloss.modified_rnnt_loss(v, targets, ll, tl, blank=0, reduction="sum",
                                              fused_log_softmax=False, final_blank=fb)
    grad = _minus_grad(loss, lp)
    torch.testing.assert_close(post.blank, grad[..., 0])
    torch.testing.assert_close(post.emit, grad[:, :, :-1].gather(-1, targets.long()[:, None, :, None].expand(
        -1, grad.shape[1], -1, 1))[..., 0])
    # every target token is emitted exactly once; blanks: T_b (rnnt, incl. the final one) or T_b - U_b per frame
    token_mass = post.emit.sum(1)
    torch.testing.assert_close(token_mass, (torch.arange(8) < tl.unsqueeze(1)).double())
    blanks = post.blank.sum((1, 2))
    expected = ll.double() if variant == "rnnt" else (ll - tl).double()
    torch.testing.assert_close(blanks, expected)


def test_ssnt_posteriors_are_the_gradient_and_emit_each_token_once():
    lp, targets, choose, sl, tl = ssnt_batch(9, 4, 4, 8, 5)
    post = seqloss.ssnt_posteriors(lp, targets, choose, sl, tl)
    grad = _minus_grad(lambda v: seqloss.ssnt_loss(v, targets, choose, sl, tl, reduction="sum"), lp)
    torch.testing.assert_close(post.emit, grad.gather(-1, targets[:, :, None, None].expand(-1, -1, 8, 1))[..., 0])
    torch.testing.assert_close(post.emit.sum(2), (torch.arange(4) < tl.unsqueeze(1)).double())
    # d loss / d q = -(emit - shift * e^q / (1 - e^q))
    q_grad = _minus_grad(lambda v: seqloss.ssnt_loss(lp, targets, v, sl, tl, reduction="sum"), choose)
    torch.testing.assert_close(q_grad, post.emit - post.shift * torch.exp(choose) / -torch.expm1(choose))


@pytest.mark.skipif(not seqloss._ops.available("cpu"), reason="native kernels not built")
def test_native_and_torch_alignments_agree():
    lp, targets, il, tl = ctc_batch(11, 40, 4, 6, 8)
    for fn in (seqloss.ctc_align, seqloss.simple_ctc_align):
        a, b = fn(lp, targets, il, tl, backend="native"), fn(lp, targets, il, tl, backend="torch")
        assert torch.equal(a.labels, b.labels) and torch.equal(a.token_frames, b.token_frames)
        torch.testing.assert_close(a.scores, b.scores)
    logits, rtg, ll, rtl = transducer_batch(12, 4, 20, 6, 8)
    for fn in (seqloss.rnnt_align, seqloss.modified_rnnt_align):
        a, b = fn(logits, rtg, ll, rtl, blank=0, backend="native"), fn(logits, rtg, ll, rtl, blank=0, backend="torch")
        assert torch.equal(a.token_frames, b.token_frames) and torch.equal(a.labels, b.labels)
        torch.testing.assert_close(a.scores, b.scores)
    slp, stg, ch, sl, stl = ssnt_batch(13, 3, 4, 10, 5)
    a = seqloss.ssnt_align(slp, stg, ch, sl, stl, backend="native")
    b = seqloss.ssnt_align(slp, stg, ch, sl, stl, backend="torch")
    assert torch.equal(a.token_frames, b.token_frames)
    torch.testing.assert_close(a.scores, b.scores)
