"""Every loss and variant against explicit path enumeration (tests/seqloss/brute_force.py), float64."""
import pytest
import torch
from brute_force import ctc_logp, modified_rnnt_logp, rnnt_logp, simple_ctc_logp, ssnt_logp
from helpers import ctc_batch, pack_rows, pack_transducer, ssnt_batch, transducer_batch
from hypothesis import given, settings
from hypothesis import strategies as st

import seqloss


def _per_utt_grads(loss_fn, x):
    x = x.detach().clone().requires_grad_()
    losses = loss_fn(x)
    (grad,) = torch.autograd.grad(losses.sum(), x)
    return losses.detach(), grad


def _reference(per_utt, x):
    """Sum over utterances of -log P (brute force), its values and its gradient w.r.t. x."""
    x = x.detach().clone().requires_grad_()
    values = torch.stack([-v for v in per_utt(x)])
    (grad,) = torch.autograd.grad(values.sum(), x)
    return values.detach(), grad


@pytest.mark.parametrize("loss_name", ["ctc", "simple_ctc"])
@pytest.mark.parametrize("normalised", [True, False])
@pytest.mark.parametrize("seed", range(3))
def test_ctc_family_matches_enumeration(loss_name, normalised, seed):
    x, targets, il, tl = ctc_batch(seed, frames=6, batch=3, classes=4, labels=3, normalised=normalised)
    if seed == 0:
        targets[0, :2] = 2  # a repeated label (needs a blank between for CTC)
    loss = getattr(seqloss, f"{loss_name}_loss")
    brute = ctc_logp if loss_name == "ctc" else simple_ctc_logp
    got, got_grad = _per_utt_grads(lambda v: loss(v, targets, il, tl, reduction="none"), x)
    ref, ref_grad = _reference(
        lambda v: [brute(v[: il[b], b], targets[b, : tl[b]].tolist(), 0) for b in range(3)], x)
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(got_grad, ref_grad, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("variant", ["rnnt", "modified_final_blank", "modified_no_final_blank"])
@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("blank", [0, -1])
def test_transducers_match_enumeration(variant, fused, packed, blank):
    logits, targets, ll, tl = transducer_batch(7, batch=3, frames=5, labels=3, classes=5, blank=blank)
    V = logits.shape[-1]

    def ours(x):
        inp = pack_transducer(x, ll, tl) if packed else x
        if variant == "rnnt":
            return seqloss.rnnt_loss(inp, targets, ll, tl, blank=blank, reduction="none", fused_log_softmax=fused)
        return seqloss.modified_rnnt_loss(inp, targets, ll, tl, blank=blank, reduction="none",
                                          fused_log_softmax=fused, final_blank=variant == "modified_final_blank")

    def brute(x):
        scores = x.log_softmax(-1) if fused else x
        out = []
        for b in range(3):
            s, y = scores[b, : ll[b], : tl[b] + 1], targets[b, : tl[b]].tolist()
            if variant == "rnnt":
                out.append(rnnt_logp(s, y, blank % V))
            else:
                out.append(modified_rnnt_logp(s, y, blank % V, final_blank=variant == "modified_final_blank"))
        return out

    got, got_grad = _per_utt_grads(ours, logits)
    ref, ref_grad = _reference(brute, logits)
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(got_grad, ref_grad, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("seed", range(3))
def test_ssnt_matches_enumeration(packed, seed):
    log_probs, targets, choose, sl, tl = ssnt_batch(seed, batch=3, targets_max=3, frames=5, classes=4)
    if seed == 1:
        choose = choose.clone()
        choose[0, 0, 1] = 0.0  # choose with probability 1: r = -inf on that shift edge

    def ours(lp, ch):
        if packed:
            return seqloss.ssnt_loss(pack_rows(lp, tl), pack_rows(targets, tl), pack_rows(ch, tl), sl, tl,
                                     reduction="none")
        return seqloss.ssnt_loss(lp, targets, ch, sl, tl, reduction="none")

    lp1, ch1 = log_probs.clone().requires_grad_(), choose.clone().requires_grad_()
    got = ours(lp1, ch1)
    g_lp, g_ch = torch.autograd.grad(got.sum(), (lp1, ch1))
    lp2, ch2 = log_probs.clone().requires_grad_(), choose.clone().requires_grad_()
    ref = torch.stack([-ssnt_logp(lp2[b, : tl[b], : sl[b]], targets[b, : tl[b]].tolist(), ch2[b, : tl[b], : sl[b]])
                       for b in range(3)])
    r_lp, r_ch = torch.autograd.grad(ref[torch.isfinite(ref)].sum(), (lp2, ch2))
    torch.testing.assert_close(got.detach(), ref.detach(), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(g_lp, r_lp, rtol=1e-9, atol=1e-10)
    if seed == 1:  # at q = 0 the enumeration's autograd gives nan (0 * inf); ours is the one-sided limit
        assert torch.isfinite(g_ch).all() and torch.isnan(r_ch[0, 0, 1])
        r_ch[0, 0, 1] = g_ch[0, 0, 1]
    torch.testing.assert_close(g_ch, r_ch, rtol=1e-9, atol=1e-10)


@settings(max_examples=25, deadline=None)
@given(frames=st.integers(1, 5), labels=st.integers(0, 3), classes=st.integers(2, 4), seed=st.integers(0, 10**6),
       loss_name=st.sampled_from(["ctc", "simple_ctc", "rnnt", "modified_true", "modified_false"]))
def test_property_single_utterance(frames, labels, classes, seed, loss_name):
    """Any small shape, every loss: value equals the enumeration (including infeasible = +inf)."""
    gen = torch.Generator().manual_seed(seed)
    target = (torch.randint(1, classes, (labels,), generator=gen)).tolist()
    if loss_name in ("ctc", "simple_ctc"):
        x = torch.randn(frames, 1, classes, generator=gen, dtype=torch.float64)
        got = getattr(seqloss, f"{loss_name}_loss")(x, torch.tensor([target], dtype=torch.long).view(1, -1),
                                                     [frames], [labels], reduction="none")[0]
        ref = -(ctc_logp if loss_name == "ctc" else simple_ctc_logp)(x[:, 0], target, 0)
    else:
        x = torch.randn(1, frames, labels + 1, classes, generator=gen, dtype=torch.float64)
        tgt = torch.tensor([target], dtype=torch.long).view(1, -1)
        if loss_name == "rnnt":
            got = seqloss.rnnt_loss(x, tgt, [frames], [labels], blank=0, reduction="none")[0]
            ref = -rnnt_logp(x[0].log_softmax(-1), target, 0)
        else:
            fb = loss_name == "modified_true"
            got = seqloss.modified_rnnt_loss(x, tgt, [frames], [labels], blank=0, reduction="none", final_blank=fb)[0]
            ref = -modified_rnnt_logp(x[0].log_softmax(-1), target, 0, final_blank=fb)
    if torch.isinf(ref):
        assert torch.isinf(got) and got > 0
    else:
        torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-10)


@settings(max_examples=20, deadline=None)
@given(targets_max=st.integers(0, 3), frames=st.integers(1, 5), seed=st.integers(0, 10**6))
def test_property_ssnt(targets_max, frames, seed):
    gen = torch.Generator().manual_seed(seed)
    lp = torch.randn(1, targets_max, frames, 3, generator=gen, dtype=torch.float64).log_softmax(-1)
    ch = torch.nn.functional.logsigmoid(torch.randn(1, targets_max, frames, generator=gen, dtype=torch.float64))
    tg = torch.randint(0, 3, (1, targets_max), generator=gen)
    got = seqloss.ssnt_loss(lp, tg, ch, [frames], [targets_max], reduction="none")[0]
    ref = -ssnt_logp(lp[0], tg[0].tolist(), ch[0])
    if torch.isinf(ref):
        assert torch.isinf(got) and got > 0
    else:
        torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-10)
