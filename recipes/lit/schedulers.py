"""Learning-rate schedules that depend only on the step count (so a resumed run follows the same curve)."""
import torch


class WarmupInverseSqrt(torch.optim.lr_scheduler.LambdaLR):
    """lr(step) = base_lr · min((s) / W, sqrt(W / s)) · cooldown(step),  s = step + 1,  W = warmup_steps.

    Linear warm-up to the base rate over `warmup_steps` optimizer steps, then 1/sqrt decay. With a
    known budget (`total_steps` > 0, e.g. ``${trainer.max_steps}``) and `cooldown_fraction` c > 0,
    the last C = round(c · total_steps) steps also decay linearly to zero:

        cooldown(step) = min(1, (total_steps - step) / C)

    so the final update is taken at lr ≈ 0 (a fixed-budget run ends on an annealed model instead of
    mid-noise). `total_steps` <= 0 (no step budget) turns the cooldown off.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, warmup_steps: int = 500, total_steps: int = -1,
                 cooldown_fraction: float = 0.0, last_epoch: int = -1) -> None:
        if warmup_steps < 1:
            raise ValueError(f"warmup_steps must be >= 1, got {warmup_steps}")
        if not 0.0 <= cooldown_fraction <= 1.0:
            raise ValueError(f"cooldown_fraction must be in [0, 1], got {cooldown_fraction}")
        self.warmup_steps = warmup_steps
        self.total_steps = int(total_steps) if total_steps is not None else -1
        self.cooldown_steps = round(cooldown_fraction * self.total_steps) if self.total_steps > 0 else 0
        super().__init__(optimizer, self.factor, last_epoch=last_epoch)

    def factor(self, step: int) -> float:
        cooldown = 1.0
        if self.cooldown_steps > 0:
            cooldown = min(1.0, max(0.0, (self.total_steps - step) / self.cooldown_steps))
        step += 1
        return min(step / self.warmup_steps, (self.warmup_steps / step) ** 0.5) * cooldown
