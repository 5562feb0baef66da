"""The task of worker_start.py, in a module that imports mpipipe before it defines the task."""
import os
import signal

import mpipipe  # noqa: F401  (the import under test: this module is half-imported while mpipipe loads)


def describe(task):
    """How this worker process was started and what it inherited."""
    with open("/proc/self/cmdline", "rb") as f:
        cmd = f.read().split(b"\0")
    sockets = [fd for fd in os.listdir("/proc/self/fd") if _target(fd).startswith("socket:")]
    print(f"task {task.partition} in worker {os.getpid()}", flush=True)
    return {"started": "new" if b"-c" in cmd else "forked", "pid": os.getpid(), "sockets": len(sockets),
            "mpi_env": sorted(k for k in os.environ if k.startswith(("PMI_", "HYDRA_", "MPIR_"))),
            "sigusr1_default": signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL}


def how_started(task):
    return describe(task)


def _target(fd):
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""
