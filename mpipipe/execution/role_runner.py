"""`python -m mpipipe.execution.role_runner FOLDER`: rank 0 of a job that smallpond's `Scheduler(exec_plan)
.run()` starts (see mpipipe.execution.roles).

It runs the plan of FOLDER/spec.pickle with mpipipe.execution.manager.JobManager on the meeting platform,
whose executors are processes someone else starts (smallpond's `Executor.create(...).run()`): start_job
leaves the command that joins this rank 0 in FOLDER, where they wait for it. The ExecutionPlan of the run
goes to FOLDER/result.pickle. A runtime context with no executors runs the plan on the local platform.
"""
from __future__ import annotations

import json
import os
import pickle
import sys
from typing import Any, Dict, List, Optional

from mpipipe.execution.manager import TASK_SETTINGS, JobManager
from mpipipe.execution.roles import JOIN_FILE, RESULT_FILE, SPEC_FILE
from mpipipe.ownership import check_trusted_file, write_private_file
from mpipipe.pickling import dumps
from mpipipe.platform.base import Platform

FOLDER_ENV = "MPIPIPE_ROLES_FOLDER"  # the meeting folder, for the platform (made by the registry, by name)


class MeetingPlatform(Platform):
    """Executors started by someone else: the command that joins rank 0 is left in the meeting folder."""

    description = "executors started by smallpond-style Executor processes, which find rank 0 in a folder"

    # smallpond's start_job, not Platform's: Platform.__init_subclass__ sees the signature and gives the class
    # the hooks that call it this way, so the override is meant
    def start_job(self, num_nodes: int, entrypoint: str, args: List[str],  # type: ignore[override]
                  envs: Dict[str, str], extra_opts: Optional[Dict[str, Any]] = None) -> List[str]:
        how = {"num_nodes": num_nodes, "entrypoint": entrypoint, "args": list(args), "envs": dict(envs)}
        write_private_file(os.path.join(os.environ[FOLDER_ENV], JOIN_FILE), json.dumps(how).encode())
        return []


def run(folder: str) -> Any:
    """Run the plan of `folder`'s spec; returns its ExecutionPlan."""
    spec_path = os.path.join(folder, SPEC_FILE)
    check_trusted_file(spec_path, "the plan of a smallpond-style scheduler")
    with open(spec_path, "rb") as f:
        spec = pickle.load(f)
    rc = spec["runtime_ctx"]
    settings = {k: rc.settings[k] for k in TASK_SETTINGS if k in rc.settings}
    settings["nonzero_exitcode_as_oom"] = bool(spec["nonzero_exitcode_as_oom"]
                                               or settings.get("nonzero_exitcode_as_oom"))
    executors = int(rc.num_executors or 0)
    os.environ[FOLDER_ENV] = folder
    platform = "mpipipe.execution.role_runner:MeetingPlatform" \
        if executors > 0 else "local"
    manager = JobManager(data_root=rc.data_root, platform=platform)
    return manager.run(spec["plan"], job_id=str(rc.job_id), num_executors=max(1, executors),
                       max_fail_count=spec["max_fail_count"], output_path=rc.final_output_path, **settings)


def main(argv: Optional[List[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1 or not os.path.isdir(args[0]):
        print("usage: python -m mpipipe.execution.role_runner FOLDER (a smallpond-style scheduler's meeting folder)",
              file=sys.stderr)
        return 2
    exec_plan = run(args[0])
    write_private_file(os.path.join(args[0], RESULT_FILE), dumps(exec_plan))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
