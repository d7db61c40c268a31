"""Keras 3 front end of seqloss (``KERAS_BACKEND=torch``): CTC and RNN-T losses, a greedy CTC
decoder and a label-error-rate metric.

Keras is not a dependency of seqloss; this module is imported only on demand
(``import seqloss.keras``) and raises an :class:`ImportError` when keras 3 is not installed or
its backend is not ``torch``. Set ``KERAS_BACKEND=torch`` before keras is first imported.

Keras conventions apply: scores are batch-major, ``(B, T, V)`` for CTC and ``(B, T, U+1, V)``
for RNN-T. Padded label sequences mark their padding with negative entries (``-1``), the value
:func:`ctc_greedy_decode` pads with.

* :class:`CTCLossLayer` / :class:`RNNTLossLayer` take labels, scores and both lengths, register
  :func:`seqloss.ctc_loss` / :func:`seqloss.rnnt_loss` with ``add_loss`` and return the scores
  unchanged (the classic Keras CTC pattern: ``compile`` without a loss, ``fit`` without ``y``).
* :class:`CTCLoss` is a ``keras.losses.Loss`` for ``compile(loss=...)``: ``y_true`` padded labels,
  ``y_pred`` logits whose every frame counts.
* :func:`ctc_greedy_decode` / :class:`CTCGreedyDecoder`: best-path decoding.
* :func:`edit_distance` / :class:`LabelErrorRate`: Levenshtein distance and its corpus rate.
"""

from __future__ import annotations

from collections.abc import Sequence

_INSTALL_HINT = (
    "seqloss.keras needs Keras 3 running on its torch backend: install it with "
    "`pip install keras` (3.x) and set the environment variable KERAS_BACKEND=torch before "
    "keras is first imported"
)

try:
    import keras
except ImportError as error:  # keras absent, or its configured backend (e.g. tensorflow) absent
    raise ImportError(f"{_INSTALL_HINT} (importing keras failed: {error})") from error

if not hasattr(keras, "version") or int(keras.version().split(".")[0]) < 3:
    raise ImportError(f"{_INSTALL_HINT} (found keras {getattr(keras, '__version__', '?')})")
if keras.backend.backend() != "torch":
    raise ImportError(f"{_INSTALL_HINT} (keras is running on the {keras.backend.backend()!r} "
                      f"backend)")

import torch  # noqa: E402

from . import ctc as _ctc  # noqa: E402
from . import rnnt as _rnnt  # noqa: E402

__all__ = [
    "CTCLossLayer", "RNNTLossLayer", "CTCLoss", "CTCGreedyDecoder", "LabelErrorRate",
    "ctc_greedy_decode", "edit_distance",
]

_SCALAR_REDUCTIONS = ("mean", "sum")


def _tensor(value, name: str) -> torch.Tensor:
    """Return ``value`` (a torch tensor, numpy array or sequence) as a torch tensor."""
    if isinstance(value, torch.Tensor):
        return value
    try:
        return torch.as_tensor(keras.ops.convert_to_numpy(value))
    except Exception as error:
        raise ValueError(f"{name}: cannot be converted to a tensor ({error})") from None


def _lengths(value, name: str, batch: int) -> torch.Tensor:
    """Return lengths of shape (B,) (a (B, 1) column is accepted, as Keras inputs often are)."""
    value = _tensor(value, name)
    if value.dim() == 2 and value.shape[1] == 1:
        value = value[:, 0]
    if value.dim() != 1 or value.shape[0] != batch:
        raise ValueError(f"{name}: expected shape ({batch},) or ({batch}, 1), "
                         f"got {tuple(value.shape)}")
    return value


def _log_softmax(logits: torch.Tensor) -> torch.Tensor:
    """Return log_softmax over the last axis, in float32 for half-precision logits."""
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    return logits.log_softmax(-1)


def _check_reduction(reduction: str) -> None:
    if reduction not in _SCALAR_REDUCTIONS:
        raise ValueError(f"reduction must be one of {_SCALAR_REDUCTIONS} (add_loss takes a "
                         f"scalar), got {reduction!r}")


class CTCLossLayer(keras.layers.Layer):
    """Registers the CTC loss of ``logits`` with ``add_loss`` and returns ``logits`` unchanged.

    ``call(labels, logits, logit_lengths, label_lengths)``: ``labels`` (B, S) int, padded beyond
    ``label_lengths`` with any value; ``logits`` (B, T, V) batch-major scores; lengths (B,) or
    (B, 1) ints. The registered loss is exactly
    ``seqloss.ctc_loss(log_softmax(logits).transpose(0, 1), labels, logit_lengths, label_lengths,
    blank, reduction, zero_infinity)`` (``from_logits=False`` skips the log_softmax: the scores
    are then taken as log-probabilities). ``reduction="mean"`` divides each utterance's loss by
    its label length and averages over the batch; ``"sum"`` adds the utterance losses.
    """

    def __init__(self, blank: int = 0, reduction: str = "mean", *, zero_infinity: bool = False,
                 from_logits: bool = True, **kwargs) -> None:
        kwargs.setdefault("autocast", False)  # score the logits in the dtype they come in
        super().__init__(**kwargs)
        _check_reduction(reduction)
        self.blank, self.reduction = int(blank), reduction
        self.zero_infinity, self.from_logits = bool(zero_infinity), bool(from_logits)

    def call(self, labels, logits, logit_lengths, label_lengths):
        if logits.dim() != 3:
            raise ValueError(f"logits: expected (batch, frames, classes), "
                             f"got {tuple(logits.shape)}")
        batch = logits.shape[0]
        log_probs = _log_softmax(logits) if self.from_logits else logits
        loss = _ctc.ctc_loss(
            log_probs.transpose(0, 1), labels, _lengths(logit_lengths, "logit_lengths", batch),
            _lengths(label_lengths, "label_lengths", batch), blank=self.blank,
            reduction=self.reduction, zero_infinity=self.zero_infinity,
        )
        self.add_loss(loss)
        return logits

    def compute_output_spec(self, labels, logits, logit_lengths, label_lengths):
        return keras.KerasTensor(logits.shape, dtype=logits.dtype)

    def get_config(self) -> dict:
        return {**super().get_config(), "blank": self.blank, "reduction": self.reduction,
                "zero_infinity": self.zero_infinity, "from_logits": self.from_logits}


class RNNTLossLayer(keras.layers.Layer):
    """Registers the RNN-T loss of ``logits`` with ``add_loss`` and returns ``logits`` unchanged.

    ``call(labels, logits, logit_lengths, label_lengths)``: ``labels`` (B, U) int, ``logits``
    (B, T, U+1, V) joiner output, lengths (B,) or (B, 1) ints. The registered loss is exactly
    ``seqloss.rnnt_loss(logits, labels, logit_lengths, label_lengths, blank, clamp, reduction,
    fused_log_softmax)`` with torchaudio's defaults (``blank=-1`` is the last class; ``"mean"`` is
    the batch mean of the utterance losses).
    """

    def __init__(self, blank: int = -1, clamp: float = -1, reduction: str = "mean", *,
                 fused_log_softmax: bool = True, **kwargs) -> None:
        kwargs.setdefault("autocast", False)  # score the logits in the dtype they come in
        super().__init__(**kwargs)
        _check_reduction(reduction)
        self.blank, self.clamp, self.reduction = int(blank), float(clamp), reduction
        self.fused_log_softmax = bool(fused_log_softmax)

    def call(self, labels, logits, logit_lengths, label_lengths):
        if logits.dim() != 4:
            raise ValueError(f"logits: expected (batch, frames, labels + 1, classes), "
                             f"got {tuple(logits.shape)}")
        batch = logits.shape[0]
        loss = _rnnt.rnnt_loss(
            logits, labels, _lengths(logit_lengths, "logit_lengths", batch),
            _lengths(label_lengths, "label_lengths", batch), blank=self.blank, clamp=self.clamp,
            reduction=self.reduction, fused_log_softmax=self.fused_log_softmax,
        )
        self.add_loss(loss)
        return logits

    def compute_output_spec(self, labels, logits, logit_lengths, label_lengths):
        return keras.KerasTensor(logits.shape, dtype=logits.dtype)

    def get_config(self) -> dict:
        return {**super().get_config(), "blank": self.blank, "clamp": self.clamp,
                "reduction": self.reduction, "fused_log_softmax": self.fused_log_softmax}


def _label_lengths_from_padding(labels: torch.Tensor) -> torch.Tensor:
    """Return, per row of ``labels``, the index of its first negative entry (or its width)."""
    negative = labels < 0
    width = torch.full((labels.shape[0],), labels.shape[1], dtype=torch.long, device=labels.device)
    first = torch.where(negative.any(1), negative.int().argmax(1), width)
    return first


class CTCLoss(keras.losses.Loss):
    """CTC as a ``keras.losses.Loss``, for ``compile(loss=CTCLoss())`` with ``fit(x, y)``.

    ``y_true`` (B, S) int labels, each row ending at its first negative entry (pad with ``-1``);
    ``y_pred`` (B, T, V) logits (``from_logits=False``: log-probabilities), all T frames of every
    row counted. Per utterance it computes ``seqloss.ctc_loss(..., reduction="none")`` (the
    negative log-likelihood, not divided by the label length, as ``keras.losses.CTC``), divided
    by the label length (clamped to >= 1) when ``normalize_by_length=True``; Keras then applies
    its ``reduction`` (default: the batch mean) and any sample weights.
    """

    def __init__(self, blank: int = 0, *, zero_infinity: bool = False, from_logits: bool = True,
                 normalize_by_length: bool = False, name: str = "ctc_loss",
                 reduction: str = "sum_over_batch_size", **kwargs) -> None:
        super().__init__(name=name, reduction=reduction, **kwargs)
        self.blank, self.zero_infinity = int(blank), bool(zero_infinity)
        self.from_logits, self.normalize_by_length = bool(from_logits), bool(normalize_by_length)

    def call(self, y_true, y_pred):
        if y_pred.dim() != 3:
            raise ValueError(f"y_pred: expected (batch, frames, classes), "
                             f"got {tuple(y_pred.shape)}")
        labels = y_true.long() if y_true.is_floating_point() else y_true
        if labels.dim() != 2:
            raise ValueError(f"y_true: expected (batch, labels), got {tuple(labels.shape)}")
        label_lengths = _label_lengths_from_padding(labels)
        batch, frames = y_pred.shape[:2]
        log_probs = _log_softmax(y_pred) if self.from_logits else y_pred
        logit_lengths = torch.full((batch,), frames, dtype=torch.long, device=y_pred.device)
        losses = _ctc.ctc_loss(log_probs.transpose(0, 1), labels.clamp_min(0), logit_lengths,
                               label_lengths, blank=self.blank, reduction="none",
                               zero_infinity=self.zero_infinity)
        if self.normalize_by_length:
            losses = losses / label_lengths.clamp_min(1).to(losses.dtype)
        return losses

    def get_config(self) -> dict:
        return {**super().get_config(), "blank": self.blank, "zero_infinity": self.zero_infinity,
                "from_logits": self.from_logits, "normalize_by_length": self.normalize_by_length}


def ctc_greedy_decode(logits, logit_lengths=None, blank: int = 0, *, merge_repeated: bool = True,
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the best-path CTC decoding of ``logits`` (B, T, V) and its lengths.

    Per utterance: the arg-max class of each of its first ``logit_lengths[b]`` frames (all T when
    ``logit_lengths`` is None), runs of one class merged into one (``merge_repeated``), then
    blanks removed. Returns ``decoded`` (B, T) int64, the labels left-aligned and padded with
    ``-1``, and ``lengths`` (B,) int64. Ties go to the lowest class id (``argmax``).
    """
    logits = _tensor(logits, "logits")
    if logits.dim() != 3:
        raise ValueError(f"logits: expected (batch, frames, classes), got {tuple(logits.shape)}")
    batch, frames, classes = logits.shape
    if not -classes <= blank < classes:
        raise ValueError(f"blank: expected an id in [0, {classes}), got {blank}")
    blank %= classes
    if logit_lengths is None:
        lengths = torch.full((batch,), frames, dtype=torch.long, device=logits.device)
    else:
        lengths = _lengths(logit_lengths, "logit_lengths", batch)
        if lengths.is_floating_point() or (lengths < 0).any() or (lengths > frames).any():
            raise ValueError(f"logit_lengths: expected ints in [0, {frames}], "
                             f"got {lengths.tolist()}")
        lengths = lengths.to(device=logits.device, dtype=torch.long)
    with torch.no_grad():
        best = logits.argmax(-1)
        valid = torch.arange(frames, device=logits.device)[None, :] < lengths[:, None]
        keep = valid & (best != blank)
        if merge_repeated:
            previous = torch.cat([torch.full_like(best[:, :1], -1), best[:, :-1]], dim=1)
            keep &= best != previous
        decoded_lengths = keep.sum(1)
        # Stable sort moves the kept frames, in order, to the front of each row.
        order = torch.sort((~keep).to(torch.int8), dim=1, stable=True).indices
        decoded = torch.gather(best, 1, order)
        filled = torch.arange(frames, device=logits.device)[None, :] < decoded_lengths[:, None]
        decoded = torch.where(filled, decoded, torch.full_like(decoded, -1))
    return decoded, decoded_lengths


class CTCGreedyDecoder(keras.layers.Layer):
    """Keras layer around :func:`ctc_greedy_decode`: ``call(logits, logit_lengths=None)``.

    Returns the (B, T) int64 decoded labels, padded with ``-1`` (the lengths are the number of
    non-negative entries). Not differentiable; use it as a model output for metrics or inference.
    """

    def __init__(self, blank: int = 0, *, merge_repeated: bool = True, **kwargs) -> None:
        kwargs.setdefault("autocast", False)
        kwargs.setdefault("trainable", False)
        super().__init__(**kwargs)
        self.blank, self.merge_repeated = int(blank), bool(merge_repeated)

    def call(self, logits, logit_lengths=None):
        return ctc_greedy_decode(logits, logit_lengths, self.blank, merge_repeated=self.merge_repeated)[0]

    def compute_output_spec(self, logits, logit_lengths=None):
        return keras.KerasTensor(logits.shape[:2], dtype="int64")

    def get_config(self) -> dict:
        return {**super().get_config(), "blank": self.blank,
                "merge_repeated": self.merge_repeated}


def edit_distance(reference: Sequence, hypothesis: Sequence) -> int:
    """Return the Levenshtein distance (substitutions + deletions + insertions, each costing 1)
    that turns ``reference`` into ``hypothesis``."""
    reference, hypothesis = list(reference), list(hypothesis)
    row = list(range(len(hypothesis) + 1))
    for i, ref in enumerate(reference, start=1):
        diagonal, row[0] = row[0], i
        for j, hyp in enumerate(hypothesis, start=1):
            diagonal, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, diagonal + (ref != hyp))
    return row[-1]


def _rows(labels, name: str) -> list[list[int]]:
    """Return the rows of a padded (B, S) label tensor, each cut at its first negative entry."""
    labels = _tensor(labels, name)
    if labels.is_floating_point():
        labels = labels.round().long()
    if labels.dim() != 2:
        raise ValueError(f"{name}: expected (batch, labels), got {tuple(labels.shape)}")
    lengths = _label_lengths_from_padding(labels).tolist()
    return [row[:length] for row, length in zip(labels.tolist(), lengths)]


class LabelErrorRate(keras.metrics.Metric):
    """Label error rate: summed edit distances over summed reference lengths, over all batches.

    ``update_state(y_true, y_pred, sample_weight=None)``: ``y_true`` reference labels (B, S) and
    ``y_pred`` hypothesis labels (B, L) (e.g. the output of :class:`CTCGreedyDecoder`), each row
    ending at its first negative entry. ``sample_weight`` (B,) scales each utterance's edit
    distance and reference length. ``result()`` is ``Σ w_b·edit(ref_b, hyp_b) / Σ w_b·|ref_b|``
    (0 when no reference label has been seen). Computed on the CPU in Python: for monitoring, not
    for large batches every step.
    """

    def __init__(self, name: str = "label_error_rate", **kwargs) -> None:
        super().__init__(name=name, **kwargs)
        self.errors = self.add_variable(shape=(), initializer="zeros", dtype="float64",
                                        name="errors")
        self.reference_length = self.add_variable(shape=(), initializer="zeros", dtype="float64",
                                                  name="reference_length")

    def update_state(self, y_true, y_pred, sample_weight=None):
        references, hypotheses = _rows(y_true, "y_true"), _rows(y_pred, "y_pred")
        if len(references) != len(hypotheses):
            raise ValueError(f"y_pred: expected {len(references)} rows like y_true, "
                             f"got {len(hypotheses)}")
        if sample_weight is None:
            weights = [1.0] * len(references)
        else:
            weights = _tensor(sample_weight, "sample_weight").double().reshape(-1).tolist()
            if len(weights) != len(references):
                raise ValueError(f"sample_weight: expected {len(references)} weights, "
                                 f"got {len(weights)}")
        errors = sum(w * edit_distance(r, h) for w, r, h in zip(weights, references, hypotheses))
        length = sum(w * len(r) for w, r in zip(weights, references))
        self.errors.assign(self.errors + errors)
        self.reference_length.assign(self.reference_length + length)

    def result(self):
        return keras.ops.where(self.reference_length > 0,
                               self.errors / keras.ops.maximum(self.reference_length, 1.0), 0.0)
