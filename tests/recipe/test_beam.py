"""Beam search: hand-checked CTC prefix search, exact scores on a tiny transducer, never worse than greedy."""
import math
from types import SimpleNamespace

import pytest
import torch

import seqloss
from recipes.decoding.beam import (
    BeamSearchDecoder,
    ctc_prefix_beam_search,
    objective_log_likelihood,
    transducer_beam_search,
)
from recipes.decoding.greedy import GreedyDecoder
from recipes.models.heads import ChooseHead, CTCHead
from recipes.models.joiner import Joiner
from recipes.models.objectives import CTCObjective, SSNTObjective, TransducerObjective
from recipes.models.predictor import LSTMPredictor

V, E = 6, 8


def _model(loss, seed=0, **objective_kwargs):
    torch.manual_seed(seed)
    objective = {"ctc": lambda: CTCObjective(0), "ssnt": lambda: SSNTObjective(0)}.get(
        loss, lambda: TransducerObjective(loss, 0, **objective_kwargs))()
    model = SimpleNamespace(objective=objective, predictor=None, joiner=None, ctc_head=None, choose_head=None)
    if loss == "ctc":
        model.ctc_head = CTCHead(E, V)
    else:
        model.predictor = LSTMPredictor(V, embed_dim=8, hidden_dim=8, output_dim=8, dropout=0.0)
        model.joiner = Joiner(E, 8, 8, V)
        if loss == "ssnt":
            model.choose_head = ChooseHead(8)
    for part in (model.predictor, model.joiner, model.ctc_head, model.choose_head):
        if part is not None:
            part.eval()
    return model


def test_ctc_prefix_beam_search_sums_paths():
    """p(blank) = 0.6, p(a) = 0.4 on two frames: the best path is blank-blank (0.36), but the best
    label sequence is "a" with 0.16 + 0.24 + 0.24 = 0.64."""
    lp = torch.log(torch.tensor([[0.6, 0.4], [0.6, 0.4]], dtype=torch.float64))
    nbest = ctc_prefix_beam_search(lp, beam_size=4, blank_id=0)
    assert nbest[0][0] == [1] and math.isclose(nbest[0][1], math.log(0.64), rel_tol=1e-12)
    assert nbest[1][0] == [] and math.isclose(nbest[1][1], math.log(0.36), rel_tol=1e-12)


def test_ctc_prefix_beam_scores_equal_ctc_loss():
    torch.manual_seed(1)
    lp = torch.randn(7, 4).double().log_softmax(-1)
    for tokens, score in ctc_prefix_beam_search(lp, beam_size=10**5)[:10]:  # no pruning: exact sums
        ref = -seqloss.ctc_loss(lp[:, None], torch.tensor([tokens or [0]]), [7], [len(tokens)], reduction="sum")
        assert math.isclose(score, float(ref), rel_tol=1e-9, abs_tol=1e-9)


def test_modified_beam_search_with_a_wide_beam_is_exact():
    """One symbol per frame and merged histories: with a beam wider than the lattice, each
    hypothesis' score is log P(y | x) of the modified transducer without a forced final blank."""
    model = _model("modified_rnnt", final_blank=False)
    enc = torch.randn(3, E)
    with torch.no_grad():
        nbest = transducer_beam_search(model, enc, beam_size=1000)
        for tokens, score in nbest[:8]:
            logits = model.joiner(enc[None], model.predictor(torch.tensor([tokens or [1]])))
            if not tokens:
                logits = logits[:, :, :1]
            ref = -seqloss.modified_rnnt_loss(logits, torch.tensor([tokens or [1]]), [3], [len(tokens)], blank=0,
                                              final_blank=False, reduction="sum")
            assert math.isclose(score, float(ref), rel_tol=1e-6, abs_tol=1e-6)


@pytest.mark.parametrize("loss", ["ctc", "rnnt", "modified_rnnt", "ssnt"])
def test_beam_never_scores_worse_than_greedy(loss):
    model = _model(loss, seed=3)
    torch.manual_seed(4)
    enc = torch.randn(5, 9, E) * 2
    lengths = torch.tensor([9, 7, 5, 8, 6])
    with torch.no_grad():
        greedy = GreedyDecoder(3)(model, enc, lengths)
        beam = BeamSearchDecoder(beam_size=3)(model, enc, lengths)
        for b in range(5):
            scores = objective_log_likelihood(model, enc[b : b + 1, : lengths[b]], [beam[b], greedy[b]])
            assert scores[0] >= scores[1] - 1e-9
