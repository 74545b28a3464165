"""Read what an offline W&B run recorded, from its .wandb file (no network, no W&B server)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator


def wandb_records(offline_run: Path) -> Iterator[object]:
    """The protobuf records of an offline run's .wandb file: a LevelDB-style log (32 KiB blocks,
    7-byte chunk headers) after a 7-byte file header."""
    from wandb.proto import wandb_internal_pb2 as pb2

    data = next(offline_run.glob("run-*.wandb")).read_bytes()
    block, pos, buf = 32768, 7, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        if left < 7 or (length == 0 and kind == 0):
            pos += left
            continue
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        buf = chunk if kind in (1, 2) else buf + chunk
        if kind in (1, 4):  # a whole record, or the last chunk of one
            record = pb2.Record()
            record.ParseFromString(buf)
            yield record


def wandb_run_record(offline_run: Path):
    """The run record (group, job_type, config) of an offline W&B run."""
    for record in wandb_records(offline_run):
        if record.WhichOneof("record_type") == "run":
            return record.run
    raise AssertionError(f"no run record in {offline_run}")


def wandb_artifacts(offline_run: Path):
    """The artifacts an offline run logged."""
    return [r.artifact for r in wandb_records(offline_run) if r.WhichOneof("record_type") == "artifact"]
