"""A pipeline whose every function runs on SLURM through SlurmExecutor: a map of 3 elements (one array element
each, 2 cores asked) and a single call that sums it. Prints one JSON line: the outputs and the SLURM jobs."""
import json
import os

from pipefunc import Pipeline, pipefunc

from mpipipe.pipefunc import SlurmExecutor


@pipefunc(output_name="doubled", mapspec="x[i] -> doubled[i]", resources={"cpus": 2}, resources_scope="element")
def double(x):
    print(f"doubling {x}", flush=True)
    return {"value": 2 * x, "job": os.environ.get("SLURM_JOB_ID"), "cpus": os.environ.get("SLURM_CPUS_PER_TASK")}


@pipefunc(output_name="total")
def total(doubled):
    return {"value": sum(d["value"] for d in doubled), "job": os.environ.get("SLURM_JOB_ID")}


if __name__ == "__main__":
    executor = SlurmExecutor(name="pfj", job_manager_interval=0.5)
    result = Pipeline([double, total]).map({"x": [1, 2, 3]}, executor=executor, parallel=True)
    print(json.dumps({"doubled": list(result["doubled"].output), "total": result["total"].output}))
