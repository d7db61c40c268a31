"""perf/* metrics tell the truth: step time includes the wait for data, throughput is summed over
ranks, the loss timer never synchronises the device when it is recorded."""
import time
from types import SimpleNamespace

import lightning as L
import pytest
import torch

from recipes.callbacks.perf import LossTimer, PerfMonitor


class _SlowBatches(torch.utils.data.Dataset):
    """Batches of 2 utterances of 1.5 s that take `delay` seconds to load."""

    def __init__(self, delay: float) -> None:
        self.delay = delay

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> dict:
        time.sleep(self.delay)
        return {"features": torch.randn(2, 5, 3), "durations": torch.tensor([1.5, 1.5])}


class _Objective:
    def __init__(self) -> None:
        self.loss_timer: LossTimer | None = None


class _Module(L.LightningModule):
    """A linear model whose loss forward sleeps `loss_s` inside the objective's timer."""

    def __init__(self, compute_s: float, loss_s: float) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(3, 1)
        self.compute_s, self.loss_s = compute_s, loss_s
        self.objective = _Objective()

    def training_step(self, batch, batch_idx):
        time.sleep(self.compute_s)
        with LossTimer(self.device) as timer:
            loss = self.layer(batch["features"]).square().mean()
            time.sleep(self.loss_s)
        self.objective.loss_timer = timer
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def test_step_time_includes_the_wait_for_data(tmp_path):
    metrics = []

    class Record(L.Callback):
        def on_train_batch_end(self, trainer, *args):
            metrics.append({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("perf/")})

    loader = torch.utils.data.DataLoader(_SlowBatches(0.15), batch_size=None)
    trainer = L.Trainer(accelerator="cpu", max_epochs=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, callbacks=[PerfMonitor(), Record()], default_root_dir=tmp_path)
    trainer.fit(_Module(compute_s=0.05, loss_s=0.02), loader)
    assert len(metrics) == 4
    for step in metrics[1:]:  # the first batch is timed from its own start
        assert step["perf/data_wait_s"] >= 0.14
        assert step["perf/step_time_s"] >= step["perf/data_wait_s"] + 0.06
        assert step["perf/audio_s_per_s"] == pytest.approx(3.0 / step["perf/step_time_s"])
        assert step["perf/utts_per_s_all_ranks"] == pytest.approx(step["perf/utts_per_s"])
        assert 20.0 <= step["perf/loss_ms"] < 150.0
    assert metrics[0]["perf/data_wait_s"] == 0.0 and metrics[0]["perf/step_time_s"] >= 0.07


def test_throughput_is_summed_over_ranks():
    """Hooks called directly with a two-rank trainer whose all-reduce adds a second rank's rates."""
    logged = {}
    other_rank = torch.tensor([10.0, 30.0], dtype=torch.float64)
    trainer = SimpleNamespace(world_size=2, strategy=SimpleNamespace(
        reduce=lambda tensor, reduce_op: tensor + other_rank if reduce_op == "sum" else None))
    module = SimpleNamespace(device=torch.device("cpu"), objective=SimpleNamespace(last_loss_ms=1.0),
                             log_dict=lambda values, **kwargs: logged.update(values))
    monitor = PerfMonitor()
    batch = {"features": torch.zeros(4, 10, 3), "durations": torch.full((4,), 2.0)}
    monitor.on_train_batch_start(trainer, module, batch, 0)
    time.sleep(0.05)
    monitor.on_train_batch_end(trainer, module, None, batch, 0)
    assert logged["perf/utts_per_s_all_ranks"] == pytest.approx(logged["perf/utts_per_s"] + 10.0)
    assert logged["perf/audio_s_per_s_all_ranks"] == pytest.approx(logged["perf/audio_s_per_s"] + 30.0)
    assert logged["perf/loss_ms"] == 1.0  # an objective without a timer: its last_loss_ms


def test_cpu_loss_timer_measures_the_block():
    with LossTimer(torch.device("cpu")) as timer:
        time.sleep(0.03)
    assert 25.0 <= timer.ms < 200.0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_loss_timer_records_events_and_reads_later():
    x = torch.randn(2048, 2048, device="cuda")
    with LossTimer(x.device) as timer:
        for _ in range(10):
            x = x @ x / 2048
    assert timer._events is not None  # nothing waited yet
    assert timer.ms > 0.0 and timer._events is None
