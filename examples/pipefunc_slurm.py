"""pipefunc's SLURM guide on mpipipe: the same pipelines, with the adaptive_scheduler import replaced.

    python examples/pipefunc_slurm.py                       # this job's world: local worker processes
    python examples/pipefunc_slurm.py --platform mpi        # the same under mpiexec (started for you)
    mpiexec -n 3 python examples/pipefunc_slurm.py          # inside an MPI world
    python examples/pipefunc_slurm.py --slurm               # SLURM job arrays (run it where sbatch works)

Every function states its resources as pipefunc users do (`resources=`,
`resources_scope=`); mpipipe places each call on an executor with that many
free cores (or submits it with those sbatch options) and sets OMP_NUM_THREADS
to its cores. The guide asks for up to 8 cores per call, so by default this
script tells mpipipe that each of its 2 executor ranks has 8 cores (`--hosts`;
the calls then share this machine's real cores). Results are printed at the end.
"""
import argparse
import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from pipefunc import Pipeline, pipefunc
from pipefunc.helpers import FileArray, FileValue

import mpipipe
from mpipipe.pipefunc import MpiExecutor

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--slurm", action="store_true", help="submit SLURM job arrays instead of using this job's world")
parser.add_argument("--out", default="pipefunc-example", help="folder for pipefunc's run folders and inputs")
args, _ = parser.parse_known_args()  # mpipipe reads its own flags (--platform, --data-root, ...)
if args.slurm:
    from mpipipe.pipefunc import SlurmExecutor  # was: from adaptive_scheduler import SlurmExecutor
else:
    SlurmExecutor = MpiExecutor  # the same arguments, run on this job's world

# command line and SP_* still win over these: two executor ranks that claim 8 cores and 16 GiB each
mpipipe.init(num_executors=2, hosts="1-2=cpu(cores=8, mem=16GiB)")
OUT = Path(args.out).absolute()
OUT.mkdir(parents=True, exist_ok=True)

# Build the default executor first: under mpiexec, ranks other than 0 serve from here on.
default_executor = SlurmExecutor(cores_per_node=2)


# --- Using SlurmExecutor: static, then dynamic per-element resources ----------------------------------------------

@pipefunc(output_name="y", mapspec="x[i] -> y[i]", resources={"cpus": 2})
def double_it(x: int) -> int:
    return 2 * x


@pipefunc(
    output_name="z",
    mapspec="y[i] -> z[i]",
    # Dynamically set resources based on the input "y": one call per element, each with its own cores.
    resources=lambda kwargs: {"cpus": int(kwargs["y"] % 3) + 1},
    resources_scope="element",
)
def add_one(y: int) -> int:
    return y + 1


@pipefunc(output_name="z_sum")
def sum_it(z):
    return sum(z)


async def using() -> int:
    pipeline = Pipeline([double_it, add_one, sum_it])
    runner = pipeline.map_async({"x": range(10)}, run_folder=OUT / "my_run_folder", executor=default_executor,
                                show_progress=True)
    result = await runner.task
    return int(result["z_sum"].output)


# --- Splitting a map into several jobs: size_per_learner ------------------------------------------------------------

@pipefunc(output_name="items", mapspec="x[i] -> items[i]", resources={"cpus": 8}, resources_scope="map")
def process_item(x):
    return x + 1


def split() -> int:
    # two tasks of 50 elements, each holding 8 cores and running its elements on a pool of 8 processes
    pipeline = Pipeline([process_item])
    result = pipeline.map({"x": range(100)}, run_folder=OUT / "split", executor=SlurmExecutor(size_per_learner=50))
    return int(result["items"].output.sum())


# --- Functions managing their own parallelization ------------------------------------------------------------------

@pipefunc(
    output_name="data_processed",
    # pipefunc takes parallelization_mode inside resources (the guide's @pipefunc(parallelization_mode=...)
    # is an error in pipefunc itself)
    resources={"cpus": 2, "memory": "4GB", "parallelization_mode": "internal"},
    resources_variable="resources",
)
def process_data(data, resources):
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(resources.cpus) as ex:  # the task holds resources.cpus cores
        return sum(ex.map(abs, data))


def internal() -> int:
    result = Pipeline([process_data]).map({"data": [1, -2, 3]}, executor=default_executor)
    return int(result["data_processed"].output)


# --- A dictionary of executors ------------------------------------------------------------------------------------

@pipefunc(output_name="a", mapspec="x[i] -> a[i]", resources={"cpus": 2})
def slow_function(x: int) -> int:
    import time

    time.sleep(0.5)
    return x * 10


@pipefunc(output_name="b", mapspec="a[i] -> b[i]")
def fast_function(a: int) -> int:
    return a + 5


async def executors() -> list:
    pipeline = Pipeline([slow_function, fast_function])
    executors = {"a": SlurmExecutor(), "b": ThreadPoolExecutor(), "": MpiExecutor()}
    runner = pipeline.map_async({"x": range(5)}, run_folder=OUT / "executor_example", executor=executors)
    result = await runner.task
    return result["b"].output.tolist()


# --- Large inputs: FileArray and FileValue ---------------------------------------------------------------------------

@pipefunc(output_name="doubled", mapspec="v[i] -> doubled[i]", resources={"cpus": 1}, resources_scope="element")
def process_element(v: int) -> int:
    return int(v) * 2


@pipefunc(output_name="report", resources={"cpus": 1})
def use_config(config: dict, task_id: int) -> str:
    return f"task {task_id}: {len(config['data'])} items"


async def large_inputs() -> tuple:
    values = FileArray.from_data(np.arange(100), OUT / "my_large_array_data")  # one file per element
    doubled = Pipeline([process_element]).map_async({"v": values}, run_folder=OUT / "file_array",
                                                     executor=default_executor)
    config = FileValue.from_data({"data": list(range(100_000))}, OUT / "my_large_config.pkl")
    pipeline = Pipeline([use_config])
    pipeline.add_mapspec_axis("task_id", axis="i")
    reports = pipeline.map_async({"config": config, "task_id": range(3)}, run_folder=OUT / "file_value",
                                 executor=default_executor)
    return int((await doubled.task)["doubled"].output.sum()), (await reports.task)["report"].output.tolist()


if __name__ == "__main__":
    print(f"z_sum = {asyncio.run(using())}", flush=True)
    print(f"sum of 100 processed items = {split()}", flush=True)
    print(f"internal parallelism: {internal()}", flush=True)
    print(f"executor dict: b = {asyncio.run(executors())}", flush=True)
    total, reports = asyncio.run(large_inputs())
    print(f"FileArray: sum = {total}; FileValue: {reports}", flush=True)
