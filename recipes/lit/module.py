"""One LightningModule for CTC, RNN-T, modified RNN-T and SSNT models built from the same transcriber."""
import logging
import random
from collections.abc import Callable
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import nn

import seqloss
from recipes.data.text import normalize_text
from recipes.decoding.greedy import GreedyDecoder
from recipes.metrics.wer import EditCounts, word_error_counts
from recipes.models.objectives import Objective

log = logging.getLogger(__name__)


class BatchOutOfMemoryError(RuntimeError):
    """A batch did not fit in device memory; the message names its shape and a `max_duration` to try."""


class ASRLitModule(L.LightningModule):
    """Transcriber + the heads its loss needs, trained on `objective`.

    `optimizer` and `scheduler` are factories (Hydra `_partial_`) called in
    `configure_optimizers`; the scheduler steps every optimizer step. Heads a loss does not need
    are `None` (the loss config nulls them). Batches whose loss is not finite are skipped (no
    backward, no update) and counted in `train/skipped_batches`. Validation and test decode
    greedily and score WER with the shared normaliser.

    `aux_ctc_weight` > 0 adds an auxiliary CTC loss on the transcriber to a transducer or SSNT
    objective (as icefall does): the training loss is
    mean_b[−log P(y_b | x_b)] + aux_ctc_weight · mean_b[CTC_b]. It helps the encoder to learn
    where tokens are before the predictor learns to guess them. `train/loss` stays the objective's
    own negative log-likelihood (comparable across losses); the CTC term is `train/aux_ctc_loss`.
    With weight 0 (or for an objective without `supports_aux_ctc`, such as `loss=ctc`, where the CTC
    head is the output layer) no extra head is kept.
    """

    def __init__(
        self,
        transcriber: nn.Module,
        objective: Objective,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        predictor: nn.Module | None = None,
        joiner: nn.Module | None = None,
        ctc_head: nn.Module | None = None,
        choose_head: nn.Module | None = None,
        decoder: GreedyDecoder | None = None,
        aux_ctc_weight: float = 0.0,
    ) -> None:
        super().__init__()
        if not aux_ctc_weight >= 0.0:
            raise ValueError(f"aux_ctc_weight must be >= 0, got {aux_ctc_weight}")
        if not objective.supports_aux_ctc:
            aux_ctc_weight = 0.0  # e.g. CTC: the CTC head is the model's output layer already
        elif aux_ctc_weight == 0.0:
            ctc_head = None  # no auxiliary loss: do not keep (or checkpoint) an unused head
        elif ctc_head is None:
            raise ValueError(f"aux_ctc_weight={aux_ctc_weight} needs model.ctc_head, which is null in the model config")
        self.aux_ctc_weight = float(aux_ctc_weight)
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.transcriber = transcriber
        self.predictor = predictor
        self.joiner = joiner
        self.ctc_head = ctc_head
        self.choose_head = choose_head
        self.objective = objective
        objective.check_parts(self)
        self.decoder = decoder or GreedyDecoder()
        self.tokenizer = None
        self.skipped_batches = 0
        self._batch: dict | None = None
        self._skipped_this_batch = False
        # the seed of the per-batch RNG streams (see on_train_batch_start): the global seed the
        # model was built under, and the checkpoint's on resume
        self.rng_seed = torch.initial_seed()
        # per evaluation stage, this rank's totals: edit counts, and [summed loss, utterances]
        self._wer_counts = {"val": EditCounts(), "test": EditCounts()}
        self._loss_totals = {"val": [0.0, 0], "test": [0.0, 0]}

    # ---------------------------------------------------------------- forward pieces
    def encode(self, features: torch.Tensor, feature_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder output (B, T', E) and its lengths."""
        return self.transcriber(features, feature_lengths)

    def loss_per_utterance(self, batch: dict) -> torch.Tensor:
        """−log P(y | x) for each utterance of the batch, (B,)."""
        return self.losses(batch)[0]

    def losses(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The objective's −log P(y | x) (B,) and, with `aux_ctc_weight` > 0, the auxiliary CTC loss (B,)."""
        enc, enc_lengths = self.encode(batch["features"], batch["feature_lengths"])
        nll = self.objective(self, enc, enc_lengths, batch["targets"], batch["target_lengths"])
        if self.aux_ctc_weight == 0.0:
            return nll, None
        log_probs = self.ctc_head(enc).float().transpose(0, 1)  # (T, B, V)
        aux = seqloss.ctc_loss(log_probs, batch["targets"], enc_lengths, batch["target_lengths"],
                               blank=self.objective.blank_id, reduction="none", zero_infinity=True)
        return nll, aux

    @torch.no_grad()
    def transcribe(self, features: torch.Tensor, feature_lengths: torch.Tensor) -> list[list[int]]:
        """Greedy token-id hypotheses for a batch of features."""
        enc, enc_lengths = self.encode(features, feature_lengths)
        return self.decoder(self, enc, enc_lengths)

    # ---------------------------------------------------------------- training
    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is not None:
            self.tokenizer = datamodule.tokenizer

    def on_train_batch_start(self, batch: dict, batch_idx: int) -> None:
        # Every training batch draws its random numbers (dropout, ...) from the torch, numpy and
        # Python RNGs seeded from (seed, epoch, batch index). Between two batches the global RNGs
        # are also drawn from by things whose count depends on the run's history, not on the
        # training position: each data-loader iterator draws its base seed when it is created,
        # and a persistent-worker loader only once per process, so a resumed run draws at other
        # times than an uninterrupted one; a sanity check may or may not run. Keying the streams
        # on the position makes a resumed run's batches draw what an uninterrupted run's did.
        seed_batch(self.rng_seed, self.trainer.current_epoch, batch_idx)
        self._skipped_this_batch = False

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor | None:
        self._batch = batch  # for the out-of-memory message of backward
        try:
            nll, aux = self.losses(batch)
            loss = nll.mean()
            total = loss if aux is None else loss + self.aux_ctc_weight * aux.mean()
        except torch.OutOfMemoryError as error:
            raise BatchOutOfMemoryError(_oom_message(batch)) from error
        finite = bool(torch.isfinite(total))
        if self.trainer.world_size > 1:
            finite = self.trainer.strategy.reduce_boolean_decision(finite, all=True)
        batch_size = batch["features"].shape[0]
        if not finite:
            # Returning None makes Lightning skip backward and the update; every rank agrees. The
            # step's row still gets this batch's own (non-finite) loss, so that no logger repeats
            # the previous step's value for it, and the updated skip count.
            self.skipped_batches += 1
            self._skipped_this_batch = True
            log.warning("skipped batch %d of epoch %d (step %d, skipped so far: %d): %s",
                        batch_idx, self.current_epoch, self.global_step, self.skipped_batches,
                        _describe_losses(batch["ids"], nll, aux))
        self.log("train/loss", loss.detach(), prog_bar=True, batch_size=batch_size)
        self.log("train/skipped_batches", float(self.skipped_batches), batch_size=batch_size)
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], batch_size=batch_size)
        if aux is not None:
            self.log("train/aux_ctc_loss", aux.detach().mean(), batch_size=batch_size)
        if not finite:
            return None
        return total

    def backward(self, loss: torch.Tensor, *args: Any, **kwargs: Any) -> None:
        try:
            super().backward(loss, *args, **kwargs)
        except torch.OutOfMemoryError as error:
            raise BatchOutOfMemoryError(_oom_message(self._batch)) from error

    # ---------------------------------------------------------------- evaluation
    def _evaluate(self, batch: dict, stage: str) -> None:
        """Adds the batch's summed loss, utterance count and greedy-decoding edit counts to `stage`'s totals."""
        features, lengths = batch["features"], batch["feature_lengths"]
        if self.tokenizer is None:
            raise RuntimeError("WER needs a tokenizer: train through a datamodule that exposes `.tokenizer`")
        nll = self.loss_per_utterance(batch)
        self._loss_totals[stage][0] += float(nll.detach().double().sum())
        self._loss_totals[stage][1] += nll.shape[0]
        hyps = [self.tokenizer.decode(ids) for ids in self.transcribe(features, lengths)]
        self._wer_counts[stage] += word_error_counts(batch["texts"], hyps, normalize_text)

    def _log_totals(self, stage: str) -> None:
        """Logs `stage`'s loss and error rates from the counts summed over every rank.

        Each utterance is evaluated on exactly one rank (the datamodule's samplers neither pad nor
        repeat), so the sums are those of one process evaluating the whole set: `loss` is the mean
        per-utterance loss, `wer` = (S + D + I) / N over the whole set.
        """
        counts = self._wer_counts[stage]
        loss_sum, num_utts = self._loss_totals[stage]
        totals = torch.tensor(
            [counts.substitutions, counts.deletions, counts.insertions, counts.ref_words, loss_sum, num_utts],
            dtype=torch.float64, device=self.device,
        )
        totals = self.trainer.strategy.reduce(totals, reduce_op="sum")
        subs, dels, ins, ref_words, loss_sum, num_utts = totals.tolist()
        # already summed over ranks, hence equal on every rank: logged without Lightning's sync_dist (a mean of
        # equal float32 values need not be that value)
        if num_utts > 0:
            self.log(f"{stage}/loss", loss_sum / num_utts)
        self.log(f"{stage}/wer", (subs + dels + ins) / max(ref_words, 1.0), prog_bar=True)
        for name, value in (("sub", subs), ("del", dels), ("ins", ins)):
            self.log(f"{stage}/{name}_rate", value / max(ref_words, 1.0))
        self._reset_totals(stage)

    def _reset_totals(self, stage: str) -> None:
        self._wer_counts[stage] = EditCounts()
        self._loss_totals[stage] = [0.0, 0]

    def on_validation_epoch_start(self) -> None:
        self._reset_totals("val")

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._log_totals("val")

    def on_test_epoch_start(self) -> None:
        self._reset_totals("test")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._log_totals("test")

    # ---------------------------------------------------------------- optimisation and state
    def configure_optimizers(self) -> dict:
        optimizer = self.optimizer_factory(params=self.parameters())
        trainer = self._trainer
        if (optimizer.defaults.get("fused") and trainer is not None and "mixed" in str(trainer.precision)
                and trainer.gradient_clip_val):
            # Lightning clips the unscaled gradients under mixed precision, which a fused optimizer
            # (it unscales inside its kernel) does not allow: fall back to the per-tensor loop
            log.info("optimizer: fused=False under %s precision with gradient clipping", trainer.precision)
            optimizer = self.optimizer_factory(params=self.parameters(), fused=False)
        if self.scheduler_factory is None:
            return {"optimizer": optimizer}
        scheduler = self.scheduler_factory(optimizer=optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1}}

    def lr_scheduler_step(self, scheduler: Any, metric: Any | None) -> None:
        # a skipped batch took no optimizer step, so it takes no scheduler step either
        if self._skipped_this_batch:
            return
        super().lr_scheduler_step(scheduler, metric)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["skipped_batches"] = self.skipped_batches
        checkpoint["rng_seed"] = self.rng_seed

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.skipped_batches = checkpoint.get("skipped_batches", 0)
        self.rng_seed = checkpoint.get("rng_seed", self.rng_seed)


def seed_batch(seed: int, epoch: int, batch_idx: int) -> None:
    """Seeds torch (CPU and CUDA), numpy and `random` from (seed, epoch, batch_idx)."""
    state = np.random.SeedSequence([seed % 2**63, epoch, batch_idx]).generate_state(2, np.uint32)
    value = (int(state[0]) << 32 | int(state[1])) % 2**63
    torch.manual_seed(value)
    np.random.seed(int(state[0]))
    random.seed(value)


def _describe_losses(ids: list[str], nll: torch.Tensor, aux: torch.Tensor | None) -> str:
    """`id=loss` for each utterance of a skipped batch, the non-finite ones first and marked."""
    nll = nll.detach().float().cpu().tolist()
    aux = aux.detach().float().cpu().tolist() if aux is not None else [0.0] * len(nll)
    parts = []
    for utt, value, extra in zip(ids, nll, aux):
        bad = not (np.isfinite(value) and np.isfinite(extra))
        text = f"{utt}={value:.4g}" + (f" (aux ctc {extra:.4g})" if aux is not None and not np.isfinite(extra) else "")
        parts.append((not bad, ("NON-FINITE " if bad else "") + text))
    names = [utt for utt, value, extra in zip(ids, nll, aux) if not (np.isfinite(value) and np.isfinite(extra))]
    head = f"non-finite loss for {', '.join(names)}" if names else "non-finite batch mean of finite losses"
    return head + "; losses: " + ", ".join(text for _, text in sorted(parts, key=lambda p: p[0]))


def _oom_message(batch: dict) -> str:
    """Describes the batch that ran out of memory and a smaller `data.max_duration` to try."""
    features, targets = batch["features"], batch["targets"]
    total_s = float(batch["durations"].sum()) if "durations" in batch else features.shape[0] * features.shape[1] / 100
    return (
        f"out of device memory on a batch of {features.shape[0]} utterances, features {tuple(features.shape)}, "
        f"targets {tuple(targets.shape)}, {total_s:.1f} s of audio; "
        f"try data.max_duration={max(1.0, round(total_s * 0.6, 1))}"
    )
