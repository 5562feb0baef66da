"""smallpond's DataFrame API as its users write it (mpipipe.init(), repartition by a SQL expression,
map_batches, errors at the action, Session.shutdown); prints one JSON line of results on rank 0."""
import json
import sys

import pyarrow as pa

import mpipipe
from mpipipe.dataframe import Session


def main() -> None:
    sp: Session = mpipipe.init()
    out = {}
    df = sp.from_items(list(range(100))).repartition(10, by="item % 10")
    df = df.map("min(item % 10) as lo, max(item % 10) as hi, count(*) as n")
    out["by_expression"] = df.take_all()
    files = sp.read_parquet(sys.argv[1])
    sizes = files.map_batches(lambda t: pa.table({"rows": [t.num_rows]}), batch_size=7)
    out["batch_rows"] = [r["rows"] for r in sizes.take_all()]
    bad = sp.partial_sql("select a,, from {0}", sp.from_items([1, 2]))
    try:
        bad.to_arrow()
    except mpipipe.MpipipeError as e:
        out["bad_query"] = str(e)
    out_of_range = sp.from_items(list(range(20))).repartition(4, by="item % 5")
    try:
        out_of_range.to_arrow()
    except mpipipe.MpipipeError as e:
        out["out_of_range"] = str(e)
    out["output_root"] = sp.runtime_ctx.output_root
    out["after_errors"] = sp.from_items([1, 2, 3]).count()
    sp.shutdown()
    if "--after-shutdown" in sys.argv:  # local executors start again; an MPI world's ranks have left for good
        out["after_shutdown"] = sp.from_items([4, 5]).count()
    print("RESULT " + json.dumps(out))


if __name__ == "__main__":
    main()
