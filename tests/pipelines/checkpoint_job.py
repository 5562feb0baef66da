"""A module that counts to --steps, one step per --sleep seconds, saving a checkpoint after each step.

Each run appends a JSON line (the step it starts from, its pid, SLURM job id and restart count) to
<trace>/<index>.log when it starts, so a test can see whether a restarted run continued from its checkpoint;
the script prints one JSON line with the results at the end. --on-slurm runs the module as a SLURM array
(the job's SLURM options: --slurm-time, --slurm-signal, SP_SLURM_*), else on the job's world.
"""
import asyncio
import json
import os
import time

import mpipipe


class Count(mpipipe.Module):
    transient = ("trace", "sleep")

    def __init__(self, runs, steps, trace, sleep):
        super().__init__()
        self.runs = runs
        self.steps = steps
        self.trace = trace
        self.sleep = sleep
        self.done = 0  # progress: the steps finished, kept by checkpoint()

    def array(self):
        return list(range(self.runs))

    def checkpoint(self, iteration_value=None, iteration_index=0):
        return self  # the module as it is now, its progress included

    def run(self, iteration_value=None, iteration_index=0):
        with open(os.path.join(self.trace, f"{iteration_index}.log"), "a") as f:
            f.write(json.dumps({"start": self.done, "pid": os.getpid(), "job": os.environ.get("SLURM_JOB_ID"),
                                "restart": int(os.environ.get("SLURM_RESTART_COUNT") or 0)}) + "\n")
        while self.done < self.steps:
            time.sleep(self.sleep)
            self.done += 1
            self.save_checkpoint()
        return {"index": iteration_index, "steps": self.done}


async def main(args):
    os.makedirs(args["trace"], exist_ok=True)
    launcher = mpipipe.SlurmLauncher(poll_interval=0.5) if args["on_slurm"] else mpipipe.WorldLauncher()
    results = await launcher.schedule(Count(args["runs"], args["steps"], args["trace"], args["sleep"]))
    print(json.dumps({"results": results}))


if __name__ == "__main__":
    driver = mpipipe.Driver()
    driver.add_argument("--runs", type=int, default=2)
    driver.add_argument("--steps", type=int, default=20)
    driver.add_argument("--sleep", type=float, default=0.2)
    driver.add_argument("--trace", required=True)
    driver.add_argument("--on-slurm", action="store_true")
    asyncio.run(main(driver.get_arguments()))
