"""Entry point of a local executor process: `python -m mpipipe.execution.local_executor FD RANK SIZE [patient]`."""
from __future__ import annotations

import signal
import sys

from mpipipe.execution.executor import Executor
from mpipipe.execution.osutil import die_with_parent, exit_without_teardown
from mpipipe.execution.transport import PipeTransport, socket_from_fd
from mpipipe.execution.worker import start_early


def main() -> None:
    fd, rank, size = (int(a) for a in sys.argv[1:4])
    patient = sys.argv[4:5] == ["patient"]  # started before the script's first run: no limit on the wait
    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # rank 0 decides when to stop
    start_early(1, fork=True)  # its first worker boots while this process waits for the job's setup
    transport = PipeTransport(rank, size, {0: socket_from_fd(fd)})
    Executor(transport, hello_timeout=float("inf") if patient else 600.0, patient=patient).run()
    exit_without_teardown()  # rank 0 waits for this process: its log is closed, nothing else is left to do


if __name__ == "__main__":
    main()
