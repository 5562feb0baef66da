"""`--platform sp_platforms.popen`: a platform written the smallpond way, overriding only start_job; it starts
each executor as a local process, as smallpond's own base Platform did, and records how it was called."""
import json
import os
import subprocess
import sys
from typing import List

from mpipipe.platform import Platform


class PopenPlatform(Platform):
    def start_job(self, num_nodes: int, entrypoint: str, args: List[str], envs: dict = {},
                  extra_opts: dict = {}) -> List[str]:
        pids = []
        for _ in range(num_nodes):
            proc = subprocess.Popen([sys.executable, entrypoint, *args], env={**os.environ, **envs})
            pids.append(str(proc.pid))
        record = os.environ.get("RECORD_START_JOB_TO")
        if record:
            with open(record, "w") as f:
                json.dump({"num_nodes": num_nodes, "entrypoint": entrypoint, "args": args,
                           "envs": sorted(envs), "pids": pids, "extra_opts": extra_opts}, f)
        return pids
