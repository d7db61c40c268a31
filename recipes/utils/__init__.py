"""Run plumbing for train.py: instantiation helpers, checkpoint lookup, the task wrapper."""
from recipes.utils.checkpoints import find_last_checkpoint
from recipes.utils.instantiate import instantiate_callbacks, instantiate_loggers
from recipes.utils.run import task_wrapper

__all__ = ["find_last_checkpoint", "instantiate_callbacks", "instantiate_loggers", "task_wrapper"]
