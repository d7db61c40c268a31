"""Renamed keyword arguments: the old name keeps working for one release, with a DeprecationWarning."""
import functools
import warnings


def renamed_keyword(old: str, new: str):
    """Decorator: a call passing ``old=value`` runs as ``new=value`` and warns that ``old`` is deprecated.

    Passing both names is a TypeError. The wrapped function keeps its signature (``inspect.signature``
    shows only ``new``).
    """
    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            if old in kwargs:
                if new in kwargs:
                    raise TypeError(f"{fn.__name__}() got both {old!r} and its new name {new!r}; pass only {new!r}")
                warnings.warn(f"{fn.__name__}(): the keyword {old!r} is deprecated and will be removed in the next "
                              f"release; use {new!r}", DeprecationWarning, stacklevel=2)
                kwargs[new] = kwargs.pop(old)
            return fn(*args, **kwargs)
        return wrapper
    return decorate
