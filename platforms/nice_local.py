"""Example of your own platform: local executors that run at a lower CPU priority.

Use it with any mpipipe script:

    python examples/quickstart.py --platform platforms.nice_local
    SP_PLATFORM=platforms.nice_local:NiceLocalPlatform python examples/quickstart.py
    mpipipe.init(platform="platforms.nice_local")     # in code

The module defines exactly one Platform subclass of its own, so the bare module
path is enough; LocalPlatform, imported here as its base, never counts.
"""
import os
from typing import List

from mpipipe.platform.local import LocalPlatform


class NiceLocalPlatform(LocalPlatform):
    """LocalPlatform whose executors (and so their workers) run under `nice -n NICENESS`."""

    name = "nice-local"
    description = "local executors at a lower CPU priority (nice)"

    def executor_command(self) -> List[str]:
        niceness = dict(self.config.platform_options).get("niceness") or os.environ.get("NICE_LOCAL_NICENESS", "10")
        return ["nice", "-n", str(int(niceness))]
