"""An ArrowStreamNode that fails part-way on its first attempt and resumes from its checkpoint on the next.

--input PATH       Parquet input (split by row groups into 2 partitions)
--side-dir DIR     the stream function appends what each attempt processed to
                   DIR/p<partition>.a<attempt>.jsonl (one line per input batch: the values of its first column)
--fail-after K     partition 0 raises on attempt 0 after pulling its (K+1)-th batch
--out FILE         rank 0 writes {"outputs": [...], "job_dir": ..., "stats": ...} here
"""
import json
import os

from mpipipe import Driver
from mpipipe.logical import ArrowStreamNode, Context, DataSetPartitionNode, DataSourceNode, LogicalPlan, ParquetDataSet


def make_stream(side_dir, fail_after):
    def stream(runtime_ctx, readers):
        path = os.path.join(side_dir, f"p{runtime_ctx.partition}.a{runtime_ctx.attempt}.jsonl")
        for i, batch in enumerate(readers[0]):
            with open(path, "a") as f:
                f.write(json.dumps({"ids": batch.column(0).to_pylist()}) + "\n")
            if runtime_ctx.partition == 0 and runtime_ctx.attempt == 0 and i == fail_after:
                raise RuntimeError(f"failing on purpose after {i} checkpointed batches")
            yield batch

    return stream


def main():
    driver = Driver()
    driver.add_argument("--input", required=True)
    driver.add_argument("--side-dir", required=True)
    driver.add_argument("--fail-after", type=int, default=4)
    driver.add_argument("--out", required=True)
    args = driver.get_arguments()
    ctx = Context()
    src = DataSourceNode(ctx, ParquetDataSet(args["input"]))
    split = DataSetPartitionNode(ctx, src, 2, partition_by="row_groups")
    stream = ArrowStreamNode(ctx, split, make_stream(os.path.abspath(args["side_dir"]), args["fail_after"]),
                             name="stream", batch_size=100, checkpoint_batches=1)
    res = driver.run(LogicalPlan(ctx, stream))
    if res is None:
        return
    with open(args["out"], "w") as f:
        json.dump({"outputs": res.outputs("stream"), "split": res.outputs(split.name), "job_dir": res.job_dir,
                   "stats": res.stats}, f, default=str)


if __name__ == "__main__":
    main()
