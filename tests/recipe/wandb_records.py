"""Reads the history records of an offline wandb run file (`run-<id>.wandb`).

The file is a LevelDB-style log: a 7-byte header (":W&B", 0xBEE1, version), then 32 KiB blocks of
chunks, each with a 7-byte header (CRC32, little-endian length, type FULL/FIRST/MIDDLE/LAST);
a complete record is a serialised `wandb_internal_pb2.Record`.
"""
import struct
import time
from pathlib import Path

from wandb.proto import wandb_internal_pb2

_BLOCK = 32 * 1024
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def _records(data: bytes):
    if data[:4] != b":W&B":
        raise ValueError("not a wandb run file")
    pos, pending = 7, b""
    while pos + 7 <= len(data):
        if _BLOCK - pos % _BLOCK < 7:  # block trailer padding
            pos += _BLOCK - pos % _BLOCK
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0:  # zero fill: the writer flushed mid-block; records resume at the next block
            pos += _BLOCK - pos % _BLOCK
            continue
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == _FULL:
            yield chunk
        elif kind == _FIRST:
            pending = chunk
        elif kind == _MIDDLE:
            pending += chunk
        elif kind == _LAST:
            yield pending + chunk
        else:
            raise ValueError(f"bad chunk type {kind} at byte {pos}")


def history_keys(run_file: str | Path) -> dict[str, int]:
    """How many history rows of the run file hold each metric key."""
    counts: dict[str, int] = {}
    for raw in _records(Path(run_file).read_bytes()):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(raw)
        if record.WhichOneof("record_type") == "history":
            for item in record.history.item:
                key = item.key or "/".join(item.nested_key)
                counts[key] = counts.get(key, 0) + 1
    return counts


def wait_for_exit_record(run_file: str | Path, timeout_s: float = 60.0) -> None:
    """Waits until the run file holds wandb's `exit` record: `wandb.finish()` can return before
    wandb's service process has written the last records."""
    deadline = time.monotonic() + timeout_s
    while True:
        for raw in _records(Path(run_file).read_bytes()):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(raw)
            if record.WhichOneof("record_type") == "exit":
                return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{run_file} has no exit record after {timeout_s} s")
        time.sleep(0.2)
