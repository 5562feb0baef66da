"""A dictionary of executors: SLURM job arrays for `a` and `m`, a ThreadPoolExecutor for `b`, this job's world
for the rest. Prints one JSON line: what each function's tasks saw."""
import asyncio
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from pipefunc import Pipeline, pipefunc
from pipefunc.helpers import FileArray

from mpipipe.pipefunc import MpiExecutor, SlurmExecutor


def seen():
    return {"threads": os.environ.get("OMP_NUM_THREADS"), "slurm_cpus": os.environ.get("SLURM_CPUS_PER_TASK"),
            "job": os.environ.get("SLURM_JOB_ID"), "pid": os.getpid()}


@pipefunc(output_name="a", mapspec="x[i] -> a[i]", resources={"cpus": 2}, resources_scope="element")
def on_slurm(x):
    return dict(seen(), value=int(x) * 10)


@pipefunc(output_name="m", mapspec="x[i] -> m[i]", resources={"cpus": 2, "memory": "1GB"})
def map_on_slurm(x):
    return dict(seen(), value=int(x) + 1, parent=os.getppid())


@pipefunc(output_name="b", mapspec="a[i] -> b[i]")
def in_threads(a):
    return a["value"] + 5


@pipefunc(output_name="c", resources={"cpus": 1})
def on_world(b, m):
    return dict(seen(), total=int(sum(b)) + sum(v["value"] for v in m))


if __name__ == "__main__":
    folder = Path("inputs").absolute()
    folder.mkdir(exist_ok=True)
    xs = FileArray.from_data(np.arange(3), folder)
    executors = {"a": SlurmExecutor(name="pf", job_manager_interval=0.5),
                 "m": SlurmExecutor(name="pf", size_per_learner=2, job_manager_interval=0.5),
                 "b": ThreadPoolExecutor(), "": MpiExecutor()}
    pipeline = Pipeline([on_slurm, map_on_slurm, in_threads, on_world])

    async def main():
        return await pipeline.map_async({"x": xs}, run_folder="run", executor=executors).task

    result = asyncio.run(main())
    print(json.dumps({k: result[k].output.tolist() if hasattr(result[k].output, "tolist") else result[k].output
                      for k in "abcm"}))
