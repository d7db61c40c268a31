"""Training objectives: which heads a loss needs and how its per-utterance loss is computed.

Every objective returns the per-utterance negative log-likelihood −log P(y | x) (B,), so that
`train/loss` (its batch mean) compares across losses. The seqloss call itself is timed
(`last_loss_ms`, forward only, device-synchronised) for `perf/loss_ms`.
"""
import time
from typing import Any, Protocol

import torch
from torch import nn

import seqloss
from seqloss import packed_cells


class Parts(Protocol):
    """The components an objective may use (the LightningModule provides them)."""

    predictor: nn.Module | None
    joiner: nn.Module | None
    ctc_head: nn.Module | None
    choose_head: nn.Module | None


class _LossTimer:
    """Measures the wall time of the wrapped block in milliseconds, synchronising CUDA."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.ms = 0.0

    def __enter__(self) -> "_LossTimer":
        if self.cuda:
            torch.cuda.synchronize()
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.cuda:
            torch.cuda.synchronize()
        self.ms = (time.perf_counter() - self.start) * 1000.0


def _seqloss_fn(name: str):
    fn = getattr(seqloss, name, None)
    if fn is None:
        raise NotImplementedError(f"seqloss.{name} is not available in this seqloss version")
    return fn


class Objective:
    """Base class: `name` (the loss tag), `requires` (components that must exist)."""

    name: str = ""
    requires: tuple[str, ...] = ()

    def __init__(self, blank_id: int = 0) -> None:
        self.blank_id = blank_id
        self.last_loss_ms = 0.0

    def check_parts(self, parts: Parts) -> None:
        """Raises ValueError naming the components this loss needs but the model lacks."""
        missing = [name for name in self.requires if getattr(parts, name, None) is None]
        if missing:
            raise ValueError(f"loss {self.name!r} needs model components {missing}, which are null in the model config")

    def __call__(self, parts: Parts, enc, enc_lengths, targets, target_lengths) -> torch.Tensor:
        raise NotImplementedError


class CTCObjective(Objective):
    """CTC on the transcriber: a linear head, `seqloss.ctc_loss` with blank `blank_id`."""

    name = "ctc"
    requires = ("ctc_head",)

    def __call__(self, parts, enc, enc_lengths, targets, target_lengths):
        log_probs = parts.ctc_head(enc).float().transpose(0, 1)  # (T, B, V)
        with _LossTimer(enc.device) as timer:
            loss = _seqloss_fn("ctc_loss")(log_probs, targets, enc_lengths, target_lengths,
                                           blank=self.blank_id, reduction="none")
        self.last_loss_ms = timer.ms
        return loss


class TransducerObjective(Objective):
    """RNN-T (`name="rnnt"`) or the one-symbol-per-frame transducer (`name="modified_rnnt"`).

    The joiner's `mode` picks dense logits, packed logits or the fused joiner+loss.
    `clamp > 0` clamps the gradient w.r.t. the logits; `final_blank` is the modified
    transducer's forced final blank (design 3.4); `inplace_grad` lets the dense and packed modes
    write the gradient over the joiner's logits (seqloss's opt-in, one (B,T,U+1,V) buffer less).
    """

    requires = ("predictor", "joiner")

    def __init__(self, name: str = "rnnt", blank_id: int = 0, clamp: float = -1.0, final_blank: bool = True,
                 inplace_grad: bool = False) -> None:
        super().__init__(blank_id)
        if name not in ("rnnt", "modified_rnnt"):
            raise ValueError(f"TransducerObjective name must be 'rnnt' or 'modified_rnnt', got {name!r}")
        self.name = name
        self.clamp = clamp
        self.loss_kwargs = {"final_blank": final_blank} if name == "modified_rnnt" else {}
        self.inplace_grad = bool(inplace_grad)

    def __call__(self, parts, enc, enc_lengths, targets, target_lengths):
        joiner = parts.joiner
        pred = parts.predictor(targets)
        kwargs = dict(blank=self.blank_id, clamp=self.clamp, reduction="none", **self.loss_kwargs)
        if joiner.mode == "fused":
            with _LossTimer(enc.device) as timer:
                loss = _seqloss_fn("fused_transducer_loss")(joiner, enc, pred, targets, enc_lengths, target_lengths,
                                                            loss=self.name, **kwargs)
            self.last_loss_ms = timer.ms
            return loss
        if joiner.mode == "packed":
            logits = joiner.packed(enc, pred, enc_lengths, target_lengths)
        else:
            logits = joiner(enc, pred)
        if self.inplace_grad and logits.requires_grad:
            kwargs["inplace_grad"] = True
        with _LossTimer(enc.device) as timer:
            loss = _seqloss_fn("rnnt_loss" if self.name == "rnnt" else "modified_rnnt_loss")(
                logits, targets, enc_lengths, target_lengths, **kwargs)
        self.last_loss_ms = timer.ms
        return loss


def append_end_token(targets: torch.Tensor, target_lengths: torch.Tensor, end_id: int):
    """(B, U) targets and (B,) lengths -> (B, U + 1) targets with `end_id` at position U_b, lengths + 1."""
    extended = nn.functional.pad(targets, (0, 1))
    extended = extended.scatter(1, target_lengths.long()[:, None], end_id)
    return extended, target_lengths + 1


class SSNTObjective(Objective):
    """Segment-to-segment neural transduction: the joiner scores tokens, the choose head emission.

    Predictor state j (after y_<j) meets encoder frame i; the joiner gives log-softmax token
    scores (J, S, V) and the choose head log P(emit) at i. `packed` packs the target positions
    (rows b then j, design 3.5); `dense` pads them.

    An SSNT path ends by emitting its last target on the last frame. With `end_token=True`, id
    `blank_id` is an end-of-sentence token appended to every target (as in Yu et al. 2016): the
    last word is emitted where it is spoken and the end token on the last frame, and the state after
    the last word learns to shift. With `end_token=False` the last word itself must be emitted on
    the last frame and id `blank_id` gets no target mass. Search never emits `blank_id`.
    """

    name = "ssnt"
    requires = ("predictor", "joiner", "choose_head")

    def __init__(self, blank_id: int = 0, end_token: bool = False) -> None:
        super().__init__(blank_id)
        self.end_token = bool(end_token)

    def __call__(self, parts, enc, enc_lengths, targets, target_lengths):
        joiner = parts.joiner
        if self.end_token:
            targets, target_lengths = append_end_token(targets, target_lengths, self.blank_id)
        if joiner.mode == "fused":
            with _LossTimer(enc.device) as timer:
                loss = _seqloss_fn("fused_transducer_loss")(
                    joiner, enc, parts.predictor(targets), targets, enc_lengths, target_lengths, loss="ssnt",
                    reduction="none", choose_head=parts.choose_head)
            self.last_loss_ms = timer.ms
            return loss
        pred = parts.predictor(targets)[:, : targets.shape[1]]  # states j = 0 .. U-1
        enc_proj = joiner.encoder_proj(enc)  # (B, S, D)
        pred_proj = joiner.predictor_proj(pred)  # (B, J, D)
        if joiner.mode == "packed":
            b_idx, j_idx, _ = packed_cells(target_lengths, torch.zeros_like(target_lengths), enc.device)
            hidden = joiner.hidden(enc_proj[b_idx], pred_proj[b_idx, j_idx][:, None])  # (ΣJ_b, S, D)
            targets = targets[b_idx, j_idx]
        else:
            hidden = joiner.hidden(enc_proj[:, None], pred_proj[:, :, None])  # (B, J, S, D)
        log_probs = joiner.output(hidden).float().log_softmax(dim=-1)
        log_p_choose = parts.choose_head(hidden).float()
        with _LossTimer(enc.device) as timer:
            loss = _seqloss_fn("ssnt_loss")(log_probs, targets, log_p_choose, enc_lengths, target_lengths,
                                            reduction="none")
        self.last_loss_ms = timer.ms
        return loss
