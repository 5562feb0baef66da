"""A plan written as a smallpond script would be: smallpond's module paths, node keywords and process
functions, with only the package name changed. Prints what it checks as one JSON line (rank 0)."""
import functools
import json
import os
from typing import List

import pyarrow as pa

from mpipipe.execution.driver import Driver
from mpipipe.execution.task import PythonScriptTask, RuntimeContext, StreamOutput
from mpipipe.logical.dataset import DataSet, ParquetDataSet
from mpipipe.logical.node import (ArrowBatchNode, ArrowComputeNode, ArrowStreamNode, Context, DataSetPartitionNode,
                                  DataSinkNode, DataSourceNode, HashPartitionNode, LogicalPlan, PandasBatchNode,
                                  ProjectionNode, PythonScriptNode, RootNode, SqlEngineNode)


def sample_urls(runtime_ctx: RuntimeContext, input_tables: List[pa.Table], k: int = 3) -> pa.Table:
    task = runtime_ctx.task
    urls = input_tables[0].column("url").to_pylist()
    picked = task.python_random_gen.choices(urls, k=k) if urls else []
    return pa.table({"url": pa.array(picked, pa.string()),
                     "cpu_limit": pa.array([task.cpu_limit] * len(picked), pa.int64()),
                     "partition": pa.array([runtime_ctx.partition] * len(picked), pa.int64())})


def copy_stream(runtime_ctx: RuntimeContext, readers: List[pa.RecordBatchReader]):
    for i, batch in enumerate(readers[0]):
        yield StreamOutput(pa.Table.from_batches([batch]), batch_indices=[i], force_checkpoint=True)


def merge_batches(runtime_ctx: RuntimeContext, tables: List[pa.Table]) -> pa.Table:
    return pa.concat_tables(tables)


def merge_frames(runtime_ctx: RuntimeContext, frames):
    import pandas as pd

    return pd.concat(frames)


class CountTask(PythonScriptTask):
    def process(self, runtime_ctx: RuntimeContext, input_datasets: List[DataSet], output_path: str) -> bool:
        with open(os.path.join(output_path, "count.txt"), "w") as f:
            f.write(f"{input_datasets[0].num_files} {input_datasets[0].num_rows} {self.cpu_limit}\n")
        return True


class CountNode(PythonScriptNode):
    def spawn(self, *args, **kwargs) -> CountTask:
        return CountTask(*args, **kwargs)


def build(input_paths: List[str], npartitions: int, sink: str) -> LogicalPlan:
    ctx = Context()
    dataset = ParquetDataSet(input_paths)
    source = DataSourceNode(ctx, dataset)
    parts = DataSetPartitionNode(ctx, (source,), npartitions, partition_by_rows=True, cpu_limit=1)
    hosts = ProjectionNode(ctx, parts, ["url", "string_split(url, '/')[3] AS host"], ["file_row_number"])
    by_host = HashPartitionNode(ctx, (hosts,), npartitions, ["host"], "host_partition", engine_type="arrow",
                                output_name="by_host", cpu_limit=1, memory_limit=512 << 20)
    counts = SqlEngineNode(ctx, (by_host,), "select host, count(*) as cnt, {__data_partition__} as part from {0} "
                           "group by host", output_name="counts", materialize_in_memory=True,
                           parquet_row_group_size=1000, cpu_limit=1)
    samples = ArrowComputeNode(ctx, (parts,), process_func=functools.partial(sample_urls, k=2),
                               output_name="samples", cpu_limit=1, gpu_limit=0, use_duckdb_reader=True)
    streamed = ArrowStreamNode(ctx, (parts,), process_func=copy_stream, streaming_batch_size=7,
                               secs_checkpoint_interval=1, output_name="streamed")
    again = DataSetPartitionNode(ctx, (source,), npartitions)  # by files: its partitions end at other rows
    batched = ArrowBatchNode(ctx, (parts, again), process_func=merge_batches, streaming_batch_size=5,
                             output_name="batched")
    framed = PandasBatchNode(ctx, (parts,), process_func=merge_frames, streaming_batch_size=5, output_name="framed")
    counted = CountNode(ctx, (parts,), output_name="counted")
    manifest = DataSinkNode(ctx, (counts,), output_path=sink, manifest_only=True)
    return LogicalPlan(ctx, RootNode(ctx, (manifest, samples, streamed, batched, framed, counted)))


def main() -> None:
    driver = Driver()
    driver.add_argument("-i", "--input_paths", nargs="+")
    driver.add_argument("-n", "--npartitions", type=int, default=3)
    driver.add_argument("--sink")
    args = driver.get_arguments()
    plan = build(args["input_paths"], args["npartitions"], args["sink"])
    exec_plan = driver.run(plan)
    if exec_plan is None:
        return
    out = {"successful": exec_plan.successful}
    for name in ("counts", "samples", "streamed", "batched", "framed", "by_host"):
        out[name] = exec_plan.get_output(name).to_arrow_table().to_pylist()
    counted = exec_plan.get_output("counted")
    out["counted_files"] = counted.num_files
    folder = exec_plan.ctx.output_root
    out["count_txt"] = sorted(open(os.path.join(root, f)).read().strip()
                              for root, _, files in os.walk(os.path.join(folder, "counted")) for f in files
                              if f == "count.txt")
    with open(os.path.join(args["sink"], "manifest.json")) as f:
        out["manifest"] = len(json.load(f)["fragments"])
    print("RESULT " + json.dumps(out, default=str))


if __name__ == "__main__":
    main()
