"""Nodes that copy their first input unchanged: a whole table at a time (CopyArrowTable) or batch by batch
(StreamCopy). smallpond's `contrib.copy_table`; useful to measure reading and writing, and as a template."""
from __future__ import annotations

import logging
from typing import Any, Iterable, List

from mpipipe.logical.node import ArrowComputeNode, ArrowStreamNode

log = logging.getLogger("mpipipe.contrib")


class CopyArrowTable(ArrowComputeNode):
    """Each partition's first input table, written as it is."""

    def process(self, runtime_ctx: Any, input_tables: List[Any]) -> Any:
        log.info("copying table: %d rows ...", input_tables[0].num_rows)
        return input_tables[0]


class StreamCopy(ArrowStreamNode):
    """Each partition's first input, one record batch at a time."""

    def process(self, runtime_ctx: Any, input_readers: List[Any]) -> Iterable[Any]:
        import pyarrow as pa

        for batch in input_readers[0]:
            log.info("copying batch: %d rows ...", batch.num_rows)
            yield pa.Table.from_batches([batch])
