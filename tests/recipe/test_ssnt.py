"""SSNT in the recipe: the choose head's initial P(emit), the end token, and greedy and beam search against the
lattice the loss is computed on."""
import itertools
import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

import seqloss
from recipes.decoding.beam import ssnt_beam_search
from recipes.decoding.greedy import ssnt_greedy
from recipes.models.heads import ChooseHead
from recipes.models.joiner import Joiner
from recipes.models.objectives import SSNTObjective, append_end_token
from recipes.models.predictor import LSTMPredictor

V, E = 5, 8


def test_choose_head_starts_at_the_emit_prior():
    head = ChooseHead(16, emit_prior=0.22)
    hidden = torch.randn(4, 7, 16) * 3
    torch.testing.assert_close(head(hidden).exp(), torch.full((4, 7), 0.22))


@pytest.mark.parametrize("prior", [0.0, 1.0, -0.5, 2.0])
def test_choose_head_rejects_a_prior_outside_zero_one(prior):
    with pytest.raises(ValueError, match="emit_prior"):
        ChooseHead(16, emit_prior=prior)


def test_ssnt_config_initialises_the_choose_head_at_its_prior(tmp_path):
    from hydra.utils import instantiate
    from recipe_cfg import compose_train

    cfg = compose_train(["loss=ssnt"], tmp_path)
    head = instantiate(cfg.model.choose_head)
    p_emit = head(torch.randn(3, cfg.model.joiner.joiner_dim)).exp()
    torch.testing.assert_close(p_emit, torch.full((3,), float(cfg.model.choose_head.emit_prior)))
    assert 0.15 < cfg.model.choose_head.emit_prior < 0.3  # the corpus' tokens per decision, not 1/2


# ---------------------------------------------------------------- a model given by score tables
class _CountPredictor(nn.Module):
    """Predictor whose output is the number of tokens emitted so far (the SSNT state j)."""

    blank_id = 0

    def step(self, tokens, state):
        count = torch.zeros(1, tokens.shape[0], 1) if state is None else state[0] + 1
        return count[0], (count,)


class _TableJoiner(nn.Module):
    """hidden = (frame i, state j); token logits and log P(emit) are looked up in tables (T, J, V) and (T, J)."""

    def __init__(self, log_q, log_emit):
        super().__init__()
        self.log_q, self.log_emit = log_q, log_emit

    def encoder_proj(self, enc):
        return enc

    def predictor_proj(self, out):
        return torch.cat([torch.zeros_like(out), out], dim=-1)

    def hidden(self, enc_proj, pred_proj):
        return enc_proj + pred_proj

    def output(self, hidden):
        return self.log_q[hidden[..., 0].long(), hidden[..., 1].long()].clone()

    def choose(self, hidden):
        return self.log_emit[hidden[..., 0].long(), hidden[..., 1].long()]


def _tables(frames=3, states=10, default_emit=0.1, default_q=(0.001, 0.6, 0.399)):
    p_emit = torch.full((frames, states), default_emit, dtype=torch.float64)
    q = torch.tensor(default_q, dtype=torch.float64).repeat(frames, states, 1)
    return p_emit, q


def _paths(frames, log_q, log_emit, cap, end_token):
    """Every (tokens, score) of the SSNT lattice on these tables, at most `cap` emissions per frame."""
    def walk(i, j, emitted, tokens, score):
        last = i == frames - 1
        if not last:
            yield from walk(i + 1, j, 0, tokens, score + math.log(1 - math.exp(log_emit[i, j])))
        elif emitted and not end_token:
            yield tokens, score  # ended by an emission on the last frame
        if emitted == cap:
            return
        for k in range(1, log_q.shape[-1]):
            yield from walk(i, j + 1, emitted + 1, tokens + (k,), score + float(log_emit[i, j] + log_q[i, j, k]))
        if last and end_token:
            yield tokens, score + float(log_emit[i, j] + log_q[i, j, 0])

    return list(walk(0, 0, 0, (), 0.0))


def _search(p_emit, q, end_token, cap=3, emit_rule="best_move"):
    log_q, log_emit = q.log(), p_emit.log()
    joiner = _TableJoiner(log_q, log_emit)
    frames = p_emit.shape[0]
    enc = torch.stack([torch.arange(frames, dtype=torch.float64), torch.zeros(frames, dtype=torch.float64)], -1)
    hyp = ssnt_greedy(enc[None], torch.tensor([frames]), _CountPredictor(), joiner, joiner.choose, 0, cap,
                      end_token, emit_rule)[0]
    return hyp, _paths(frames, log_q, log_emit, cap, end_token)


def test_greedy_takes_the_best_single_path_where_the_marginal_rule_does_not():
    """Frame 0: P(emit) = 0.6 but the best token has q = 0.55, so emitting scores 0.33 < 0.4 for shifting: the
    best path shifts, the rule "emit while P(emit) > 1/2" emits. Frame 1 emits a surely. On the last frame a path
    must end with an emission: the best path emits b although P(emit) = 0.3 < 1/2."""
    p_emit, q = _tables()
    p_emit[0, 0], q[0, 0] = 0.6, torch.tensor([0.0, 0.55, 0.45])
    p_emit[1, 0], q[1, 0] = 0.9, torch.tensor([0.0, 0.9, 0.1])
    p_emit[2, 1], q[2, 1] = 0.3, torch.tensor([0.0, 0.2, 0.8])
    hyp, paths = _search(p_emit, q, end_token=False)
    best_tokens, best_score = max(paths, key=lambda path: path[1])
    assert hyp == list(best_tokens) == [1, 2]
    assert best_score == pytest.approx(math.log(0.4 * 0.9 * 0.81 * 0.24))
    marginal = [1]  # emit a on frame 0 (0.6 > 1/2), then P(emit) = 0.1 and 0.3: nothing more
    assert hyp != marginal


def test_greedy_marginal_rule_emits_when_emitting_is_more_likely_than_shifting():
    """Frame 0: P(emit) = 0.6 spread evenly over a and b. The best single move (the default) shifts
    (0.3 < 0.4); the marginal rule emits, since emitting something (0.6) beats shifting (0.4), and takes a
    (the first of the tied arg-max). Both then shift until the last frame, where the path must end with
    an emission (a, q = 0.6)."""
    p_emit, q = _tables()
    p_emit[0, 0], q[0, 0] = 0.6, torch.tensor([0.0, 0.5, 0.5])
    best_move, _ = _search(p_emit, q, end_token=False, emit_rule="best_move")
    marginal, _ = _search(p_emit, q, end_token=False, emit_rule="marginal")
    assert best_move == [1]
    assert marginal == [1, 1]
    with pytest.raises(ValueError, match="emit_rule"):
        _search(p_emit, q, end_token=False, emit_rule="argmax")


def test_greedy_with_end_token_ends_only_on_the_last_frame():
    """The end token (id 0) has the highest q on frame 0, where it cannot be emitted (no path continues after
    it): the search emits the best other token. On the last frame it emits tokens until the end token wins."""
    p_emit, q = _tables(default_q=(0.05, 0.6, 0.35))
    p_emit[0, 0], q[0, 0] = 0.95, torch.tensor([0.7, 0.2, 0.1])
    p_emit[2] = 0.95
    q[2, 1] = torch.tensor([0.3, 0.1, 0.6])   # last frame, after one token: b before the end
    q[2, 2] = torch.tensor([0.9, 0.05, 0.05])  # then the end token
    hyp, paths = _search(p_emit, q, end_token=True)
    best_tokens, _ = max(paths, key=lambda path: path[1])
    assert hyp == list(best_tokens) == [1, 2]


# ---------------------------------------------------------------- the end token in the objective and in search
def _model(end_token, seed=0, mode="dense"):
    torch.manual_seed(seed)
    model = SimpleNamespace(objective=SSNTObjective(0, end_token=end_token, joiner_mode=mode),
                            predictor=LSTMPredictor(V, embed_dim=8, hidden_dim=8, output_dim=8, dropout=0.0).eval(),
                            joiner=Joiner(E, 8, 8, V).eval(), choose_head=ChooseHead(8).eval())
    model.joiner.output.weight.data.mul_(4)
    return model


def test_append_end_token_puts_the_end_after_each_target():
    targets = torch.tensor([[3, 4, 9], [5, 9, 9], [6, 7, 8]])
    extended, lengths = append_end_token(targets, torch.tensor([2, 1, 3]), 0)
    assert extended.tolist() == [[3, 4, 0, 0], [5, 0, 9, 0], [6, 7, 8, 0]]
    assert lengths.tolist() == [3, 2, 4]


def test_end_token_objective_is_ssnt_loss_of_the_targets_then_the_end():
    """With the end token the last word may be emitted before the last frame; the end token is the last target."""
    model = _model(end_token=True)
    enc = torch.randn(2, 6, E)
    targets, target_lengths, enc_lengths = torch.tensor([[1, 2, 3], [4, 1, 0]]), torch.tensor([3, 2]), torch.tensor(
        [6, 4])
    loss = model.objective(model, enc, enc_lengths, targets, target_lengths)
    extended = torch.tensor([[1, 2, 3, 0], [4, 1, 0, 0]])
    pred = model.joiner.predictor_proj(model.predictor(extended)[:, :4])
    hidden = model.joiner.hidden(model.joiner.encoder_proj(enc)[:, None], pred[:, :, None])
    expected = seqloss.ssnt_loss(model.joiner.output(hidden).log_softmax(-1), extended, model.choose_head(hidden),
                                 enc_lengths, target_lengths + 1, reduction="none")
    torch.testing.assert_close(loss, expected)
    without = SSNTObjective(0)(model, enc, enc_lengths, targets, target_lengths)
    assert not torch.allclose(loss, without)


@pytest.mark.parametrize("mode", ["packed", "fused"])
def test_end_token_objective_is_the_same_in_every_joiner_mode(mode):
    enc = torch.randn(2, 6, E)
    args = (enc, torch.tensor([6, 4]), torch.tensor([[1, 2, 3], [4, 1, 0]]), torch.tensor([3, 2]))
    dense = _model(True)
    other = _model(True, mode=mode)
    torch.testing.assert_close(other.objective(other, *args), dense.objective(dense, *args))


@pytest.mark.parametrize("end_token", [False, True])
def test_ssnt_beam_with_a_wide_beam_scores_each_hypothesis_by_the_objective(end_token):
    """No pruning and at most 3 tokens per frame (enough for these 3 frames): each hypothesis' search score is the
    sum over its alignments, log P(y | x) of the training objective, with or without the end token."""
    model = _model(end_token, seed=2)
    enc = torch.randn(3, E)
    with torch.no_grad():
        nbest = ssnt_beam_search(model, enc, beam_size=10**6, max_symbols_per_frame=3)
        assert len(nbest) > 20
        for tokens, score in nbest[:12]:
            assert 0 not in tokens
            loss = model.objective(model, enc[None], torch.tensor([3]), torch.tensor([tokens or [1]]),
                                   torch.tensor([len(tokens)]))
            assert score == pytest.approx(-float(loss), rel=1e-5, abs=1e-5)


@pytest.mark.parametrize("end_token", [False, True])
def test_greedy_is_the_best_path_on_random_tables_of_one_frame(end_token):
    """On one frame every move is an emission: greedy's hypothesis is the best-scoring path of the lattice
    (without the end token: the best single token; with it: tokens until the end token is the best)."""
    generator = torch.Generator().manual_seed(5)
    for _ in range(20):
        p_emit = torch.rand(1, 10, generator=generator, dtype=torch.float64) * 0.98 + 0.01
        q = torch.rand(1, 10, 3, generator=generator, dtype=torch.float64).softmax(-1)
        hyp, paths = _search(p_emit, q, end_token)
        if end_token:  # greedy over a chain of arg-max choices is the best path when each step is
            expected, state = [], 0
            while len(expected) < 3 and int(q[0, state].argmax()) != 0:
                expected.append(int(q[0, state].argmax()))
                state += 1
            assert hyp == expected
        else:
            assert hyp == list(max(paths, key=lambda path: path[1])[0])


def test_paths_enumeration_counts_every_alignment():
    """The brute-force enumeration used above: 2 frames, 2 tokens, cap 1: shift then emit (2), or emit, shift,
    emit (4) paths."""
    p_emit, q = _tables(frames=2, states=3, default_q=(0.2, 0.4, 0.4))
    paths = _paths(2, q.log(), p_emit.log(), cap=1, end_token=False)
    assert sorted(tokens for tokens, _ in paths) == sorted([(1,), (2,)] + list(itertools.product([1, 2], repeat=2)))
