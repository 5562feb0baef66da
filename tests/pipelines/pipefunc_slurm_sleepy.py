"""Elements that sleep on SLURM, for Ctrl-C: the driver cancels its arrays as it exits."""
import time

from pipefunc import Pipeline, pipefunc

from mpipipe.pipefunc import SlurmExecutor


@pipefunc(output_name="y", mapspec="x[i] -> y[i]", resources={"cpus": 1}, resources_scope="element")
def sleepy(x):
    time.sleep(120)
    return x


if __name__ == "__main__":
    Pipeline([sleepy]).map({"x": range(2)}, executor=SlurmExecutor(job_manager_interval=0.5))
