"""The MPI platform: rank 0 schedules, every other rank of MPI_COMM_WORLD executes.

Outside a world, `--platform mpi --num-executors N` runs the same command under
`mpiexec -n N+1`. Inside one (mpiexec, mpirun or srun started us), it joins it.
mpi4py is imported only in connect(), so nothing else needs an MPI library.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
from typing import Dict, List, Tuple

from mpipipe.errors import PlatformError
from mpipipe.platform.base import Platform, World
from mpipipe.platform.local import start_local_executors, stop_local_executors

# set by MPI launchers in every rank's environment (MPICH/hydra, PMI-2 under srun, Open MPI, PMIx)
WORLD_SIZE_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS")
WORLD_MARKERS = WORLD_SIZE_VARS + ("PMI_RANK", "PMIX_RANK", "OMPI_COMM_WORLD_RANK", "MPIPIPE_WORLD_SIZE")


def launcher_world_size() -> Tuple[int, str]:
    """The world size the launcher asked for, and which variable said so (0 if none)."""
    for var in ("MPIPIPE_WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE"):
        value = os.environ.get(var)
        if value and value.isdigit():
            return int(value), var
    return 0, ""


class MpiPlatform(Platform):
    name = "mpi"
    description = "ranks of an MPI world (mpi4py); launched with mpiexec when not already inside one"

    @classmethod
    def available(cls) -> Tuple[bool, str]:
        if importlib.util.find_spec("mpi4py") is None:
            return False, "mpi4py is not installed (pip install 'mpipipe[mpi]')"
        exe = shutil.which(os.environ.get("SP_MPIEXEC", "mpiexec"))
        if exe is None:
            return False, "mpi4py is installed but no mpiexec is on PATH"
        return True, f"mpi4py installed, launcher {exe}"

    @classmethod
    def detect(cls) -> bool:
        return any(v in os.environ for v in WORLD_MARKERS)

    def executors_wanted(self) -> int:
        return self.config.num_executors or max(1, os.cpu_count() or 1)

    def launch_command(self, argv: List[str]) -> List[str]:
        exe = shutil.which(self.config.mpiexec) or self.config.mpiexec
        return [exe, "-n", str(self.executors_wanted() + 1)] + list(argv)

    def launch_env(self) -> Dict[str, str]:
        return {"MPIPIPE_WORLD_SIZE": str(self.executors_wanted() + 1)}

    def connect(self) -> World:
        try:
            from mpipipe.execution.mpi_transport import MpiTransport
        except ImportError as e:
            raise PlatformError(f"the MPI platform needs mpi4py: {e}; install it with pip install 'mpipipe[mpi]'") from None
        except RuntimeError as e:  # mpi4py without a loadable MPI library
            raise PlatformError(f"mpi4py could not load an MPI library ({e}); pip install mpich, or use --platform local") from None
        transport = MpiTransport()
        self._check_size(transport.size)
        if transport.size == 1:
            # a world of one: rank 0 runs the tasks itself, through local executor processes
            world = start_local_executors(self.config.num_executors or 1, [])
            world.handles.append("local")
            return world
        return World(transport.rank, transport.size, transport)

    def _check_size(self, size: int) -> None:
        asked, var = launcher_world_size()
        if asked and asked != size:
            raise PlatformError(
                f"the launcher started a world of {asked} ranks (${var}) but mpi4py sees {size}: the mpiexec on PATH "
                f"({shutil.which('mpiexec')}) does not belong to mpi4py's MPI library; put the virtualenv's bin/ first on PATH"
            )
        wanted = self.config.num_executors
        if wanted and size > 1 and size - 1 != wanted:
            raise PlatformError(
                f"found {size} MPI ranks ({size - 1} executors), but --num-executors asks for {wanted}; "
                f"run with mpiexec -n {wanted + 1}, or drop --num-executors inside an MPI world"
            )

    def disconnect(self, world: World) -> None:
        if "local" in world.handles:
            world.handles.remove("local")
            world.transport.close()
            stop_local_executors(world)
        else:
            world.transport.close()
