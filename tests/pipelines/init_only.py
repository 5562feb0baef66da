"""A script that makes no Driver: mpipipe.init() and the DataFrame API only, with a flag of its own."""
import argparse
import json
import sys

import mpipipe


def main() -> None:
    own = argparse.ArgumentParser()
    own.add_argument("--rows", type=int, default=10)
    args, _ = own.parse_known_args()  # mpipipe's flags are mpipipe's: the script ignores them
    sp = mpipipe.init(num_executors=1)
    df = sp.from_items([{"x": i} for i in range(args.rows)]).repartition(3)
    total = sum(r["x"] for r in df.take_all())
    cfg = sp.config
    json.dump({"total": total, "platform": cfg.platform, "num_executors": cfg.num_executors,
               "job_id": cfg.job_id, "max_retries": cfg.max_retries}, sys.stdout)


if __name__ == "__main__":
    main()
