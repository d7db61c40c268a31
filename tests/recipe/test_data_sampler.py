"""The duration-bucketed sampler: budgets, batches re-formed per epoch, determinism, exact resume, DDP shards."""

import itertools
import logging
import random

import lightning as L
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from recipes.data.datamodule import ASRDataModule
from recipes.data.sampler import DurationBucketSampler

_RNG = random.Random(0)
DURATIONS = [_RNG.uniform(0.5, 4.0) for _ in range(200)]


def _epoch(sampler, epoch):
    sampler.set_epoch(epoch)
    return [batch for _, batch in sampler]


def _pairs(batches):
    """The pairs of utterances that share a batch."""
    return {pair for batch in batches for pair in itertools.combinations(sorted(batch), 2)}


@settings(max_examples=30, deadline=None)
@given(durations=st.lists(st.floats(0.1, 12.0), min_size=1, max_size=60),
       max_duration=st.floats(5.0, 40.0), num_buckets=st.integers(1, 6), shuffle=st.booleans(),
       epoch=st.integers(0, 3))
def test_batches_respect_max_duration_and_cover_everything(durations, max_duration, num_buckets, shuffle, epoch):
    if min(durations) > max_duration:
        return
    sampler = DurationBucketSampler(durations, max_duration, num_buckets=num_buckets, shuffle=shuffle)
    batches = _epoch(sampler, epoch)
    assert all(sum(durations[i] for i in batch) <= max_duration for batch in batches)
    fitting = sorted(i for i, d in enumerate(durations) if d <= max_duration)
    assert sorted(i for batch in batches for i in batch) == fitting
    assert sampler.num_too_long == len(durations) - len(fitting)
    assert len(batches) == len(sampler)


def test_batches_are_re_formed_every_epoch():
    """Utterances that share a batch in one epoch mostly do not in the next: batches are re-formed,
    not only re-ordered (a sampler that forms its batches once shares every pair again)."""
    sampler = DurationBucketSampler(DURATIONS, 20.0, num_buckets=2, seed=3)  # ~11 batches per bucket
    epochs = [_epoch(sampler, epoch) for epoch in range(3)]
    for first, second in itertools.pairwise(epochs):
        shared = _pairs(first) & _pairs(second)
        assert len(shared) < 0.3 * len(_pairs(first))  # ~1/11 expected
        assert {frozenset(b) for b in first} != {frozenset(b) for b in second}
    # without shuffle (evaluation) the batches and their order are the same every epoch
    ordered = DurationBucketSampler(DURATIONS, 20.0, shuffle=False)
    assert _epoch(ordered, 0) == _epoch(ordered, 1)


def test_batches_are_a_function_of_seed_and_epoch():
    a, b = DurationBucketSampler(DURATIONS, 20.0, seed=3), DurationBucketSampler(DURATIONS, 20.0, seed=3)
    assert _epoch(a, 0) == _epoch(b, 0) and _epoch(a, 1) == _epoch(b, 1)
    assert _epoch(a, 5) == _epoch(b, 5)  # in any order of epochs
    assert _epoch(a, 0) != _epoch(a, 1)
    assert _epoch(a, 0) != _epoch(DurationBucketSampler(DURATIONS, 20.0, seed=4), 0)
    ordered = _epoch(DurationBucketSampler(DURATIONS, 20.0, shuffle=False), 0)
    firsts = [DURATIONS[batch[0]] for batch in ordered]
    assert firsts == sorted(firsts)


def test_batches_are_length_homogeneous():
    sampler = DurationBucketSampler(DURATIONS, 20.0, num_buckets=10)
    for epoch in range(3):
        for batch in _epoch(sampler, epoch):
            spread = max(DURATIONS[i] for i in batch) - min(DURATIONS[i] for i in batch)
            assert spread < 0.6  # one bucket of 20 utterances spans ~0.35 s of the 3.5 s range


def test_length_is_that_of_the_current_epoch():
    sampler = DurationBucketSampler(DURATIONS, 7.0, seed=1)
    counts = []
    for epoch in range(12):
        sampler.set_epoch(epoch)
        counts.append(len(sampler))
        assert counts[-1] == len(list(sampler))
    assert len(set(counts)) > 1  # re-formed batches: their number changes between epochs


@pytest.mark.parametrize("num_replicas,rank,consumed", [(1, 0, 0), (1, 0, 1), (1, 0, 7), (3, 2, 4)])
def test_resume_yields_the_uninterrupted_remainder(num_replicas, rank, consumed):
    def make():
        return DurationBucketSampler(DURATIONS, 20.0, seed=5, num_replicas=num_replicas, rank=rank)

    reference = make()
    uninterrupted = _epoch(reference, 2) + _epoch(reference, 3)
    first = make()
    first.set_epoch(2)
    iterator = iter(first)
    seen = [next(iterator)[1] for _ in range(consumed)]
    state = first.state_dict()
    assert state == {"epoch": 2, "batches_consumed": consumed}
    resumed = make()
    resumed.load_state_dict(state)
    assert len(resumed) == len(reference.batches(2))  # the whole epoch's count, as Lightning expects
    seen += [batch for _, batch in resumed]
    seen += _epoch(resumed, 3)
    assert seen == uninterrupted


def test_state_at_end_of_epoch_moves_on_to_the_next_epoch():
    sampler = DurationBucketSampler(DURATIONS, 20.0)
    resumed = DurationBucketSampler(DURATIONS, 20.0)
    resumed.load_state_dict({"epoch": 0, "batches_consumed": len(sampler.batches(0))})
    # the next iteration is epoch 1's, before any set_epoch (loader workers iterate at once)
    assert [b for _, b in resumed] == sampler.batches(1)
    assert _epoch(resumed, 1) == _epoch(sampler, 1)
    with pytest.raises(ValueError, match="batches_consumed"):
        resumed.load_state_dict({"epoch": 0, "batches_consumed": len(sampler.batches(0)) + 1})


@pytest.mark.parametrize("num_replicas", [2, 3, 4])
def test_training_shares_are_disjoint_equal_and_cover_the_epoch(num_replicas, caplog):
    for epoch in range(4):
        single = DurationBucketSampler(DURATIONS, 7.0, seed=1)
        formed = single.formed_batches(epoch)
        assert _epoch(single, epoch) == formed  # one process: every batch, nothing left out
        samplers = [DurationBucketSampler(DURATIONS, 7.0, seed=1, num_replicas=num_replicas, rank=rank)
                    for rank in range(num_replicas)]
        with caplog.at_level(logging.INFO, logger="recipes.data.sampler"):
            caplog.clear()
            shares = [_epoch(sampler, epoch) for sampler in samplers]
        assert len({len(share) for share in shares}) == 1  # every rank steps the same number of times
        flat = [tuple(batch) for share in shares for batch in share]
        assert len(set(flat)) == len(flat)  # no batch twice
        assert len({i for batch in flat for i in batch}) == sum(map(len, flat))  # no utterance twice
        left_out = len(formed) - len(flat)
        assert 0 <= left_out < num_replicas and left_out == samplers[0].num_left_out(epoch)
        assert set(flat) | {tuple(b) for b in formed[len(formed) - left_out:]} == {tuple(b) for b in formed}
        logged = [r.getMessage() for r in caplog.records if "left out" in r.getMessage()]
        assert len(logged) == (1 if left_out else 0)  # by rank 0 only
        if left_out:
            assert logged[0].startswith(f"epoch {epoch}: {left_out} of {len(formed)} batches")


@pytest.mark.parametrize("num_replicas,max_duration", [(2, 13.0), (3, 11.0), (4, 13.0)])
def test_evaluation_shares_count_every_utterance_exactly_once(num_replicas, max_duration):
    single = _epoch(DurationBucketSampler(DURATIONS, max_duration, shuffle=False), 0)
    shares = [_epoch(DurationBucketSampler(DURATIONS, max_duration, shuffle=False, equal_shares=False,
                                           num_replicas=num_replicas, rank=rank), 0)
              for rank in range(num_replicas)]
    assert len(single) % num_replicas  # the interesting case: the batches do not divide evenly
    assert max(map(len, shares)) - min(map(len, shares)) == 1
    flat = sorted(tuple(batch) for share in shares for batch in share)
    assert flat == sorted(tuple(batch) for batch in single)  # nothing repeated, nothing left out


def test_fewer_batches_than_ranks_are_split():
    durations = [1.0] * 5
    for equal_shares in (True, False):
        shares = [_epoch(DurationBucketSampler(durations, 10.0, num_buckets=1, equal_shares=equal_shares,
                                               num_replicas=4, rank=rank), 0) for rank in range(4)]
        assert [len(share) for share in shares] == [1, 1, 1, 1]
        assert sorted(i for share in shares for batch in share for i in batch) == list(range(5))
    with pytest.raises(ValueError, match="num_replicas=6"):
        DurationBucketSampler(durations, 10.0, num_replicas=6, rank=0)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="max_duration"):
        DurationBucketSampler(DURATIONS, 0)
    with pytest.raises(ValueError, match="rank"):
        DurationBucketSampler(DURATIONS, 20.0, num_replicas=2, rank=2)
    with pytest.raises(ValueError, match="seed"):
        DurationBucketSampler(DURATIONS, 20.0, seed=-1)
    with pytest.raises(ValueError, match="durations"):
        DurationBucketSampler([30.0], 20.0)


def test_finished_epoch_resumes_at_next_epoch_even_before_set_epoch():
    """A loader with workers iterates the sampler before Lightning calls set_epoch: a state whose
    epoch is finished must already yield the next epoch, and set_epoch(finished epoch) is ignored."""
    durations = [1.0 + 0.1 * i for i in range(40)]
    reference = DurationBucketSampler(durations, 4.0, num_buckets=2, seed=3)
    sampler = DurationBucketSampler(durations, 4.0, num_buckets=2, seed=3)
    finished = {"epoch": 2, "batches_consumed": len(reference.batches(2))}
    sampler.load_state_dict(finished)
    assert [b for _, b in sampler] == reference.batches(3)
    sampler.load_state_dict(finished)
    sampler.set_epoch(2)  # Lightning naming the finished epoch
    assert sampler.epoch == 3 and [b for _, b in sampler] == reference.batches(3)
    sampler.set_epoch(4)  # a later epoch is taken in full
    assert [b for _, b in sampler] == reference.batches(4)


class _Recorder(L.LightningModule):
    """A linear model that records (epoch, utterance ids) of every training batch."""

    def __init__(self, seen: list) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(80, 1)
        self.seen = seen

    def training_step(self, batch, batch_idx):
        self.seen.append((self.current_epoch, tuple(batch["ids"])))
        return self.layer(batch["features"]).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def test_lightning_trains_on_each_epochs_own_batches(tiny_datamodule_kwargs, tmp_path):
    """Under a Trainer every epoch visits exactly the batches the sampler formed for it, however
    many there are that epoch; a trainer that would not read their number every epoch is refused."""
    kwargs = {**tiny_datamodule_kwargs, "max_duration": 4.0, "seed": 2}
    datamodule = ASRDataModule(**kwargs)
    seen = []
    trainer = L.Trainer(max_epochs=4, accelerator="cpu", logger=False, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False, num_sanity_val_steps=0,
                        limit_val_batches=0, default_root_dir=tmp_path, reload_dataloaders_every_n_epochs=1)
    trainer.fit(_Recorder(seen), datamodule=datamodule)
    sampler, ids = datamodule._train_sampler, datamodule.datasets["train"]
    expected = [(epoch, tuple(ids.utterances[i].id for i in batch))
                for epoch in range(4) for batch in sampler.batches(epoch)]
    assert seen == expected
    assert len({len(sampler.batches(epoch)) for epoch in range(4)}) > 1  # the counts differ between epochs

    stale = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_progress_bar=False,
                      enable_model_summary=False, enable_checkpointing=False, limit_val_batches=0,
                      default_root_dir=tmp_path)
    with pytest.raises(ValueError, match="reload_dataloaders_every_n_epochs"):
        stale.fit(_Recorder([]), datamodule=ASRDataModule(**kwargs))
