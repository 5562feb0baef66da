"""execute_command: run a command and read what it prints line by line (smallpond's `utility.execute_command`)."""
from __future__ import annotations

import subprocess
from typing import Dict, Iterator, Optional


def execute_command(cmd: str, env: Optional[Dict[str, str]] = None, shell: bool = False) -> Iterator[str]:
    """Each line the command prints (stdout and stderr together, without the line end). A command that exits
    with an error raises CalledProcessError after its last line. `cmd` is split at spaces (no shell) unless
    `shell=True`, which hands it to the shell as it is."""
    argv = cmd if shell else cmd.split()
    with subprocess.Popen(argv, env=env, shell=shell, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          encoding="utf8") as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            yield line.rstrip("\n")
        code = proc.wait()
    if code != 0:
        raise subprocess.CalledProcessError(code, cmd)
