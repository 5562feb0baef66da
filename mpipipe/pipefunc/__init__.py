"""pipefunc pipelines on mpipipe: executors for `pipeline.map(..., executor=...)` that honour each function's
resources.

    from pipefunc import Pipeline, pipefunc
    from mpipipe.pipefunc import SlurmExecutor      # was: from adaptive_scheduler import SlurmExecutor

`MpiExecutor` runs on this job's world (local processes, an MPI world, `--platform
mpi`), placing each call where its cores, memory and GPUs are free;
`SlurmExecutor` submits SLURM job arrays. Both take adaptive_scheduler's
SlurmExecutor arguments. pipefunc is an optional dependency (`pip install
mpipipe[pipefunc]`): `import mpipipe` never imports it.
"""
from __future__ import annotations

from mpipipe.pipefunc.executors import MpiExecutor, PipefuncExecutor, SlurmExecutor

__all__ = ["MpiExecutor", "PipefuncExecutor", "SlurmExecutor"]
