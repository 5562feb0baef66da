"""A data plan whose middle step runs through another launcher than the world's executors."""
import json
import os

import mpipipe
from mpipipe import ComputeNode, Context, LogicalPlan
from mpipipe.launchers import Launcher, run_shard
from mpipipe.module import ShardFailure


class InProcessLauncher(Launcher):
    """Runs each run in the scheduling process itself (stands in for a cluster launcher)."""

    async def run_shards(self, job):
        failures = []
        for shard, path in zip(job.shards, job.paths):
            try:
                run_shard(job.module, shard, path)
            except Exception as e:  # noqa: BLE001
                failures.append(ShardFailure(shard.index, shard.value, f"{type(e).__name__}: {e}"))
        return failures

    def describe(self):
        return "in-process"


def gen(task):
    with open(os.path.join(task.output_dir, "n.txt"), "w") as f:
        f.write(str(task.partition + 1))
    return os.getpid()


def heavy(task):
    if os.environ.get("HEAVY_FAILS") and task.partition == 2:
        raise RuntimeError("heavy step refuses partition 2")
    n = int(open(os.path.join(task.input_paths[0], "n.txt")).read())
    with open(os.path.join(task.output_dir, "n.txt"), "w") as f:
        f.write(str(n * 100))
    return os.getpid()


def total(task):
    return sum(int(open(os.path.join(p, "n.txt")).read()) for p in task.input_paths)


if __name__ == "__main__":
    driver = mpipipe.Driver()
    driver.add_argument("--where", default="heavy")
    driver.add_argument("--on-slurm", action="store_true", help="run the mapped step as a SLURM array")
    args = driver.get_arguments()
    if args["on_slurm"]:
        from mpipipe.launchers import SlurmLauncher, SlurmOptions

        step = SlurmLauncher(options=SlurmOptions(time="5", signal=0), poll_interval=0.5)
    else:
        step = InProcessLauncher()
    ctx = Context()
    g = ComputeNode(ctx, gen, npartitions=4)
    h = ComputeNode(ctx, heavy, inputs=g, npartitions=4, pointwise=True)
    t = ComputeNode(ctx, total, inputs=h)
    result = driver.run(LogicalPlan(ctx, t), launchers={"": None, args["where"]: step})
    print(json.dumps({"total": result.values()[0], "gen": result.values("gen"), "heavy": result.values("heavy"),
                      "rank0": os.getpid(), "stats": {k: result.stats[k] for k in ("ran", "cached")}}))
