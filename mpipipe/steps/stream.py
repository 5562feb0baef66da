"""Arrow streaming with checkpoints: a retried attempt resumes after the input batches already done.

Output is written in chunks to a per-partition checkpoint folder that outlives
a failed attempt; after each chunk, `state.json` records how many batches of
each input were consumed. The next attempt keeps those chunks and skips those
batches. On success the chunks become the partition's output.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from typing import Any, Dict, Iterator, List, Optional

import pyarrow as pa
import pyarrow.parquet as pq

from mpipipe.atomic import atomic_write
from mpipipe.steps.partio import PartitionData, conform_batches, nullable_schema, write_table

STATE = "state.json"


def checkpoint_dir(task: Any, node_name: str) -> str:
    return os.path.join(task.job_dir, "checkpoints", node_name, f"p{task.partition}")


def _load_state(folder: str, key: str) -> Optional[Dict[str, Any]]:
    try:
        with open(os.path.join(folder, STATE)) as f:
            state = json.load(f)
    except (OSError, ValueError):
        return None
    if state.get("key") != key or not all(os.path.exists(os.path.join(folder, c)) for c in state["chunks"]):
        return None
    return state


def _save_state(folder: str, state: Dict[str, Any]) -> None:
    atomic_write(os.path.join(folder, STATE), json.dumps(state), mode=None, sync=True)


class _Counting:
    """Batches of one input, skipping the first `skip`, counting what the body has pulled."""

    def __init__(self, data: PartitionData, batch_size: int, skip: int) -> None:
        self.data = data
        self.batch_size = batch_size
        self.pulled = skip
        self.skip = skip

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        for i, batch in enumerate(self.data.batches(self.batch_size)):
            if i < self.skip:
                continue
            self.pulled = i + 1
            yield batch


def run_stream(node: Any, task: Any, inputs: List[PartitionData]) -> Dict[str, Any]:
    from mpipipe.steps.tables import to_table

    folder = checkpoint_dir(task, node.name)
    state = _load_state(folder, task.task.key) if node.checkpoint else None
    if state is None:
        shutil.rmtree(folder, ignore_errors=True)
        state = {"key": task.task.key, "consumed": [0] * len(inputs), "chunks": [], "rows": 0}
    if state["chunks"]:
        task.log.info("resuming from a checkpoint: %d chunk(s), input batches done: %s", len(state["chunks"]),
                      state["consumed"])
    counters = [_Counting(d, node.batch_size, state["consumed"][i]) for i, d in enumerate(inputs)]
    schemas = [nullable_schema(d.schema()) for d in inputs]
    readers = [pa.RecordBatchReader.from_batches(s, conform_batches(c, s)) for s, c in zip(schemas, counters)]
    writer: Optional[pq.ParquetWriter] = None
    tmp_path = ""
    rows_in_chunk = 0
    last = time.monotonic()
    base = list(state["consumed"])

    def finish_chunk() -> None:
        nonlocal writer, rows_in_chunk, last, base
        if writer is not None:
            writer.close()
            name = f"chunk-{len(state['chunks']):05d}.parquet"
            os.replace(tmp_path, os.path.join(folder, name))
            state["chunks"].append(name)
            state["rows"] += rows_in_chunk
            writer, rows_in_chunk = None, 0
        state["consumed"] = [c.pulled for c in counters]
        base = list(state["consumed"])
        last = time.monotonic()
        if node.checkpoint:
            _save_state(folder, state)

    os.makedirs(folder, exist_ok=True)
    schema = None
    make_ctx = getattr(node, "runtime_context", None)
    for item in node.process(make_ctx(task) if make_ctx is not None else task, readers) or ():
        force = bool(getattr(item, "force_checkpoint", False)) and hasattr(item, "batch_indices")
        if force:  # a StreamOutput(table, batch_indices, force_checkpoint)
            item = item.output
        elif hasattr(item, "batch_indices") and hasattr(item, "output"):
            item = item.output
        table = to_table(item, f"node {node.name!r}")
        if writer is None:
            tmp_path = os.path.join(folder, f".chunk.{os.getpid()}.tmp")
            writer = pq.ParquetWriter(tmp_path, nullable_schema(table.schema))  # NOT NULL would depend on the data
        schema = schema or table.schema
        writer.write_table(table.cast(writer.schema) if table.schema != writer.schema else table)
        rows_in_chunk += table.num_rows
        done = sum(c.pulled - b for c, b in zip(counters, base))
        if force or done >= node.checkpoint_batches or time.monotonic() - last >= node.checkpoint_seconds:
            finish_chunk()
    finish_chunk()
    out = task.output_dir
    for name in state["chunks"]:
        os.replace(os.path.join(folder, name), os.path.join(out, name))
    if not state["chunks"]:
        empty = node.output_schema() or (inputs[0].schema() if inputs else None)
        if empty is None:
            raise ValueError(f"node {node.name!r} produced no batches and declares no output_schema")
        write_table(empty.empty_table(), out)
    shutil.rmtree(folder, ignore_errors=True)
    return {"rows": state["rows"]}
