"""A smallpond-style pipeline: smallpond's module paths, datasets, nodes and keywords, on mpipipe.

    python examples/smallpond_urls.py                       # local processes, generated input
    mpiexec -n 3 python examples/smallpond_urls.py          # inside an MPI world
    python examples/smallpond_urls.py -i 'urls/*.tsv' -n 8  # your own files: url<TAB>base64 payload

It reads tab-separated files without a header (CsvDataSet with a schema, as in
smallpond), splits them, groups the urls by host with a hash partition, sorts
each host group in SQL, counts the urls of each host in an Arrow process
function and writes the counts with a DataSinkNode. A script written for
smallpond ports by changing `smallpond` to `mpipipe` in its imports; see the
README's "Coming from smallpond" for what differs.
"""
import base64
import os
from collections import OrderedDict
from typing import List

import pyarrow as pa

import common
from mpipipe.execution.driver import Driver
from mpipipe.execution.task import RuntimeContext
from mpipipe.logical.dataset import CsvDataSet
from mpipipe.logical.node import (ArrowComputeNode, Context, DataSetPartitionNode, DataSinkNode, DataSourceNode,
                                  HashPartitionNode, LogicalPlan, SqlEngineNode)


class CountByHost(ArrowComputeNode):
    """smallpond's way of giving a node its body: override process()."""

    def process(self, runtime_ctx: RuntimeContext, input_tables: List[pa.Table]) -> pa.Table:
        table = input_tables[0]
        counts = table.group_by("host").aggregate([("url", "count")]).rename_columns(["host", "urls"])
        return counts.append_column("partition", pa.array([runtime_ctx.partition] * counts.num_rows, pa.int64()))


def write_urls(folder: str, files: int = 4, lines: int = 250) -> None:
    """Tab-separated url and base64 payload lines, no header (the shape of smallpond's mock urls)."""
    for f in range(files):
        with open(os.path.join(folder, f"urls{f}.tsv"), "w") as out:
            for i in range(lines):
                host = f"host{(f * lines + i) % 17}.example"
                payload = base64.b64encode(f"page {f}-{i}".encode()).decode()
                out.write(f"{host}/{f}/{i}.html\t{payload}\n")


def urls_pipeline(input_paths: List[str], npartitions: int, output_path: str) -> LogicalPlan:
    ctx = Context()
    dataset = CsvDataSet(input_paths, schema=OrderedDict([("urlstr", "varchar"), ("valstr", "varchar")]),
                         delim=r"\t")
    source = DataSourceNode(ctx, dataset)
    parts = DataSetPartitionNode(ctx, (source,), npartitions=npartitions)
    urls = SqlEngineNode(ctx, (parts,), r"select split_part(urlstr, '/', 1) as host, urlstr as url, "
                         r"from_base64(valstr) as payload from {0}", output_name="urls", cpu_limit=1)
    by_host = HashPartitionNode(ctx, (urls,), npartitions=npartitions, hash_columns=["host"],
                                engine_type="duckdb", output_name="by_host")
    ordered = SqlEngineNode(ctx, (by_host,), r"select * from {0} order by host, url", output_name="ordered")
    counts = CountByHost(ctx, (ordered,), output_name="counts")
    return LogicalPlan(ctx, DataSinkNode(ctx, (counts,), output_path=output_path))


def main() -> None:
    driver = Driver()
    driver.add_argument("-i", "--input_paths", nargs="+", default=None)
    driver.add_argument("-n", "--npartitions", type=int, default=4)
    driver.add_argument("-o", "--output_path", default=None)
    args = driver.get_arguments()
    root = common.data_root(driver)
    paths = args["input_paths"]
    if not paths:
        folder = os.path.join(root, "example-data", "smallpond-urls")
        common.generate_once(folder, write_urls)
        paths = [os.path.join(folder, "*.tsv")]
    output = args["output_path"] or os.path.join(root, "example-output", "smallpond-urls")
    exec_plan = driver.run(urls_pipeline(paths, args["npartitions"], output))
    if exec_plan is not None and exec_plan.successful:
        table = exec_plan.get_output("counts").to_arrow_table()
        print(f"{table.num_rows} hosts, {sum(table.column('urls').to_pylist())} urls; counts in {output}")


if __name__ == "__main__":
    main()
