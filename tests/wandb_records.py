"""Read back the records of an offline W&B run file (`run-*.wandb`, a LevelDB-style log of protobuf records)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

from wandb.proto import wandb_internal_pb2

BLOCK = 32 * 1024
HEADER = 7  # file header: b":W&B", a 2-byte magic, a 1-byte version
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path) -> list[wandb_internal_pb2.Record]:
    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    out, pending, pos = [], b"", HEADER
    while pos + 7 <= len(data):
        left_in_block = BLOCK - pos % BLOCK
        if left_in_block < 7:  # the writer pads a block tail too short for a header
            pos += left_in_block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        payload = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == FULL:
            out.append(payload)
        elif kind == FIRST:
            pending = payload
        elif kind == MIDDLE:
            pending += payload
        elif kind == LAST:
            out.append(pending + payload)
    return [wandb_internal_pb2.Record.FromString(raw) for raw in out]


def history(path: Path) -> list[dict]:
    """The rows logged with `run.log`, as {key: value} dicts."""
    rows = []
    for record in records(path):
        if record.WhichOneof("record_type") == "history":
            row = {}
            for item in record.history.item:
                key = item.key or "/".join(item.nested_key)
                row[key] = json.loads(item.value_json)
            rows.append(row)
    return rows


def run_file(wandb_dir: Path) -> Path:
    found = sorted(Path(wandb_dir).rglob("run-*.wandb"))
    assert found, f"no offline W&B run file under {wandb_dir}"
    return found[-1]


def wait_for_exit(path: Path, timeout: float = 20.0) -> list[wandb_internal_pb2.Record]:
    """The records once the run's exit record is on disk (wandb-core may still be flushing after finish())."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        found = records(path) if Path(path).exists() else []
        if any(r.WhichOneof("record_type") == "exit" for r in found) or time.monotonic() > deadline:
            return found
        time.sleep(0.2)
