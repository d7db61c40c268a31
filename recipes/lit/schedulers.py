"""Learning-rate schedules that depend only on the step count (so a resumed run follows the same curve)."""
import torch


class WarmupInverseSqrt(torch.optim.lr_scheduler.LambdaLR):
    """lr(step) = base_lr · min((step + 1) / warmup_steps, sqrt(warmup_steps / (step + 1))).

    Linear warm-up to the base rate over `warmup_steps` optimizer steps, then 1/sqrt decay.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, warmup_steps: int = 500, last_epoch: int = -1) -> None:
        if warmup_steps < 1:
            raise ValueError(f"warmup_steps must be >= 1, got {warmup_steps}")
        self.warmup_steps = warmup_steps
        super().__init__(optimizer, self.factor, last_epoch=last_epoch)

    def factor(self, step: int) -> float:
        step += 1
        return min(step / self.warmup_steps, (self.warmup_steps / step) ** 0.5)
