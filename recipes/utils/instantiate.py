"""Building callbacks and loggers from their config groups."""
import netrc
import os
from urllib.parse import urlparse

import hydra
from lightning.pytorch import Callback
from lightning.pytorch.loggers import Logger, WandbLogger
from omegaconf import DictConfig


def _instantiate_all(cfg: DictConfig | None, kind: type, what: str) -> list:
    """Instantiates every `_target_` entry of a group node (a dict of named entries)."""
    objects = []
    if not cfg:
        return objects
    if not isinstance(cfg, DictConfig):
        raise TypeError(f"the {what} config must be a mapping of named entries, got {type(cfg).__name__}")
    for name, node in cfg.items():
        if isinstance(node, DictConfig) and "_target_" in node:
            obj = hydra.utils.instantiate(node)
            if not isinstance(obj, kind):
                raise TypeError(f"{what} entry {name!r} built a {type(obj).__name__}, not a {kind.__name__}")
            objects.append(obj)
    return objects


def instantiate_callbacks(cfg: DictConfig | None) -> list[Callback]:
    """Callbacks from the `callbacks` group."""
    return _instantiate_all(cfg, Callback, "callbacks")


def instantiate_loggers(cfg: DictConfig | None) -> list[Logger]:
    """Loggers from the `logger` group."""
    return _instantiate_all(cfg, Logger, "logger")


def wandb_logged_in() -> bool:
    """Whether wandb can sync: `WANDB_API_KEY` is set, or `wandb login` stored a key (the netrc entry
    of the API host, `WANDB_BASE_URL` or api.wandb.ai; the file is `NETRC` or ~/.netrc)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").hostname
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def wandb_logger(offline: bool | None = None, **kwargs) -> WandbLogger:
    """A WandbLogger that syncs online when the user is logged in to wandb and runs offline otherwise
    (`offline` true or false overrides; `WANDB_MODE`, if set, is obeyed by wandb itself)."""
    if offline is None:
        offline = not wandb_logged_in()
    return WandbLogger(offline=offline, **kwargs)
