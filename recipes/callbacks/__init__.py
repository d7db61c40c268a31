"""Lightning callbacks of the recipe: per-step performance metrics and the checkpoint on a signal."""
from recipes.callbacks.interrupt import InterruptCheckpoint
from recipes.callbacks.perf import PerfMonitor

__all__ = ["InterruptCheckpoint", "PerfMonitor"]
