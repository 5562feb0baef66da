"""A user platform extending the MPI one: it records the launch command it builds."""
import json
import os
from typing import List

from mpipipe.platform.mpi import MpiPlatform


class RecordingMpiPlatform(MpiPlatform):
    name = "recording-mpi"

    def launch_command(self, argv: List[str]) -> List[str]:
        cmd = super().launch_command(argv)
        with open(os.environ["RECORD_LAUNCH_TO"], "w") as f:
            json.dump(cmd, f)
        return cmd
