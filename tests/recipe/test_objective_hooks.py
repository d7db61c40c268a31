"""Objectives own their searches: a loss defined here only decodes, beam-searches and aligns through the recipe's
decoder classes, and no module outside the objectives switches on the loss name."""
import math
import re
from pathlib import Path
from types import SimpleNamespace

import hydra
import pytest
import torch
from omegaconf import open_dict
from recipe_cfg import REPO, compose_train

from recipes.decoding.alignment import ForcedAligner, LatticeAlignment
from recipes.decoding.beam import BeamSearchDecoder
from recipes.decoding.greedy import GreedyDecoder
from recipes.models.heads import CTCHead
from recipes.models.objectives import Objective

V, E = 5, 6
CALLS: list[str] = []


class PrefixObjective(Objective):
    """A loss with one fixed alignment: token u on frame u, blank on every later frame (from the CTC head's
    log-probabilities p_t). log P(y | x) = Σ_{u<U} log p_u(y_u) + Σ_{U<=t<T} log p_t(blank); -inf when U > T."""

    name = "prefix"
    requires = ("ctc_head",)

    def __call__(self, parts, enc, enc_lengths, targets, target_lengths):
        log_probs = parts.ctc_head(enc).float()  # (B, T, V)
        frames = torch.arange(log_probs.shape[1])
        out = []
        for b in range(enc.shape[0]):
            length, count = int(enc_lengths[b]), int(target_lengths[b])
            if count > length:
                out.append(torch.tensor(math.inf))
                continue
            tokens = log_probs[b, frames[:count], targets[b, :count]].sum()
            blanks = log_probs[b, count:length, self.blank_id].sum()
            out.append(-(tokens + blanks))
        return torch.stack(out)

    def _prefix_scores(self, model, one):
        """For k = 0 .. T: (best k-token prefix, its log P)."""
        log_probs = model.ctc_head(one[None])[0].detach().double()
        no_blank = log_probs.index_fill(1, torch.tensor([self.blank_id]), -math.inf)
        best_lp, best = no_blank.max(dim=-1)
        blank_lp = log_probs[:, self.blank_id]
        return [(best[:k].tolist(), float(best_lp[:k].sum() + blank_lp[k:].sum())) for k in range(len(one) + 1)]

    def greedy(self, model, enc, lengths, max_symbols_per_frame=3):
        CALLS.append("greedy")
        hyps = []
        for b, length in enumerate(lengths.tolist()):
            nbest = self._prefix_scores(model, enc[b, :length])
            hyps.append(max(nbest, key=lambda item: item[1])[0])
        return hyps

    def beam(self, model, enc, lengths, beam_size, max_symbols_per_frame=3):
        CALLS.append("beam")
        return [sorted(self._prefix_scores(model, enc[b, :length]), key=lambda item: -item[1])[:beam_size]
                for b, length in enumerate(lengths.tolist())]

    def align(self, model, enc, enc_lengths, targets, target_lengths):
        CALLS.append("align")
        frames = torch.arange(targets.shape[1]).expand_as(targets)
        feasible = (target_lengths <= enc_lengths)[:, None]
        scores = -self(model, enc, enc_lengths, targets, target_lengths)
        occupancy = [torch.eye(int(enc_lengths[b]), int(target_lengths[b])) for b in range(targets.shape[0])]
        return LatticeAlignment(torch.where(feasible, frames, -1), scores, occupancy)


def _model(seed=0):
    torch.manual_seed(seed)
    model = SimpleNamespace(objective=PrefixObjective(0), ctc_head=CTCHead(E, V).eval(), predictor=None,
                            joiner=None, choose_head=None)
    model.ctc_head.output.weight.data.mul_(3)
    return model


def test_a_new_objective_decodes_through_the_decoder_classes():
    model = _model()
    enc = torch.randn(3, 7, E)
    lengths = torch.tensor([7, 4, 6])
    CALLS.clear()
    with torch.no_grad():
        greedy = GreedyDecoder(3)(model, enc, lengths)
        beam = BeamSearchDecoder(beam_size=3)(model, enc, lengths)
        unscored = BeamSearchDecoder(beam_size=3, rescore=False)(model, enc, lengths)
    assert CALLS == ["greedy", "greedy", "beam", "greedy", "beam"]  # the beam decoder adds greedy to its n-best
    for b in range(3):  # this loss has one path per hypothesis: the search is exact, every decoder agrees
        exact = max(model.objective._prefix_scores(model, enc[b, : lengths[b]]), key=lambda item: item[1])
        assert greedy[b] == beam[b] == unscored[b] == exact[0]
        assert 0 not in greedy[b]
    assert sum(map(len, greedy)) > 0


def test_a_new_objective_aligns_through_the_forced_aligner():
    model = _model(1)
    enc = torch.randn(2, 5, E)
    enc_lengths = torch.tensor([5, 3])
    model.encode = lambda features, feature_lengths: (enc, enc_lengths)
    batch = {"features": None, "feature_lengths": None, "targets": torch.tensor([[1, 2, 3, 4], [2, 1, 0, 0]]),
             "target_lengths": torch.tensor([4, 2]), "ids": ["u1", "u2"]}
    CALLS.clear()
    first, second = ForcedAligner(num_plots=0)(model, batch)
    assert CALLS == ["align"]
    assert (first.utterance_id, first.tokens, first.token_frames) == ("u1", [1, 2, 3, 4], [0, 1, 2, 3])
    assert (second.tokens, second.token_frames, tuple(second.occupancy.shape)) == ([2, 1], [0, 1], (3, 2))
    with torch.no_grad():
        nll = model.objective(model, enc, enc_lengths, batch["targets"], batch["target_lengths"])
    assert first.score == pytest.approx(-float(nll[0])) and second.score == pytest.approx(-float(nll[1]))


def test_a_new_objective_is_a_config_choice(tmp_path):
    """The recipe's LightningModule, built from the training config with only `loss.objective` pointing at the class
    above, trains on it (gradients flow) and decodes with it (its greedy hook)."""
    cfg = compose_train(["loss=ctc"], tmp_path)
    with open_dict(cfg):
        cfg.loss.name = "prefix"
        cfg.loss.objective = {"_target_": "tests.recipe.test_objective_hooks.PrefixObjective", "blank_id": 0}
    module = hydra.utils.instantiate(cfg.model)
    assert type(module.objective).__name__ == "PrefixObjective" and module.objective.name == "prefix"
    features, lengths = torch.randn(2, 40, 80), torch.tensor([40, 28])
    batch = {"features": features, "feature_lengths": lengths, "targets": torch.tensor([[1, 2], [3, 0]]),
             "target_lengths": torch.tensor([2, 1])}
    module.losses(batch)[0].sum().backward()
    assert module.ctc_head.output.weight.grad.abs().sum() > 0
    hyps = module.eval().transcribe(features, lengths)
    assert len(hyps) == 2 and all(isinstance(h, list) for h in hyps)


def test_the_base_objective_names_a_missing_hook():
    class NoSearch(Objective):
        name = "nosearch"

    model = _model()
    with pytest.raises(NotImplementedError, match=r"loss 'nosearch' \(NoSearch\) has no greedy search"):
        GreedyDecoder()(SimpleNamespace(**{**vars(model), "objective": NoSearch()}), torch.zeros(1, 2, E),
                        torch.tensor([2]))
    with pytest.raises(NotImplementedError, match=r"'nosearch' \(NoSearch\) has no beam search"):
        NoSearch().beam(model, torch.zeros(1, 2, E), torch.tensor([2]), 2)
    with pytest.raises(NotImplementedError, match=r"'nosearch' \(NoSearch\) has no forced alignment"):
        NoSearch().align(model, None, None, None, None)


LOSS_NAMES = sorted(path.stem for path in (REPO / "conf" / "loss").glob("*.yaml"))
# a comparison (==, !=, in, not in) with a loss name as a string literal on its right
LOSS_SWITCH = re.compile(r"""(==|!=|\bin\b)[^#\n]*["'](""" + "|".join(LOSS_NAMES) + r""")["']""")
SWITCH_FREE = [REPO / "decode.py", REPO / "transcribe.py", REPO / "export.py", REPO / "train.py",
               *sorted((REPO / "recipes").rglob("*.py"))]


def loss_switches(text: str) -> list[str]:
    """Lines of `text` that compare something with a loss name (how a switch on the loss looks)."""
    return [line.strip() for line in text.splitlines() if LOSS_SWITCH.search(line)]


def test_no_module_switches_on_the_loss_name():
    assert loss_switches('        if name == "ctc":\n') and loss_switches("    elif name in ('rnnt', 'x'):")
    assert loss_switches('if model.objective.name != "ssnt":') and loss_switches('if kind in {"rnnt"}:')
    assert not loss_switches("if self.variant.final_blank:") and not loss_switches('if p.name != "last.ckpt":')
    assert LOSS_NAMES == ["ctc", "modified_rnnt", "rnnt", "ssnt"]
    found = {str(path.relative_to(REPO)): loss_switches(path.read_text()) for path in SWITCH_FREE}
    assert {path: lines for path, lines in found.items() if lines} == {}
    assert Path(REPO / "recipes" / "models" / "objectives.py") in SWITCH_FREE
