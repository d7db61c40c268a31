"""Stage 1 (seqloss.scores) and the packed layouts (seqloss.packing): the formulas of their docstrings,
and that each loss is its lattice applied to these scores."""
import pytest
import torch
from helpers import ctc_batch, pack_transducer, ssnt_batch, transducer_batch

import seqloss
from seqloss._lattice import ctc as ctc_lattice
from seqloss._lattice.transducer import transducer_log_likelihood

NEG_INF = float("-inf")


# ------------------------------------------------------------------------------------------ packing
def test_packed_offsets_and_positions():
    assert seqloss.packed_offsets([3, 0, 2]).tolist() == [0, 3, 3]
    utterance, position = seqloss.packed_positions(torch.tensor([2, 0, 3]))
    assert utterance.tolist() == [0, 0, 2, 2, 2] and position.tolist() == [0, 1, 0, 1, 2]


def test_packed_cells_follow_the_row_order_b_t_u():
    b, t, u = seqloss.packed_cells([2, 1], [1, 2])
    assert list(zip(b.tolist(), t.tolist(), u.tolist())) == [
        (0, 0, 0), (0, 0, 1), (0, 1, 0), (0, 1, 1), (1, 0, 0), (1, 0, 1), (1, 0, 2)]
    logits, _, logit_lengths, target_lengths = transducer_batch(2, 3, 4, 3, 5)
    b, t, u = seqloss.packed_cells(logit_lengths, target_lengths)
    torch.testing.assert_close(logits[b, t, u], pack_transducer(logits, logit_lengths, target_lengths))


def test_packed_to_padded_inverts_the_packing():
    padded = torch.arange(24.0).reshape(3, 4, 2)
    sizes = torch.tensor([2, 4, 1])
    rows = torch.cat([padded[b, : sizes[b]] for b in range(3)])
    out = seqloss.packed_to_padded(rows, sizes, fill=-1.0)
    for b in range(3):
        assert torch.equal(out[b, : sizes[b]], padded[b, : sizes[b]]) and (out[b, sizes[b]:] == -1).all()


def test_packing_errors_name_the_argument():
    with pytest.raises(TypeError, match="sizes must be an integer tensor"):
        seqloss.packed_offsets(torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match="sizes must be non-negative"):
        seqloss.packed_positions([2, -1])
    with pytest.raises(ValueError, match="target_lengths must have the shape of logit_lengths"):
        seqloss.packed_cells([2, 1], [1])
    with pytest.raises(TypeError, match="logit_lengths must be an integer tensor or a sequence of ints"):
        seqloss.packed_cells("23", [1, 1])


# -------------------------------------------------------------------------------------- transducers
def _expected_transducer_scores(logits, targets, logit_lengths, target_lengths, emit_frames):
    lp = logits.log_softmax(-1)
    batch, frames, width, _ = lp.shape
    blank = torch.full((batch, frames, width), NEG_INF, dtype=lp.dtype)
    emit = torch.full((batch, frames, width - 1), NEG_INF, dtype=lp.dtype)
    for b in range(batch):
        for t in range(int(logit_lengths[b])):
            for u in range(int(target_lengths[b]) + 1):
                blank[b, t, u] = lp[b, t, u, 0]
                if u < target_lengths[b] and t < emit_frames(int(logit_lengths[b])):
                    emit[b, t, u] = lp[b, t, u, targets[b, u]]
    return blank, emit


@pytest.mark.parametrize("one, final_blank", [(False, True), (True, True), (True, False)])
def test_transducer_scores_are_the_masked_log_softmax_entries(one, final_blank):
    logits, targets, logit_lengths, target_lengths = transducer_batch(5, 3, 5, 3, 6)
    scores = seqloss.transducer_scores(logits, targets, logit_lengths, target_lengths, blank=0,
                                       one_symbol_per_frame=one, final_blank=final_blank)
    last_frame_emits = not (one and final_blank)
    expected = _expected_transducer_scores(logits, targets, logit_lengths, target_lengths,
                                           lambda frames: frames if last_frame_emits else frames - 1)
    torch.testing.assert_close(scores.blank, expected[0])
    torch.testing.assert_close(scores.emit, expected[1])
    packed = seqloss.transducer_scores(pack_transducer(logits, logit_lengths, target_lengths), targets,
                                       logit_lengths, target_lengths, blank=0, one_symbol_per_frame=one,
                                       final_blank=final_blank)
    torch.testing.assert_close(packed.blank, scores.blank)
    torch.testing.assert_close(packed.emit, scores.emit)
    # the loss is the lattice on these scores
    loss = (seqloss.modified_rnnt_loss(logits, targets, logit_lengths, target_lengths, blank=0, reduction="none",
                                       final_blank=final_blank) if one else
            seqloss.rnnt_loss(logits, targets, logit_lengths, target_lengths, blank=0, reduction="none"))
    log_p = transducer_log_likelihood(*scores, logit_lengths.long(), target_lengths.long(), one_symbol_per_frame=one)
    torch.testing.assert_close(-log_p, loss)


def test_transducer_scores_without_log_softmax_are_the_inputs():
    logits, targets, logit_lengths, target_lengths = transducer_batch(6, 2, 3, 2, 4)
    lp = logits.log_softmax(-1)
    fused = seqloss.transducer_scores(logits, targets, logit_lengths, target_lengths, blank=0)
    plain = seqloss.transducer_scores(lp, targets, logit_lengths, target_lengths, blank=0, fused_log_softmax=False)
    torch.testing.assert_close(fused.blank, plain.blank)
    torch.testing.assert_close(fused.emit, plain.emit)


def test_transducer_scores_reject_bad_arguments_by_name():
    logits, targets, logit_lengths, target_lengths = transducer_batch(7, 2, 3, 2, 4)
    with pytest.raises(ValueError, match="final_blank=False needs one_symbol_per_frame=True"):
        seqloss.transducer_scores(logits, targets, logit_lengths, target_lengths, final_blank=False)
    with pytest.raises(ValueError, match="logits must have 2 or 4 dimensions"):
        seqloss.transducer_scores(logits[0], targets, logit_lengths, target_lengths)
    with pytest.raises(ValueError, match="targets must not contain the blank id"):
        seqloss.transducer_scores(logits, torch.zeros_like(targets), logit_lengths, target_lengths.clamp(min=1),
                                  blank=0)


# --------------------------------------------------------------------------------------------- CTC
def test_ctc_scores_gather_the_extended_labels():
    log_probs, targets, input_lengths, target_lengths = ctc_batch(8, 7, 3, 5, 3)
    labels, emissions = seqloss.ctc_scores(log_probs, targets, input_lengths, target_lengths)
    for b in range(3):
        length = int(target_lengths[b])
        assert labels[b, : 2 * length + 1].tolist() == [0] + sum(([int(y), 0] for y in targets[b, :length]), [])
        for t in range(7):
            for s in range(labels.shape[1]):
                want = log_probs[t, b, labels[b, s]] if t < input_lengths[b] else torch.tensor(NEG_INF)
                assert emissions[t, b, s] == want
    concatenated = torch.cat([targets[b, : target_lengths[b]] for b in range(3)])
    same = seqloss.ctc_scores(log_probs, concatenated, input_lengths, target_lengths)
    valid = torch.arange(labels.shape[1]) < (2 * target_lengths + 1).unsqueeze(1)
    assert torch.equal(same.labels[valid], labels[valid])
    log_p = ctc_lattice.ctc_occupancy(emissions, labels, target_lengths, input_lengths, 0)[0]
    torch.testing.assert_close(-log_p, seqloss.ctc_loss(log_probs, targets, input_lengths, target_lengths,
                                                        reduction="none"))


def test_simple_ctc_scores_do_not_depend_on_the_label_position():
    log_probs, targets, input_lengths, target_lengths = ctc_batch(9, 6, 2, 4, 3)
    blank, emit = seqloss.simple_ctc_scores(log_probs, targets, input_lengths, target_lengths)
    for b in range(2):
        for t in range(6):
            for u in range(4):
                inside = t < input_lengths[b] and u <= target_lengths[b]
                assert blank[b, t, u] == (log_probs[t, b, 0] if inside else NEG_INF)
                if u < 3:
                    inside = t < input_lengths[b] and u < target_lengths[b]
                    assert emit[b, t, u] == (log_probs[t, b, targets[b, u]] if inside else NEG_INF)
    log_p = transducer_log_likelihood(blank, emit, input_lengths, target_lengths, one_symbol_per_frame=True)
    torch.testing.assert_close(-log_p, seqloss.simple_ctc_loss(log_probs, targets, input_lengths, target_lengths,
                                                               reduction="none"))


# -------------------------------------------------------------------------------------------- SSNT
def test_ssnt_scores_are_the_emit_and_shift_log_probs():
    log_probs, targets, log_p_choose, source_lengths, target_lengths = ssnt_batch(10, 3, 3, 5, 4)
    blank, emit = seqloss.ssnt_scores(log_probs, targets, log_p_choose, source_lengths, target_lengths)
    for b in range(3):
        frames, labels = int(source_lengths[b]), int(target_lengths[b])
        for i in range(5):
            for j in range(4):
                if i < frames and j < labels:
                    q = log_p_choose[b, j, i]
                    torch.testing.assert_close(blank[b, i, j], torch.log1p(-q.exp()))
                    assert emit[b, i, j] == log_probs[b, j, i, targets[b, j]] + q
                elif j < 3:
                    assert emit[b, i, j] == NEG_INF
                if (i, j) == (frames - 1, labels):  # the zero-score end of every path
                    assert blank[b, i, j] == 0
                elif not (i < frames and j < labels):
                    assert blank[b, i, j] == NEG_INF
    log_p = transducer_log_likelihood(blank, emit, source_lengths, target_lengths, one_symbol_per_frame=False)
    torch.testing.assert_close(-log_p, seqloss.ssnt_loss(log_probs, targets, log_p_choose, source_lengths,
                                                         target_lengths, reduction="none"))
    packed = [torch.cat([x[b, : target_lengths[b]] for b in range(3)]) for x in (log_probs, targets, log_p_choose)]
    same = seqloss.ssnt_scores(packed[0], packed[1], packed[2], source_lengths, target_lengths)
    width = int(target_lengths.max())
    torch.testing.assert_close(same.emit, emit[:, :, :width])
    torch.testing.assert_close(same.blank, blank[:, :, : width + 1])


def test_ssnt_scores_reject_bad_arguments_by_name():
    log_probs, targets, log_p_choose, source_lengths, target_lengths = ssnt_batch(11, 2, 2, 3, 4)
    with pytest.raises(ValueError, match="log_p_choose must have shape"):
        seqloss.ssnt_scores(log_probs, targets, log_p_choose[:, :1], source_lengths, target_lengths)
