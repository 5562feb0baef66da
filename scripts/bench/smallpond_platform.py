"""A smallpond Platform for one host: like smallpond's own base Platform, but each executor gets its own id.

smallpond's base Platform starts `num_executors` processes of
`python smallpond/execution/driver.py ... executor`, all with the default
executor id, the host name. On one host they then share one id (and one work
queue), and the scheduler sees a single executor. This class passes
`--exec_id exec<i>` to each, and turns the environment values into strings
(smallpond 0.15 passes MIMALLOC_PURGE_DELAY as an int, which Popen rejects).
Used through `--platform smallpond_platform` (smallpond imports the module and
takes the Platform subclass in it).
"""
import os
import subprocess

from smallpond.platform import base as _base


class BenchLocalPlatform(_base.Platform):
    def start_job(self, num_nodes, entrypoint, args, envs={}, extra_opts={}):
        env = dict(os.environ)
        env.update({k: "" if v is None else str(v) for k, v in envs.items()})
        pids = []
        for i in range(num_nodes):
            proc = subprocess.Popen(["python", entrypoint, *args, "--exec_id", f"exec{i}"], env=env,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
            pids.append(str(proc.pid))
        return pids
