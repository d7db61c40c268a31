"""Reads the history records of an offline wandb run file (`run-<id>.wandb`).

The file is a LevelDB-style log: a 7-byte header (":W&B", 0xBEE1, version), then 32 KiB blocks of
chunks, each with a 7-byte header (CRC32, little-endian length, type FULL/FIRST/MIDDLE/LAST);
a complete record is a serialised `wandb_internal_pb2.Record`.
"""
import struct
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
        elif kind == 0:  # zero fill after the last record
            return
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
