"""Run plumbing for train.py: instantiation helpers, checkpoint lookup and atomic writes, the task wrapper."""
from recipes.utils.checkpoint_io import AtomicCheckpointIO, atomic_torch_save
from recipes.utils.checkpoints import checkpoint_problem, find_last_checkpoint, readable_checkpoints
from recipes.utils.instantiate import instantiate_callbacks, instantiate_loggers
from recipes.utils.run import task_wrapper

__all__ = ["AtomicCheckpointIO", "atomic_torch_save", "checkpoint_problem", "find_last_checkpoint",
           "instantiate_callbacks", "instantiate_loggers", "readable_checkpoints", "task_wrapper"]
