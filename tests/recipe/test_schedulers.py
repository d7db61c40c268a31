"""The learning-rate schedule: warm-up, 1/sqrt decay and the optional linear cooldown to zero."""
import math

import pytest
import torch

from recipes.lit.schedulers import WarmupInverseSqrt


def _rates(steps: int, **kwargs) -> list[float]:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2.0)
    scheduler = WarmupInverseSqrt(optimizer, **kwargs)
    rates = []
    for _ in range(steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


def test_warmup_then_inverse_sqrt():
    rates = _rates(40, warmup_steps=10)
    assert rates[0] == pytest.approx(2.0 / 10)
    assert rates[9] == pytest.approx(2.0)
    assert rates[39] == pytest.approx(2.0 * math.sqrt(10 / 40))
    assert all(a < b for a, b in zip(rates[:9], rates[1:10]))
    assert all(a > b for a, b in zip(rates[9:], rates[10:]))


def test_cooldown_reaches_zero_at_the_budget():
    plain = _rates(100, warmup_steps=10)
    cooled = _rates(100, warmup_steps=10, total_steps=100, cooldown_fraction=0.25)
    assert cooled[:75] == pytest.approx(plain[:75])  # untouched before the last 25 steps
    for step in range(75, 100):
        assert cooled[step] == pytest.approx(plain[step] * (100 - step) / 25)
    assert cooled[99] < 0.05 * plain[99]


def test_no_budget_means_no_cooldown():
    no_total = _rates(50, warmup_steps=5, total_steps=-1, cooldown_fraction=0.5)
    assert no_total == pytest.approx(_rates(50, warmup_steps=5))


@pytest.mark.parametrize("kwargs, match", [({"warmup_steps": 0}, "warmup_steps"),
                                           ({"cooldown_fraction": 1.5}, "cooldown_fraction")])
def test_bad_arguments_are_named(kwargs, match):
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ValueError, match=match):
        WarmupInverseSqrt(optimizer, **kwargs)
