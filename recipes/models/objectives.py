"""Training objectives: everything that depends on the loss, in one class per loss family.

An objective says which model components its loss needs (`requires`), computes the
per-utterance negative log-likelihood −log P(y | x) (B,) (`__call__`), so that `train/loss` (its
batch mean) compares across losses, and owns the searches of its lattice: the hooks `greedy`,
`beam` and `align`, which the decoders (recipes/decoding/) call. The search algorithms themselves
are functions in recipes/decoding/ shared by the objectives of a family. The seqloss call of the
loss is timed (`loss_timer`, forward only; CUDA events, read a step later without a device
synchronisation) for `perf/loss_ms`.

A new loss is one subclass of :class:`Objective` (here or in any module a config can name) plus its
conf/loss/<name>.yaml; nothing else switches on the loss.
"""
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

import seqloss
from recipes.decoding.alignment import LatticeAlignment
from recipes.decoding.beam import ctc_prefix_beam_search, ssnt_beam_search, transducer_beam_search
from recipes.decoding.greedy import ctc_greedy, ssnt_greedy, transducer_greedy
from recipes.models.heads import ssnt_scores
from recipes.models.joiner import MODES
from recipes.utils.timing import LossTimer
from seqloss import packed_cells

NBest = list[tuple[list[int], float]]


class Parts(Protocol):
    """The components an objective may use (the LightningModule provides them; the hooks get it as `model`)."""

    predictor: nn.Module | None
    joiner: nn.Module | None
    ctc_head: nn.Module | None
    choose_head: nn.Module | None


def _seqloss_fn(name: str):
    fn = getattr(seqloss, name, None)
    if fn is None:
        raise NotImplementedError(f"seqloss.{name} is not available in this seqloss version")
    return fn


def _check_joiner_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"loss.joiner_mode must be one of {', '.join(MODES)}, got {mode!r}")
    return mode


def _utterances(enc: torch.Tensor, lengths: torch.Tensor):
    """(b, encoder output of utterance b without padding (T_b, E)) for each utterance of (B, T, E)."""
    for b, length in enumerate(lengths.tolist()):
        yield b, enc[b][:length]


def _crop(occupancy: torch.Tensor, enc_lengths: torch.Tensor, positions: torch.Tensor) -> list[torch.Tensor]:
    """Each utterance's (frames, positions) corner of a padded (B, T, P) occupancy, on the CPU."""
    return [occupancy[b, : int(enc_lengths[b]), : int(positions[b])].cpu() for b in range(occupancy.shape[0])]


class Objective:
    """Base class: `name` (the loss tag), `requires` (components that must exist), and the hooks.

    Hooks (`model` has the components of :class:`Parts`; encoder output `enc` (B, T, E) with
    `lengths` (B,)):

    * ``__call__(model, enc, enc_lengths, targets, target_lengths)``: −log P(y | x) (B,);
    * ``greedy(model, enc, lengths, max_symbols_per_frame)``: one token list per utterance;
    * ``beam(model, enc, lengths, beam_size, max_symbols_per_frame, scorer=None)``: per utterance an
      n-best list [(tokens, search score)], best first; with a ``scorer``
      (:class:`~recipes.decoding.word_lm.WordLMScorer`, ``decoding=beam_lm``) the search adds its
      word-LM fusion score to every hypothesis (the search functions of ``recipes.decoding.beam``
      take it) and the search score includes it;
    * ``align(model, enc, enc_lengths, targets, target_lengths)``: the best path of each reference
      and the lattice's posterior occupancy, a :class:`LatticeAlignment`.

    `supports_aux_ctc` says whether the LightningModule may add an auxiliary CTC loss on the
    transcriber (not where the CTC head is the objective's own output layer).
    """

    name: str = ""
    requires: tuple[str, ...] = ()
    supports_aux_ctc: bool = True

    def __init__(self, blank_id: int = 0) -> None:
        self.blank_id = blank_id
        self.loss_timer: LossTimer | None = None  # the last loss forward's timer (read by PerfMonitor)

    @property
    def last_loss_ms(self) -> float:
        """Milliseconds of the last loss forward (waits for it on CUDA; 0.0 before the first)."""
        return self.loss_timer.ms if self.loss_timer is not None else 0.0

    def check_parts(self, parts: Parts) -> None:
        """Raises ValueError naming the components this loss needs but the model lacks."""
        missing = [name for name in self.requires if getattr(parts, name, None) is None]
        if missing:
            raise ValueError(f"loss {self.name!r} needs model components {missing}, which are null in the model config")

    def __call__(self, parts: Parts, enc, enc_lengths, targets, target_lengths) -> torch.Tensor:
        raise NotImplementedError(f"loss {self.name!r} ({type(self).__name__}) does not define its loss (__call__)")

    def greedy(self, model: Parts, enc: torch.Tensor, lengths: torch.Tensor,
               max_symbols_per_frame: int = 3) -> list[list[int]]:
        raise NotImplementedError(f"loss {self.name!r} ({type(self).__name__}) has no greedy search (greedy hook)")

    def beam(self, model: Parts, enc: torch.Tensor, lengths: torch.Tensor, beam_size: int,
             max_symbols_per_frame: int = 3, scorer=None) -> list[NBest]:
        raise NotImplementedError(f"loss {self.name!r} ({type(self).__name__}) has no beam search (beam hook)")

    def align(self, model: Parts, enc: torch.Tensor, enc_lengths: torch.Tensor, targets: torch.Tensor,
              target_lengths: torch.Tensor) -> LatticeAlignment:
        raise NotImplementedError(f"loss {self.name!r} ({type(self).__name__}) has no forced alignment (align hook)")


class CTCObjective(Objective):
    """CTC on the transcriber: a linear head, `seqloss.ctc_loss` with blank `blank_id`."""

    name = "ctc"
    requires = ("ctc_head",)
    supports_aux_ctc = False  # the CTC head is the output layer already

    def __call__(self, parts, enc, enc_lengths, targets, target_lengths):
        log_probs = parts.ctc_head(enc).float().transpose(0, 1)  # (T, B, V)
        with LossTimer(enc.device) as timer:
            loss = _seqloss_fn("ctc_loss")(log_probs, targets, enc_lengths, target_lengths,
                                           blank=self.blank_id, reduction="none")
        self.loss_timer = timer
        return loss

    def greedy(self, model, enc, lengths, max_symbols_per_frame=3):
        return ctc_greedy(model.ctc_head(enc), lengths, self.blank_id)

    def beam(self, model, enc, lengths, beam_size, max_symbols_per_frame=3, scorer=None):
        return [ctc_prefix_beam_search(model.ctc_head(one[None])[0], beam_size, self.blank_id, scorer=scorer)
                for _, one in _utterances(enc, lengths)]

    def align(self, model, enc, enc_lengths, targets, target_lengths):
        log_probs = model.ctc_head(enc).float().transpose(0, 1)
        best = seqloss.ctc_align(log_probs, targets, enc_lengths, target_lengths, blank=self.blank_id)
        post = seqloss.ctc_posteriors(log_probs, targets, enc_lengths, target_lengths, blank=self.blank_id)
        occupancy = post.transpose(0, 1).gather(2, targets[:, None].expand(-1, post.shape[0], -1))  # (B, T, U)
        return LatticeAlignment(best.token_frames, best.scores, _crop(occupancy, enc_lengths, target_lengths))


@dataclass(frozen=True)
class _TransducerVariant:
    """How a transducer variant differs: its seqloss functions and how many symbols a frame may carry."""

    loss: str                   # seqloss loss function (dense and packed joiner modes)
    align: str                  # seqloss best-path function
    posteriors: str             # seqloss occupancy function
    one_symbol_per_frame: bool  # greedy search emits at most one token per frame
    final_blank: bool           # the `final_blank` option applies


TRANSDUCER_VARIANTS = {
    "rnnt": _TransducerVariant("rnnt_loss", "rnnt_align", "rnnt_posteriors", False, False),
    "modified_rnnt": _TransducerVariant("modified_rnnt_loss", "modified_rnnt_align", "modified_rnnt_posteriors",
                                        True, True),
}


class TransducerObjective(Objective):
    """RNN-T (`name="rnnt"`) or the one-symbol-per-frame transducer (`name="modified_rnnt"`).

    `joiner_mode` picks dense logits, packed logits or the fused joiner+loss (recipes.models.joiner.MODES).
    `clamp > 0` clamps the gradient w.r.t. the logits; `final_blank` is the modified
    transducer's forced final blank (design 3.4); `inplace_grad` lets the dense and packed modes
    write the gradient over the joiner's logits (seqloss's opt-in, one (B,T,U+1,V) buffer less).
    Both variants share greedy search (the modified transducer capped at one symbol per frame),
    modified beam search and forced alignment by their seqloss lattice.
    """

    requires = ("predictor", "joiner")

    def __init__(self, name: str = "rnnt", blank_id: int = 0, clamp: float = -1.0, final_blank: bool = True,
                 inplace_grad: bool = False, joiner_mode: str = "dense") -> None:
        super().__init__(blank_id)
        self.joiner_mode = _check_joiner_mode(joiner_mode)
        if name not in TRANSDUCER_VARIANTS:
            raise ValueError(f"TransducerObjective name must be one of {sorted(TRANSDUCER_VARIANTS)}, got {name!r}")
        self.name = name
        self.variant = TRANSDUCER_VARIANTS[name]
        self.clamp = clamp
        self.loss_kwargs = {"final_blank": final_blank} if self.variant.final_blank else {}
        self.inplace_grad = bool(inplace_grad)

    def __call__(self, parts, enc, enc_lengths, targets, target_lengths):
        joiner = parts.joiner
        pred = parts.predictor(targets)
        kwargs = dict(blank=self.blank_id, clamp=self.clamp, reduction="none", **self.loss_kwargs)
        if self.joiner_mode == "fused":
            with LossTimer(enc.device) as timer:
                loss = _seqloss_fn("fused_transducer_loss")(joiner, enc, pred, targets, enc_lengths, target_lengths,
                                                            loss=self.name, **kwargs)
            self.loss_timer = timer
            return loss
        if self.joiner_mode == "packed":
            logits = joiner.packed(enc, pred, enc_lengths, target_lengths)
        else:
            logits = joiner(enc, pred)
        if self.inplace_grad and logits.requires_grad:
            kwargs["inplace_grad"] = True
        with LossTimer(enc.device) as timer:
            loss = _seqloss_fn(self.variant.loss)(logits, targets, enc_lengths, target_lengths, **kwargs)
        self.loss_timer = timer
        return loss

    def greedy(self, model, enc, lengths, max_symbols_per_frame=3):
        cap = 1 if self.variant.one_symbol_per_frame else max_symbols_per_frame
        return transducer_greedy(enc, lengths, model.predictor, model.joiner, self.blank_id, cap)

    def beam(self, model, enc, lengths, beam_size, max_symbols_per_frame=3, scorer=None):
        return [transducer_beam_search(model, one, beam_size, blank_id=self.blank_id, scorer=scorer)
                for _, one in _utterances(enc, lengths)]

    def align(self, model, enc, enc_lengths, targets, target_lengths):
        logits = model.joiner(enc, model.predictor(targets)).float()
        args = (logits, targets, enc_lengths, target_lengths)
        best = _seqloss_fn(self.variant.align)(*args, blank=self.blank_id, **self.loss_kwargs)
        post = _seqloss_fn(self.variant.posteriors)(*args, blank=self.blank_id, **self.loss_kwargs)
        occupancy = post.blank + torch.nn.functional.pad(post.emit, (0, 1))  # (B, T, U+1) cell occupancy
        return LatticeAlignment(best.token_frames, best.scores, _crop(occupancy, enc_lengths, target_lengths + 1))


def append_end_token(targets: torch.Tensor, target_lengths: torch.Tensor, end_id: int):
    """(B, U) targets and (B,) lengths -> (B, U + 1) targets with `end_id` at position U_b, lengths + 1."""
    extended = nn.functional.pad(targets, (0, 1))
    extended = extended.scatter(1, target_lengths.long()[:, None], end_id)
    return extended, target_lengths + 1


class SSNTObjective(Objective):
    """Segment-to-segment neural transduction: the joiner scores tokens, the choose head emission.

    Predictor state j (after y_<j) meets encoder frame i; the joiner gives log-softmax token
    scores (J, S, V) and the choose head log P(emit) at i. `joiner_mode`: `packed` packs the target
    positions (rows b then j, design 3.5); `dense` pads them; `fused` is seqloss's fused joiner+loss.

    An SSNT path ends by emitting its last target on the last frame. With `end_token=True`, id
    `blank_id` is an end-of-sentence token appended to every target (as in Yu et al. 2016): the
    last word is emitted where it is spoken and the end token on the last frame, and the state after
    the last word learns to shift. With `end_token=False` the last word itself must be emitted on
    the last frame and id `blank_id` gets no target mass. Search never emits `blank_id`.
    """

    name = "ssnt"
    requires = ("predictor", "joiner", "choose_head")

    def __init__(self, blank_id: int = 0, end_token: bool = False, joiner_mode: str = "dense") -> None:
        super().__init__(blank_id)
        self.end_token = bool(end_token)
        self.joiner_mode = _check_joiner_mode(joiner_mode)

    def __call__(self, parts, enc, enc_lengths, targets, target_lengths):
        joiner = parts.joiner
        if self.end_token:
            targets, target_lengths = append_end_token(targets, target_lengths, self.blank_id)
        if self.joiner_mode == "fused":
            with LossTimer(enc.device) as timer:
                loss = _seqloss_fn("fused_transducer_loss")(
                    joiner, enc, parts.predictor(targets), targets, enc_lengths, target_lengths, loss="ssnt",
                    reduction="none", choose_head=parts.choose_head)
            self.loss_timer = timer
            return loss
        packed = self.joiner_mode == "packed"
        log_probs, log_p_choose, targets = self.lattice_scores(parts, enc, targets, target_lengths, packed=packed)
        with LossTimer(enc.device) as timer:
            loss = _seqloss_fn("ssnt_loss")(log_probs, targets, log_p_choose, enc_lengths, target_lengths,
                                            reduction="none")
        self.loss_timer = timer
        return loss

    @staticmethod
    def lattice_scores(parts, enc, targets, target_lengths, packed: bool = False):
        """(token log-probabilities, log P(emit), targets) of the lattice of `targets` (B, J) on `enc` (B, S, E).

        Dense: (B, J, S, V), (B, J, S) and the targets as given; packed (rows b then j, design 3.5):
        (ΣJ_b, S, V), (ΣJ_b, S) and the targets (ΣJ_b,). Predictor state j (after y_<j) meets frame i.
        """
        joiner = parts.joiner
        pred = parts.predictor(targets)[:, : targets.shape[1]]  # states j = 0 .. U-1
        enc_proj = joiner.encoder_proj(enc)  # (B, S, D)
        pred_proj = joiner.predictor_proj(pred)  # (B, J, D)
        if packed:
            b_idx, j_idx, _ = packed_cells(target_lengths, torch.zeros_like(target_lengths), enc.device)
            hidden = joiner.hidden(enc_proj[b_idx], pred_proj[b_idx, j_idx][:, None])  # (ΣJ_b, S, D)
            targets = targets[b_idx, j_idx]
        else:
            hidden = joiner.hidden(enc_proj[:, None], pred_proj[:, :, None])  # (B, J, S, D)
        return (*ssnt_scores(joiner, parts.choose_head, hidden), targets)

    def greedy(self, model, enc, lengths, max_symbols_per_frame=3, emit_rule="best_move"):
        return ssnt_greedy(enc, lengths, model.predictor, model.joiner, model.choose_head, self.blank_id,
                           max_symbols_per_frame, self.end_token, emit_rule)

    def beam(self, model, enc, lengths, beam_size, max_symbols_per_frame=3, scorer=None):
        return [ssnt_beam_search(model, one, beam_size, max_symbols_per_frame, blank_id=self.blank_id,
                                 end_token=self.end_token, scorer=scorer) for _, one in _utterances(enc, lengths)]

    def align(self, model, enc, enc_lengths, targets, target_lengths):
        """The references as given (with `end_token`, the end token is not aligned)."""
        log_probs, log_p_choose, _ = self.lattice_scores(model, enc, targets, target_lengths)
        best = seqloss.ssnt_align(log_probs, targets, log_p_choose, enc_lengths, target_lengths)
        occupancy = seqloss.ssnt_posteriors(log_probs, targets, log_p_choose, enc_lengths,
                                            target_lengths).emit.transpose(1, 2)  # (B, S, J)
        return LatticeAlignment(best.token_frames, best.scores, _crop(occupancy, enc_lengths, target_lengths))
