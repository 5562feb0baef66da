"""Tasks that state their needs: GPU tasks, CPU tasks, a dynamic requirement, a time limit, an impossible one."""
import os
import time

from mpipipe import ComputeNode, Context, Driver, LogicalPlan, Resources


def where(task):
    time.sleep(0.05)
    return {"rank": task.rank, "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"), "pid": os.getpid(),
            "threads": os.environ.get("OMP_NUM_THREADS"), "resources": task.resources}


def slow_first(task):
    if task.attempt == 0:
        time.sleep(30)
    return {"rank": task.rank, "attempt": task.attempt}


def internal(task, res):
    return {"rank": task.rank, "given": res}


def write_marker(task):
    with open(os.path.join(task.output_dir, "marker"), "w") as f:
        f.write(str(task.partition))
    return where(task)


def by_inputs(inputs):
    """Dynamic: decided from the task's inputs (one list of upstream output paths per input node)."""
    return "cuda(mem=1GiB)" if len(inputs[0]) == 6 else "cuda(mem=80GiB)"


driver = Driver()
driver.add_argument("--impossible", action="store_true")
driver.add_argument("--time-limit", action="store_true")
args = driver.get_arguments()
ctx = Context()
gpu = ComputeNode(ctx, where, npartitions=8, name="gpu", resources="cuda(mem=8GiB)")
cpu = ComputeNode(ctx, where, npartitions=12, name="cpu", resources=Resources(cpus=1, memory=1 << 20))
plain = ComputeNode(ctx, write_marker, npartitions=6, name="plain")
two = ComputeNode(ctx, where, npartitions=2, name="two_gpus", resources={"gpus": 2, "gpu_kind": "cuda", "cpus": 2})
inner = ComputeNode(ctx, internal, npartitions=2, name="internal", resources="cpu(cores=2)",
                    parallelization_mode="internal", resources_variable="res")
dyn = ComputeNode(ctx, where, inputs=[plain], npartitions=2, name="dynamic", resources=by_inputs)
chunked = ComputeNode(ctx, where, npartitions=7, name="chunked", resources="cpu(cores=1)", size_per_task=3)
mapped = ComputeNode(ctx, where, npartitions=4, name="mapped", resources="cpu(cores=2)", scope="map")
roots = [gpu, cpu, plain, two, inner, dyn, chunked, mapped]
if args["impossible"]:
    roots.append(ComputeNode(ctx, where, npartitions=1, name="huge", resources="cuda(mem=80GiB) * 2"))
if args["time_limit"]:
    roots = [ComputeNode(ctx, slow_first, npartitions=1, name="slow", resources={"time": 1})]
result = driver.run(LogicalPlan(ctx, roots))
if result is not None:
    import json

    out = {n: result.values(n) for n in result.nodes}
    print(json.dumps(out))
