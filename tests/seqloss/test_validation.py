"""Malformed calls raise ValueError / TypeError whose message names the argument (docs/design.md §3.5a)."""
import pytest
import torch
from helpers import ctc_batch, ssnt_batch, transducer_batch

import seqloss


def _ctc_args():
    x, targets, il, tl = ctc_batch(0, 8, 2, 5, 3)
    return dict(log_probs=x, targets=targets, input_lengths=il, target_lengths=tl)


def _rnnt_args():
    logits, targets, ll, tl = transducer_batch(0, 2, 6, 3, 5)
    return dict(logits=logits, targets=targets, logit_lengths=ll, target_lengths=tl, blank=0)


def _ssnt_args():
    lp, tg, ch, sl, tl = ssnt_batch(0, 2, 3, 5, 4)
    return dict(log_probs=lp, targets=tg, log_p_choose=ch, source_lengths=sl, target_lengths=tl)


CTC_BAD = [
    ("log_probs", lambda a: a.update(log_probs=a["log_probs"].long()), TypeError),
    ("log_probs", lambda a: a.update(log_probs=a["log_probs"][None]), ValueError),
    ("log_probs", lambda a: a.update(log_probs=a["log_probs"][:, :0], targets=a["targets"][:0],
                                     input_lengths=a["input_lengths"][:0], target_lengths=a["target_lengths"][:0]),
     ValueError),
    ("input_lengths", lambda a: a.update(input_lengths=a["input_lengths"].float()), TypeError),
    ("input_lengths", lambda a: a["input_lengths"].__setitem__(0, -1), ValueError),
    ("input_lengths", lambda a: a["input_lengths"].__setitem__(0, 99), ValueError),
    ("input_lengths", lambda a: a.update(input_lengths=a["input_lengths"][:1]), ValueError),
    ("target_lengths", lambda a: a["target_lengths"].__setitem__(0, 9), ValueError),
    ("targets", lambda a: a.update(targets=a["targets"].float()), TypeError),
    ("targets", lambda a: a["targets"].__setitem__((0, 0), 5), ValueError),
    ("targets", lambda a: a["targets"].__setitem__((1, 0), -2), ValueError),
    ("targets", lambda a: a.update(targets=a["targets"][:, :, None]), ValueError),
    ("reduction", lambda a: a.update(reduction="avg"), ValueError),
    ("blank", lambda a: a.update(blank=7), ValueError),
]


@pytest.mark.parametrize("loss", [seqloss.ctc_loss, seqloss.simple_ctc_loss])
@pytest.mark.parametrize("name,mutate,error", CTC_BAD, ids=[f"{c[0]}-{i}" for i, c in enumerate(CTC_BAD)])
def test_ctc_family_rejects(loss, name, mutate, error):
    args = _ctc_args()
    args["target_lengths"] = torch.tensor([3, 2])
    mutate(args)
    with pytest.raises(error, match=name):
        loss(**args)


def test_ctc_concatenated_targets_must_match_lengths():
    args = _ctc_args()
    args["targets"] = torch.tensor([1, 2, 3])
    args["target_lengths"] = torch.tensor([2, 2])
    with pytest.raises(ValueError, match="targets"):
        seqloss.ctc_loss(**args)


RNNT_BAD = [
    ("logits", lambda a: a.update(logits=a["logits"].int()), TypeError),
    ("logits", lambda a: a.update(logits=a["logits"][0]), ValueError),
    ("logits", lambda a: a.update(logits=a["logits"][:1]), ValueError),
    ("logit_lengths", lambda a: a["logit_lengths"].__setitem__(0, 7), ValueError),
    ("logit_lengths", lambda a: a["logit_lengths"].__setitem__(0, -1), ValueError),
    ("logit_lengths", lambda a: a.update(logit_lengths=a["logit_lengths"].double()), TypeError),
    ("target_lengths", lambda a: a["target_lengths"].__setitem__(1, 4), ValueError),
    ("targets", lambda a: a["targets"].__setitem__((0, 0), 0), ValueError),   # blank as a target
    ("targets", lambda a: a["targets"].__setitem__((0, 0), 5), ValueError),
    ("targets", lambda a: a.update(targets=a["targets"].float()), TypeError),
    ("targets", lambda a: a.update(targets=a["targets"][0]), ValueError),
    ("targets", lambda a: a.update(targets=a["targets"][:0], logits=a["logits"][:0],
                                   logit_lengths=a["logit_lengths"][:0], target_lengths=a["target_lengths"][:0]),
     ValueError),
    ("blank", lambda a: a.update(blank=-6), ValueError),
    ("reduction", lambda a: a.update(reduction=None), ValueError),
    ("clamp", lambda a: a.update(clamp="1"), TypeError),
]


@pytest.mark.parametrize("loss", [seqloss.rnnt_loss, seqloss.modified_rnnt_loss])
@pytest.mark.parametrize("name,mutate,error", RNNT_BAD, ids=[f"{c[0]}-{i}" for i, c in enumerate(RNNT_BAD)])
def test_transducers_reject(loss, name, mutate, error):
    args = _rnnt_args()
    args["targets"] = args["targets"].clamp(min=1)
    args["logit_lengths"], args["target_lengths"] = torch.tensor([6, 4]), torch.tensor([3, 2])
    mutate(args)
    with pytest.raises(error, match=name):
        loss(**args)


def test_packed_logits_row_count_is_checked():
    args = _rnnt_args()
    args["targets"] = args["targets"].clamp(min=1)
    ll, tl = torch.tensor([6, 4]), torch.tensor([3, 2])
    rows = int((ll * (tl + 1)).sum())
    args.update(logits=torch.randn(rows + 1, 5), logit_lengths=ll, target_lengths=tl)
    with pytest.raises(ValueError, match="packed logits"):
        seqloss.rnnt_loss(**args)


SSNT_BAD = [
    ("log_probs", lambda a: a.update(log_probs=a["log_probs"].int()), TypeError),
    ("log_p_choose", lambda a: a.update(log_p_choose=a["log_p_choose"][:, :, :2]), ValueError),
    ("targets", lambda a: a.update(targets=a["targets"][:, :2]), ValueError),
    ("targets", lambda a: a["targets"].__setitem__((0, 0), 4), ValueError),
    ("source_lengths", lambda a: a["source_lengths"].__setitem__(0, 6), ValueError),
    ("target_lengths", lambda a: a["target_lengths"].__setitem__(0, -1), ValueError),
    ("reduction", lambda a: a.update(reduction="batchmean"), ValueError),
]


@pytest.mark.parametrize("name,mutate,error", SSNT_BAD, ids=[f"{c[0]}-{i}" for i, c in enumerate(SSNT_BAD)])
def test_ssnt_rejects(name, mutate, error):
    args = _ssnt_args()
    args["target_lengths"] = torch.tensor([3, 3])
    mutate(args)
    with pytest.raises(error, match=name):
        seqloss.ssnt_loss(**args)


def test_padding_beyond_lengths_is_ignored():
    """Garbage ids past target_lengths (even out of range) change nothing, as in torch and torchaudio."""
    args = _rnnt_args()
    args["targets"] = args["targets"].clamp(min=1)
    args["logit_lengths"], args["target_lengths"] = torch.tensor([6, 4]), torch.tensor([3, 1])
    clean = seqloss.rnnt_loss(**args, reduction="none")
    args["targets"] = args["targets"].clone()
    args["targets"][1, 1:] = torch.tensor([0, 99])
    torch.testing.assert_close(seqloss.rnnt_loss(**args, reduction="none"), clean)
    ctc = _ctc_args()
    ctc["target_lengths"] = torch.tensor([3, 1])
    clean = seqloss.ctc_loss(**ctc, reduction="none")
    ctc["targets"] = ctc["targets"].clone()
    ctc["targets"][1, 1:] = -7
    torch.testing.assert_close(seqloss.ctc_loss(**ctc, reduction="none"), clean)
