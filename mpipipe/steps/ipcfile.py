"""Shuffle intermediates as Arrow IPC files: what a map task writes per bucket and its reduce tasks read.

A shuffle's files live only until the next node reads them, so they are written in the form that costs least
to write and to read back: Arrow's own layout, uncompressed, read memory-mapped (no decoding, no copy). On the
sort benchmark's records (10-byte keys, 90-byte payloads of random bytes, 1.07 GB split into 8 buckets) a map
side plus a reduce side's scan took ~4-5 s this way against ~10-14 s for DuckDB's Parquet (snappy); Parquet
uncompressed took ~8 s, and lz4 in either format cost more time than it saved in bytes. The job option
`shuffle_format` (SP_SHUFFLE_FORMAT=parquet) brings Parquet intermediates back.

Crash safety is the task output's own: the files are written in the attempt's staging folder, which is renamed
into place only when the task succeeded. And an IPC file is whole only with its footer: a file cut short fails
to open, and the reader names it.
"""
from __future__ import annotations

import os
from typing import Callable, Dict

import pyarrow as pa
import pyarrow.ipc as ipc

FORMAT = "arrow"  # a Fragment's format for these files
SUFFIX = ".arrow"
# rows a map task splits at once (~3 MB of the sort's records): a map task of the sort benchmark peaked at
# ~310-410 MiB with this, ~445 MiB with 4x as many, ~650 MiB writing Parquet; no slower
BATCH_ROWS = 1 << 15


def open_table(path: str) -> pa.Table:
    """The whole file as a table over a memory map (its buffers are the file's pages: nothing is copied)."""
    with pa.memory_map(path) as source:
        return ipc.open_file(source).read_all()


def file_schema(path: str) -> pa.Schema:
    with pa.memory_map(path) as source:
        return ipc.open_file(source).schema


class BucketFiles:
    """One IPC file per bucket of a map task, `<folder of bucket b>/data_0.arrow`, each opened at its first rows;
    close() gives every bucket that got none an empty file with the schema."""

    def __init__(self, folder_of: Callable[[int], str], schema: pa.Schema) -> None:
        self.folder_of = folder_of
        self.schema = schema
        self.writers: Dict[int, ipc.RecordBatchFileWriter] = {}

    def _writer(self, bucket: int) -> ipc.RecordBatchFileWriter:
        w = self.writers.get(bucket)
        if w is None:
            folder = self.folder_of(bucket)
            os.makedirs(folder, exist_ok=True)
            w = self.writers[bucket] = ipc.new_file(os.path.join(folder, "data_0" + SUFFIX), self.schema)
        return w

    def write(self, bucket: int, data: "pa.RecordBatch | pa.Table") -> None:
        if data.num_rows:
            if data.schema != self.schema:  # same columns and types; the files say every column is nullable
                data = type(data).from_arrays(data.columns, schema=self.schema)
            w = self._writer(bucket)
            if isinstance(data, pa.Table):
                w.write_table(data)
            else:
                w.write_batch(data)

    def write_split(self, batch: "pa.RecordBatch | pa.Table", buckets: pa.Array, nbuckets: int) -> None:
        """The rows of `batch` into their buckets (`buckets`: one number in 0..nbuckets-1 per row), in order.
        Arrow's own kernels (a stable sort of the bucket numbers, then their runs): numpy's would load pandas in
        every worker (pyarrow's to_numpy looks for it), about 0.3 s of CPU each."""
        import pyarrow.compute as pc

        if not batch.num_rows:
            return
        low, high = (v.as_py() for v in pc.min_max(buckets).values())
        if low == high:  # one bucket (a sorted or clustered input): no reordering
            self.write(int(low), batch)
            return
        order = pc.sort_indices(buckets)  # stable: rows keep their order within a bucket
        ordered = batch.take(order)
        runs = pc.run_end_encode(buckets.take(order))
        start = 0
        for k, end in zip(runs.values.to_pylist(), runs.run_ends.to_pylist()):
            self.write(int(k), ordered.slice(start, end - start))
            start = end

    def close(self, nbuckets: int) -> None:
        for b in range(nbuckets):
            self._writer(b)
        for w in self.writers.values():
            w.close()

    def abort(self) -> None:
        """Close what is open after a failure (the attempt's folder is thrown away)."""
        for w in self.writers.values():
            try:
                w.close()
            except (OSError, pa.ArrowException):
                pass
