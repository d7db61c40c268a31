"""Duration-bucketed batch sampler with exact, checkpointable resume and DDP sharding."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

import torch

log = logging.getLogger(__name__)


class DurationBucketSampler(torch.utils.data.Sampler):
    """Yields ``(epoch, indices)`` batches whose durations sum to at most ``max_duration``.

    Batches are formed once: utterances are sorted by duration (ties by index), cut into
    ``num_buckets`` buckets of equal count, and each bucket is packed greedily in that order, so
    the utterances of a batch have similar lengths and little padding. With ``shuffle`` the
    batches are visited in an order drawn from ``(seed, epoch)``; without, shortest first. The
    number of batches is therefore the same every epoch (``len(sampler)``), as Lightning assumes.

    Distributed: every rank forms the same batch list, then takes every ``num_replicas``-th batch
    from ``rank``. The list is cut to a multiple of ``num_replicas`` with ``drop_last``, otherwise
    padded by repeating its first batches, so every rank gets the same number of batches.
    ``num_replicas`` and ``rank`` default to the initialised process group (else 1 and 0).

    Resume: :meth:`state_dict` holds the epoch and the batches consumed in it;
    after :meth:`load_state_dict`, iterating that epoch skips those batches, so a resumed run
    sees exactly the batches an uninterrupted run would have seen. The consumed count is what the
    sampler yielded, unless the caller states it (a training loop whose data loader prefetches
    knows better: see ``ASRDataModule.state_dict``).

    Utterances longer than ``max_duration`` cannot be batched; they are left out and counted in
    ``num_too_long``.
    """

    def __init__(self, durations: Sequence[float], max_duration: float, num_buckets: int = 10,
                 shuffle: bool = True, seed: int = 0, drop_last: bool = False,
                 num_replicas: int | None = None, rank: int | None = None) -> None:
        if not max_duration > 0:
            raise ValueError(f"max_duration must be > 0, got {max_duration}")
        if not isinstance(num_buckets, int) or num_buckets < 1:
            raise ValueError(f"num_buckets must be an int >= 1, got {num_buckets!r}")
        if num_replicas is None:
            distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
            num_replicas = torch.distributed.get_world_size() if distributed else 1
            rank = torch.distributed.get_rank() if distributed and rank is None else rank
        rank = 0 if rank is None else rank
        if not isinstance(num_replicas, int) or num_replicas < 1:
            raise ValueError(f"num_replicas must be an int >= 1, got {num_replicas!r}")
        if not isinstance(rank, int) or not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be an int in [0, {num_replicas}), got {rank!r}")
        self.durations = [float(d) for d in durations]
        self.max_duration = float(max_duration)
        self.num_buckets, self.shuffle, self.seed = num_buckets, shuffle, seed
        self.drop_last, self.num_replicas, self.rank = drop_last, num_replicas, rank
        self.epoch = 0
        self._resume_at: tuple[int, int] | None = None  # (epoch, batches to skip) of the next iteration
        self._yielded = 0
        self._batches, self.num_too_long = self._pack()
        if self.num_too_long:
            log.warning("%d utterances longer than max_duration=%s s left out of batching",
                        self.num_too_long, self.max_duration)
        if not self._batches:
            raise ValueError(f"durations: no utterance fits in max_duration={max_duration}")
        count = len(self._batches)
        self._num_batches = count // num_replicas if drop_last else -(-count // num_replicas)
        if self._num_batches == 0:
            raise ValueError(f"num_replicas={num_replicas} exceeds the {count} batches "
                             f"(drop_last=True leaves none)")

    def _pack(self) -> tuple[list[list[int]], int]:
        order = sorted(range(len(self.durations)), key=lambda i: (self.durations[i], i))
        fitting = [i for i in order if self.durations[i] <= self.max_duration]
        batches: list[list[int]] = []
        for bucket in range(self.num_buckets):
            members = fitting[bucket * len(fitting) // self.num_buckets:
                              (bucket + 1) * len(fitting) // self.num_buckets]
            batch, total = [], 0.0
            for index in members:
                if batch and total + self.durations[index] > self.max_duration:
                    batches.append(batch)
                    batch, total = [], 0.0
                batch.append(index)
                total += self.durations[index]
            if batch:
                batches.append(batch)
        return batches, len(order) - len(fitting)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose batch order the next iteration yields (Lightning calls this).

        While a resume position is pending (after :meth:`load_state_dict`, before the iteration
        that uses it), an earlier epoch is ignored: Lightning restarting from a checkpoint written
        after the last batch of an epoch may still name that finished epoch.
        """
        epoch = int(epoch)
        if self._resume_at is not None and epoch < self._resume_at[0]:
            return
        self.epoch = epoch

    def batches(self, epoch: int) -> list[list[int]]:
        """Return this rank's batches of ``epoch`` in order (without any resume skipping)."""
        batches = self._batches
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            batches = [batches[i] for i in torch.randperm(len(batches), generator=generator)]
        total = self._num_batches * self.num_replicas
        batches = (batches * (1 + total // len(batches)))[:total]
        return batches[self.rank::self.num_replicas]

    def __iter__(self) -> Iterator[tuple[int, list[int]]]:
        epoch = self.epoch
        skip = self._resume_at[1] if self._resume_at is not None and self._resume_at[0] == epoch else 0
        self._resume_at = None
        self._yielded = skip
        for batch in self.batches(epoch)[skip:]:
            self._yielded += 1
            yield epoch, batch

    def __len__(self) -> int:
        return self._num_batches

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
        consumed = int(state["batches_consumed"])
        if not 0 <= consumed <= self._num_batches:
            raise ValueError(f"state: batches_consumed must be in [0, {self._num_batches}], "
                             f"got {consumed}")
        epoch = int(state["epoch"])
        if consumed == self._num_batches:  # a finished epoch: the next one starts from its first batch
            epoch, consumed = epoch + 1, 0
        self.epoch = epoch
        self._resume_at = (epoch, consumed)
