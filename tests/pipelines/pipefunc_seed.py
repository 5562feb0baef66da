"""pipefunc's SLURM guide, section by section, with only the adaptive_scheduler import replaced.

`--executor mpi` (default) runs the guide's `SlurmExecutor(...)` calls as
mpipipe.pipefunc.MpiExecutor on this job's world (local, `mpiexec -n 3`,
`--platform mpi`); `--executor slurm` as mpipipe.pipefunc.SlurmExecutor. Sizes
are smaller than the guide's (20 elements, not a million) and `--only` picks
sections. Prints one JSON line: each section's results.
"""
import argparse
import asyncio
import json
import os
import time
from pathlib import Path

import numpy as np
from pipefunc import Pipeline, pipefunc
from pipefunc.helpers import FileArray, FileValue

parser = argparse.ArgumentParser()
parser.add_argument("--executor", choices=["mpi", "slurm"], default="mpi")
parser.add_argument("--only", default="")
args, _ = parser.parse_known_args()
if args.executor == "slurm":
    from mpipipe.pipefunc import SlurmExecutor
else:
    from mpipipe.pipefunc import MpiExecutor as SlurmExecutor

OUT = {}


def section(fn):
    if not args.only or fn.__name__ in args.only.split(","):
        started = time.monotonic()
        OUT[fn.__name__] = fn()
        OUT[fn.__name__ + "_seconds"] = round(time.monotonic() - started, 2)
    return fn


def run(coro):
    return asyncio.run(coro)


# --- tl;dr -------------------------------------------------------------------------------------------------------

@section
def tldr():
    @pipefunc(output_name="y", resources={"cpus": 2})  # SLURM job with 2 CPUs.
    def double_it(x: int) -> int:
        return 2 * x

    pipeline = Pipeline([double_it])

    async def main():
        runner = pipeline.map_async(
            {"x": 1},
            run_folder="my_run_folder",
            executor=SlurmExecutor(),  # Run on SLURM.
        )
        return await runner.task

    result = run(main())
    return int(result["y"].output)


# --- Using SlurmExecutor -------------------------------------------------------------------------------------------

@section
def using():
    @pipefunc(output_name="y", mapspec="x[i] -> y[i]", resources={"cpus": 2})
    def double_it(x: int) -> int:
        return 2 * x

    @pipefunc(
        output_name="z",
        mapspec="y[i] -> z[i]",
        resources=lambda kwargs: {"cpus": int(kwargs["y"] % 3) + 1},
        resources_scope="element",  # One SLURM job per iteration in the mapspec.
    )
    def add_one(y: int) -> int:
        return y + 1

    @pipefunc(output_name="z_sum")
    def sum_it(z):
        return sum(z)

    pipeline = Pipeline([double_it, add_one, sum_it])
    inputs = {"x": range(10)}
    executor = SlurmExecutor(cores_per_node=2)

    async def main():
        runner = pipeline.map_async(
            inputs,
            run_folder="my_run_folder",
            executor=executor,  # This uses SLURM to run the jobs.
            show_progress=True,
        )
        return await runner.task  # Await asynchronous execution.

    result = run(main())
    return {"z": result["z"].output.tolist(), "z_sum": int(result["z_sum"].output)}


# --- static and dynamic resources ----------------------------------------------------------------------------------

class Geometry:
    def __init__(self, x, y):
        self.x, self.y = x, y


class Electrostatics:
    def __init__(self, mesh, materials, voltages):
        self.voltages = voltages


@section
def static_dynamic():
    @pipefunc(output_name="geo", resources={"cpus": 4, "memory": "8GB"})
    def make_geometry(x: float, y: float) -> Geometry:
        # Create and return a geometry object.
        return Geometry(x, y)

    @pipefunc(
        output_name="electrostatics",
        mapspec="V_left[i], V_right[j] -> electrostatics[i, j]",
        # Dynamically set resources based on inputs: e.g., more voltage difference requires more CPUs.
        resources=lambda kw: {"cpus": abs(kw["V_left"] - kw["V_right"]) + 1},
        resources_scope="element",
    )
    def run_electrostatics(mesh, materials, V_left: float, V_right: float):
        # Run the simulation.
        return Electrostatics(mesh, materials, [V_left, V_right])

    @pipefunc(output_name="threads", mapspec="V_left[i], V_right[j] -> threads[i, j]",
              resources=lambda kw: {"cpus": abs(kw["V_left"] - kw["V_right"]) + 1}, resources_scope="element")
    def threads_seen(V_left, V_right):
        return int(os.environ["OMP_NUM_THREADS"])

    pipeline = Pipeline([make_geometry, run_electrostatics, threads_seen])
    result = pipeline.map({"x": 1.0, "y": 2.0, "mesh": "m", "materials": "steel", "V_left": [0, 1, 2],
                           "V_right": [0, 2]}, run_folder="static_dynamic", executor=SlurmExecutor())
    return {"geo": [result["geo"].output.x, result["geo"].output.y],
            "voltages": [[e.voltages for e in row] for row in result["electrostatics"].output.tolist()],
            "threads": result["threads"].output.tolist()}


# --- Splitting a map into multiple jobs ---------------------------------------------------------------------------

@section
def split():
    @pipefunc(
        output_name="y",
        mapspec="x[i] -> y[i]",
        resources={"cpus": 8},
        resources_scope="map",  # Important: this must be "map" (default)
    )
    def process_item(x):
        return x + 1

    @pipefunc(output_name="who", mapspec="x[i] -> who[i]", resources={"cpus": 8}, resources_scope="map")
    def who_ran(x):
        return [os.getpid(), os.getppid(), os.environ.get("OMP_NUM_THREADS")]

    pipeline = Pipeline([process_item, who_ran])

    # By setting size_per_learner=50, adaptive_scheduler will create
    # two jobs for the 100 items in the input.
    executor = SlurmExecutor(size_per_learner=50)

    async def main():
        runner = pipeline.map_async(
            inputs={"x": range(100)},
            run_folder="my_run_folder",
            executor=executor,
        )
        return await runner.task

    result = run(main())
    who = result["who"].output.tolist()
    return {"y": result["y"].output.tolist(), "chunks": len({w[1] for w in who}), "processes": len({w[0] for w in who}),
            "threads": sorted({w[2] for w in who})}


# --- Functions managing their own parallelization -------------------------------------------------------------------

@section
def internal():
    # pipefunc takes parallelization_mode inside resources; the guide's @pipefunc(parallelization_mode=...)
    # is a TypeError in pipefunc itself.
    @pipefunc(
        output_name="data_processed",
        resources={"cpus": 2, "memory": "4GB", "parallelization_mode": "internal"},
        resources_variable="resources",
    )
    def process_data(data, resources):
        print(f"Allocated Resources: {resources}")
        from concurrent.futures import ProcessPoolExecutor
        with ProcessPoolExecutor(resources.cpus) as ex:
            list(ex.map(print, data))
        return [sum(data), resources.cpus, os.environ.get("OMP_NUM_THREADS")]

    pipeline = Pipeline([process_data])
    sequential = pipeline(data=[1, 2, 3])
    mapped = pipeline.map({"data": [1, 2, 3]}, executor=SlurmExecutor(), parallel=True)
    return {"call": sequential[:2], "map": mapped["data_processed"].output}


# --- A dictionary of executors ------------------------------------------------------------------------------------

@section
def executors():
    from concurrent.futures import ThreadPoolExecutor

    @pipefunc(output_name="a", mapspec="x[i] -> a[i]", resources={"cpus": 2})
    def slow_function(x: int) -> int:
        # Simulate a slow, resource-intensive computation.
        import time
        time.sleep(1)
        return x * 10

    @pipefunc(output_name="b", mapspec="a[i] -> b[i]")
    def fast_function(a: int) -> int:
        # Simulate a fast computation that does not require heavy resources.
        return a + 5

    pipeline = Pipeline([slow_function, fast_function])
    inputs = {"x": range(5)}
    executors = {
        "a": SlurmExecutor(),
        "b": ThreadPoolExecutor(),
        "": SlurmExecutor(cores_per_node=1),  # default executor
    }

    async def main():
        runner = pipeline.map_async(inputs, run_folder="executor_example", executor=executors)
        return await runner.task

    result = run(main())
    return {"a": result["a"].output.tolist(), "b": result["b"].output.tolist()}


# --- Large inputs: FileArray and FileValue ---------------------------------------------------------------------------

@section
def file_array():
    large_array_data = np.arange(20)
    shared_input_folder = Path("my_large_array_data").absolute()  # Accessible by Slurm nodes
    shared_input_folder.mkdir(parents=True, exist_ok=True)
    file_array_input = FileArray.from_data(large_array_data, shared_input_folder)

    @pipefunc(output_name="y", mapspec="x[i] -> y[i]", resources={"cpus": 1}, resources_scope="element")
    def process_element(x: int) -> int:
        return x * 2

    pipeline = Pipeline([process_element])
    run_folder = Path("my_run_output_slurm").absolute()  # Also shared

    async def main():
        runner = pipeline.map_async(
            inputs={"x": file_array_input},
            run_folder=run_folder,
            executor=SlurmExecutor(),
        )
        return await runner.task

    return run(main())["y"].output.tolist()


@section
def file_value():
    large_config_object = {"param_a": "value_a", "data": list(range(100_000))}
    shared_file_path = Path("my_large_config.pkl").absolute()  # Accessible by Slurm nodes
    file_ref_input = FileValue.from_data(large_config_object, shared_file_path)

    @pipefunc(output_name="y", resources={"cpus": 1})
    def use_config(config: dict, task_id: int) -> str:
        # config will be the loaded large_config_object
        return f"Task {task_id} processed config with {len(config.get('data', []))} items."

    pipeline = Pipeline([use_config])
    run_folder = Path("my_single_obj_run").absolute()
    pipeline.add_mapspec_axis("task_id", axis="i")  # Make task_id a mapspec input

    async def main():
        runner = pipeline.map_async(
            inputs={"config": file_ref_input, "task_id": range(5)},
            run_folder=run_folder,
            executor=SlurmExecutor(cores_per_node=1),
        )
        return await runner.task

    return run(main())["y"].output.tolist()


print(json.dumps(OUT, default=lambda o: o.item() if hasattr(o, "item") else str(o)))
