"""The duration-bucketed sampler: budgets, determinism, exact resume, DDP shards."""

import random

import pytest
from hypothesis import given, settings, strategies as st

from recipes.data.sampler import DurationBucketSampler

DURATIONS = [random.Random(0).uniform(0.5, 4.0) for _ in range(200)]


def _epoch(sampler, epoch):
    sampler.set_epoch(epoch)
    return [batch for _, batch in sampler]


@settings(max_examples=30, deadline=None)
@given(durations=st.lists(st.floats(0.1, 12.0), min_size=1, max_size=60),
       max_duration=st.floats(5.0, 40.0), num_buckets=st.integers(1, 6))
def test_batches_respect_max_duration_and_cover_everything(durations, max_duration, num_buckets):
    sampler = DurationBucketSampler(durations, max_duration, num_buckets=num_buckets) \
        if min(durations) <= max_duration else None
    if sampler is None:
        return
    batches = _epoch(sampler, 0)
    assert all(sum(durations[i] for i in batch) <= max_duration for batch in batches)
    fitting = sorted(i for i, d in enumerate(durations) if d <= max_duration)
    assert sorted(i for batch in batches for i in batch) == fitting
    assert sampler.num_too_long == len(durations) - len(fitting)
    assert len(batches) == len(sampler)


def test_order_is_a_function_of_seed_and_epoch():
    a, b = DurationBucketSampler(DURATIONS, 20.0, seed=3), DurationBucketSampler(DURATIONS, 20.0, seed=3)
    assert _epoch(a, 0) == _epoch(b, 0) and _epoch(a, 1) == _epoch(b, 1)
    assert _epoch(a, 0) != _epoch(a, 1)
    assert _epoch(a, 0) != _epoch(DurationBucketSampler(DURATIONS, 20.0, seed=4), 0)
    ordered = _epoch(DurationBucketSampler(DURATIONS, 20.0, shuffle=False), 0)
    firsts = [DURATIONS[batch[0]] for batch in ordered]
    assert firsts == sorted(firsts)


def test_batches_are_length_homogeneous():
    sampler = DurationBucketSampler(DURATIONS, 20.0, num_buckets=10)
    for batch in _epoch(sampler, 0):
        spread = max(DURATIONS[i] for i in batch) - min(DURATIONS[i] for i in batch)
        assert spread < 0.6  # one bucket of 20 utterances spans ~0.35 s of the 3.5 s range


@pytest.mark.parametrize("consumed", [0, 1, 7])
def test_resume_yields_the_uninterrupted_remainder(consumed):
    reference = DurationBucketSampler(DURATIONS, 20.0, seed=5)
    uninterrupted = _epoch(reference, 2) + _epoch(reference, 3)
    first = DurationBucketSampler(DURATIONS, 20.0, seed=5)
    first.set_epoch(2)
    iterator = iter(first)
    seen = [next(iterator)[1] for _ in range(consumed)]
    state = first.state_dict()
    assert state == {"epoch": 2, "batches_consumed": consumed}
    resumed = DurationBucketSampler(DURATIONS, 20.0, seed=5)
    resumed.load_state_dict(state)
    seen += [batch for _, batch in resumed]
    seen += _epoch(resumed, 3)
    assert seen == uninterrupted


def test_state_at_end_of_epoch_moves_on_to_the_next_epoch():
    sampler = DurationBucketSampler(DURATIONS, 20.0)
    resumed = DurationBucketSampler(DURATIONS, 20.0)
    resumed.load_state_dict({"epoch": 0, "batches_consumed": len(sampler)})
    # the next iteration is epoch 1's, before any set_epoch (loader workers iterate at once)
    assert [b for _, b in resumed] == sampler.batches(1)
    assert _epoch(resumed, 1) == _epoch(sampler, 1)
    with pytest.raises(ValueError, match="batches_consumed"):
        resumed.load_state_dict({"epoch": 0, "batches_consumed": len(sampler) + 1})


@pytest.mark.parametrize("drop_last", [True, False])
def test_ddp_ranks_get_disjoint_equal_shards(drop_last):
    single = _epoch(DurationBucketSampler(DURATIONS, 7.0, seed=1), 4)
    shards = [_epoch(DurationBucketSampler(DURATIONS, 7.0, seed=1, drop_last=drop_last,
                                           num_replicas=3, rank=rank), 4) for rank in range(3)]
    assert len({len(shard) for shard in shards}) == 1
    flat = [tuple(batch) for shard in shards for batch in shard]
    if drop_last:
        assert len(set(flat)) == len(flat) == len(single) // 3 * 3
    else:
        assert {tuple(b) for b in single} == set(flat) and len(flat) == -(-len(single) // 3) * 3
    assert all(set(batch) <= set(range(len(DURATIONS))) for batch in flat)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="max_duration"):
        DurationBucketSampler(DURATIONS, 0)
    with pytest.raises(ValueError, match="rank"):
        DurationBucketSampler(DURATIONS, 20.0, num_replicas=2, rank=2)
    with pytest.raises(ValueError, match="durations"):
        DurationBucketSampler([30.0], 20.0)


def test_finished_epoch_resumes_at_next_epoch_even_before_set_epoch():
    """A loader with workers iterates the sampler before Lightning calls set_epoch: a state whose
    epoch is finished must already yield the next epoch, and set_epoch(finished epoch) is ignored."""
    durations = [1.0 + 0.1 * i for i in range(40)]
    reference = DurationBucketSampler(durations, 4.0, num_buckets=2, seed=3)
    sampler = DurationBucketSampler(durations, 4.0, num_buckets=2, seed=3)
    sampler.load_state_dict({"epoch": 2, "batches_consumed": len(sampler)})
    assert [b for _, b in sampler] == reference.batches(3)
    sampler.load_state_dict({"epoch": 2, "batches_consumed": len(sampler)})
    sampler.set_epoch(2)  # Lightning naming the finished epoch
    assert sampler.epoch == 3 and [b for _, b in sampler] == reference.batches(3)
    sampler.set_epoch(4)  # a later epoch is taken in full
    assert [b for _, b in sampler] == reference.batches(4)
