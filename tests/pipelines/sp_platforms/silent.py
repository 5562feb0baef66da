"""A smallpond-style platform whose start_job starts nothing: the job must fail with a one-line error."""
from typing import List

from mpipipe.platform import Platform


class SilentPlatform(Platform):
    def start_job(self, num_nodes: int, entrypoint: str, args: List[str], envs: dict = {},
                  extra_opts: dict = {}) -> List[str]:
        return []
