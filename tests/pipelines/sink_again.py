"""A small plan that ends in a link sink; run twice to see reuse and re-creation of the sink folder."""
from mpipipe import Driver
from mpipipe.logical import (ArrowTableDataSet, Context, DataSinkNode, DataSourceNode,
                             LogicalPlan, SqlEngineNode)
import pyarrow as pa

driver = Driver()
driver.add_argument("--out", required=True)
args = driver.get_arguments()
ctx = Context()
src = DataSourceNode(ctx, ArrowTableDataSet(pa.table({"x": list(range(100))})))
sq = SqlEngineNode(ctx, src, "SELECT x, x * x AS y FROM {0}")
DataSinkNode(ctx, sq, args["out"], type="link")
driver.run(LogicalPlan(ctx, ctx.nodes[-1]))
