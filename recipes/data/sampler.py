"""Duration-bucketed batch sampler: batches re-formed every epoch, exact resume, DDP shards."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

import numpy as np
import torch

log = logging.getLogger(__name__)


class DurationBucketSampler(torch.utils.data.Sampler):
    """Yields ``(epoch, indices)`` batches whose durations sum to at most ``max_duration``.

    Buckets: utterances are sorted by duration (ties by index) and cut into ``num_buckets``
    buckets of equal count, once. A batch never mixes buckets, so its utterances have similar
    lengths and little padding.

    Batches: with ``shuffle``, each epoch re-forms them (as lhotse's ``DynamicBucketingSampler``
    does): every bucket is shuffled, then packed greedily in that order to ``max_duration``, and
    the epoch's batches are visited in a shuffled order; all draws come from a generator seeded
    by ``(seed, epoch)``. The same utterances therefore do not share a batch epoch after epoch,
    and the number of batches may differ from one epoch to the next by a few. Without
    ``shuffle`` every bucket is packed in sorted order and the batches are visited shortest
    first, the same every epoch (evaluation).

    Distributed: every rank forms the same batches of an epoch (:meth:`formed_batches`), then
    takes every ``num_replicas``-th one from ``rank``. With ``equal_shares`` (training: every
    rank must take the same number of optimizer steps) the last ``count % num_replicas``
    batches of the epoch's order are left out, at most ``num_replicas - 1``, logged by rank 0.
    Without (evaluation) nothing is left out nor repeated: shares differ in length by at most
    one batch, and every utterance is in exactly one share. When an epoch has fewer batches
    than ranks, the largest batches are split in two until every rank has one (fewer
    utterances than ranks is an error). ``num_replicas`` and ``rank`` default to the
    initialised process group (else 1 and 0).

    ``len(sampler)`` is the number of batches of this rank in the current epoch
    (:meth:`set_epoch`); a trainer that trusts it must read it again every epoch (Lightning:
    ``reload_dataloaders_every_n_epochs=1``).

    Resume: :meth:`state_dict` holds the epoch and the batches consumed in it; after
    :meth:`load_state_dict`, iterating that epoch skips those batches, so a resumed run sees
    exactly the batches an uninterrupted run would have seen. The consumed count is what the
    sampler yielded, unless the caller states it (a training loop whose data loader prefetches
    knows better: see ``ASRDataModule.state_dict``).

    Utterances longer than ``max_duration`` cannot be batched; they are left out and counted in
    ``num_too_long``.
    """

    def __init__(self, durations: Sequence[float], max_duration: float, num_buckets: int = 10,
                 shuffle: bool = True, seed: int = 0, equal_shares: bool = True,
                 num_replicas: int | None = None, rank: int | None = None) -> None:
        if not max_duration > 0:
            raise ValueError(f"max_duration must be > 0, got {max_duration}")
        if not isinstance(num_buckets, int) or num_buckets < 1:
            raise ValueError(f"num_buckets must be an int >= 1, got {num_buckets!r}")
        if not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be an int >= 0, got {seed!r}")
        if num_replicas is None:
            distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
            num_replicas = torch.distributed.get_world_size() if distributed else 1
            rank = torch.distributed.get_rank() if distributed and rank is None else rank
        rank = 0 if rank is None else rank
        if not isinstance(num_replicas, int) or num_replicas < 1:
            raise ValueError(f"num_replicas must be an int >= 1, got {num_replicas!r}")
        if not isinstance(rank, int) or not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be an int in [0, {num_replicas}), got {rank!r}")
        self.durations = np.asarray(durations, dtype=np.float64).reshape(-1)
        self.max_duration = float(max_duration)
        self.num_buckets, self.shuffle, self.seed = num_buckets, bool(shuffle), int(seed)
        self.equal_shares, self.num_replicas, self.rank = bool(equal_shares), num_replicas, rank
        self.epoch = 0
        self._resume_at: tuple[int, int] | None = None  # (epoch, batches to skip) of the next iteration
        self._yielded = 0
        self._formed: tuple[int, list[list[int]]] | None = None  # (epoch, its batches): the last formed
        self._logged_epoch: int | None = None

        order = np.argsort(self.durations, kind="stable")  # by duration, ties by index
        fitting = order[self.durations[order] <= self.max_duration]
        self.num_too_long = len(order) - len(fitting)
        if self.num_too_long:
            log.warning("%d utterances longer than max_duration=%s s left out of batching",
                        self.num_too_long, self.max_duration)
        if len(fitting) == 0:
            raise ValueError(f"durations: no utterance fits in max_duration={max_duration}")
        if len(fitting) < num_replicas:
            raise ValueError(f"durations: {len(fitting)} utterances cannot give each of "
                             f"num_replicas={num_replicas} ranks a batch")
        edges = [bucket * len(fitting) // num_buckets for bucket in range(num_buckets + 1)]
        self._buckets = [fitting[start:end] for start, end in zip(edges, edges[1:]) if end > start]

    # -- forming batches -----------------------------------------------------------------------
    def _pack(self, members: np.ndarray) -> list[list[int]]:
        """Greedy packing of ``members`` in their order into batches of at most ``max_duration``."""
        batches: list[list[int]] = []
        batch, total = [], 0.0
        for index, duration in zip(members.tolist(), self.durations[members].tolist()):
            if batch and total + duration > self.max_duration:
                batches.append(batch)
                batch, total = [], 0.0
            batch.append(index)
            total += duration
        if batch:
            batches.append(batch)
        return batches

    def formed_batches(self, epoch: int) -> list[list[int]]:
        """Return every batch of ``epoch`` in visiting order, before sharding over ranks.

        A function of (durations, ``max_duration``, ``num_buckets``, ``seed``, ``epoch``,
        ``num_replicas``) only: every rank forms the same list.
        """
        if self._formed is not None and self._formed[0] == epoch:
            return self._formed[1]
        if self.shuffle:
            rng = np.random.default_rng([self.seed, int(epoch)])
            batches = [batch for members in self._buckets for batch in self._pack(rng.permutation(members))]
            batches = [batches[i] for i in rng.permutation(len(batches))]
        else:
            batches = [batch for members in self._buckets for batch in self._pack(members)]
        while len(batches) < self.num_replicas:  # split the largest batch until every rank has one
            largest = max(range(len(batches)), key=lambda i: (len(batches[i]), -i))
            batch = batches[largest]
            batches[largest:largest + 1] = [batch[:len(batch) // 2], batch[len(batch) // 2:]]
        self._formed = (epoch, batches)
        return batches

    def batches(self, epoch: int) -> list[list[int]]:
        """Return this rank's batches of ``epoch`` in order (without any resume skipping)."""
        batches = self.formed_batches(epoch)
        if self.equal_shares:
            batches = batches[:len(batches) - len(batches) % self.num_replicas]
        return batches[self.rank::self.num_replicas]

    def num_left_out(self, epoch: int) -> int:
        """Return how many of ``epoch``'s batches no rank gets (``equal_shares``; else 0)."""
        return len(self.formed_batches(epoch)) % self.num_replicas if self.equal_shares else 0

    # -- iteration -----------------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose batches the next iteration yields (Lightning calls this).

        While a resume position is pending (after :meth:`load_state_dict`, before the iteration
        that uses it), an earlier epoch is ignored: Lightning restarting from a checkpoint written
        after the last batch of an epoch may still name that finished epoch.
        """
        epoch = int(epoch)
        if self._resume_at is not None and epoch < self._resume_at[0]:
            return
        self.epoch = epoch

    def __iter__(self) -> Iterator[tuple[int, list[int]]]:
        epoch = self.epoch
        skip = self._resume_at[1] if self._resume_at is not None and self._resume_at[0] == epoch else 0
        self._resume_at = None
        self._yielded = skip
        batches = self.batches(epoch)
        left_out = self.num_left_out(epoch)
        if left_out and self.rank == 0 and self._logged_epoch != epoch:
            self._logged_epoch = epoch
            dropped = self.formed_batches(epoch)[len(self.formed_batches(epoch)) - left_out:]
            log.info("epoch %d: %d of %d batches (%d utterances) left out so that each of %d ranks gets %d",
                     epoch, left_out, len(self.formed_batches(epoch)), sum(map(len, dropped)),
                     self.num_replicas, len(batches))
        for batch in batches[skip:]:
            self._yielded += 1
            yield epoch, batch

    def __len__(self) -> int:
        return len(self.batches(self.epoch))

    # -- checkpointed state --------------------------------------------------------------------
    def state_dict(self, batches_consumed: int | None = None) -> dict[str, int]:
        """Return ``{"epoch", "batches_consumed"}`` (default: the batches yielded this epoch)."""
        consumed = self._yielded if batches_consumed is None else int(batches_consumed)
        return {"epoch": self.epoch, "batches_consumed": consumed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Resume at ``state``: the next iteration of its epoch yields the remaining batches.

        The epoch is selected too, so that an iterator created before the caller's
        :meth:`set_epoch` (a prefetching data loader with workers starts iterating at once)
        already yields the right batches. A finished epoch (all its batches consumed) resumes at
        the start of the next one; if the caller moves to a later epoch, that epoch is iterated
        in full.
        """
        epoch, consumed = int(state["epoch"]), int(state["batches_consumed"])
        count = len(self.batches(epoch))
        if not 0 <= consumed <= count:
            raise ValueError(f"state: batches_consumed must be in [0, {count}] (the batches of "
                             f"epoch {epoch} on this rank), got {consumed}")
        if consumed == count:  # a finished epoch: the next one starts from its first batch
            epoch, consumed = epoch + 1, 0
        self.epoch = epoch
        self._resume_at = (epoch, consumed)
