"""One element of a SlurmLauncher array: `python -m mpipipe.launchers.shard_main SPEC [POSITIONS]`.

Runs the run at position POSITIONS[MPIPIPE_ARRAY_INDEX] (or MPIPIPE_ARRAY_INDEX
itself) of the job pickled in SPEC and writes its result. On an exception it
writes <result>.error.json (the error line and the traceback) for the
submitting side, prints the traceback to stderr (the SLURM log), and exits 1.

A module that defines checkpoint() is resumable: SIGTERM (the time limit,
scancel, `scontrol requeue`, or the batch script after the warning signal)
saves its checkpoint and the element exits with STOPPED_CODE; the next start
of that run (SLURM's requeue, or the launcher's retry) continues from it. An
element requeued more than the spec's `max_requeues` times stops at its start
with an error, so a run that never gets to its end cannot loop forever.
"""
from __future__ import annotations

import json
import os
import pickle
import sys
import traceback
from typing import Any, Dict, List, Optional
from mpipipe.atomic import atomic_write
from mpipipe.errors import JournalError
from mpipipe.ownership import check_trusted_file

USAGE = "usage: python -m mpipipe.launchers.shard_main SPEC [POSITIONS]"
STOPPED_CODE = 75  # stopped by SIGTERM after saving a checkpoint: start it again to continue


def write_error(path: str, error: str, tb: str) -> None:
    """Atomically, so the submitting side never reads half a record."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    atomic_write(path, json.dumps({"error": error, "traceback": tb, "pid": os.getpid(), "host": os.uname().nodename}))


def error_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def use_sys_path(paths: List[str]) -> None:
    """The driver's import path first, so classes defined next to its script unpickle here too."""
    sys.path[:] = list(paths) + [p for p in sys.path if p not in paths]


def main(argv: Optional[List[str]] = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if len(args) not in (1, 2):
        print(USAGE, file=sys.stderr)
        return 2
    index_text = os.environ.get("MPIPIPE_ARRAY_INDEX", "")
    if not index_text.isdigit():
        print(f"shard_main: MPIPIPE_ARRAY_INDEX must be set to an element index, got {index_text!r}", file=sys.stderr)
        return 2
    index = int(index_text)
    try:  # the spec is a pickle: loading it runs code, so only one this user alone could have written
        check_trusted_file(args[0], "the element spec")
    except JournalError as e:
        print(f"shard_main: {e}", file=sys.stderr)
        return 2
    try:
        with open(args[0], "rb") as f:
            spec: Dict[str, Any] = pickle.load(f)
        positions = None
        if len(args) == 2:
            with open(args[1]) as f:
                positions = json.load(f)
        position = positions[index] if positions is not None else index
        path = spec["paths"][position]
    except (OSError, ValueError, KeyError, IndexError, TypeError, pickle.UnpicklingError) as e:
        print(f"shard_main: cannot read element {index} of {args}: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    use_sys_path(spec.get("sys_path") or [])
    restarts = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)
    limit = spec.get("max_requeues")
    if limit is not None and restarts > int(limit):
        message = (f"RequeueLimit: this element was requeued {restarts} times, more than max_requeues={limit}; "
                   "its checkpoint is kept for the next attempt (raise max_requeues, or give it a longer --time)")
        write_error(f"{path}.error.json", message, "")
        print(message, file=sys.stderr)
        return 1
    try:
        from mpipipe.launchers.base import run_shard

        module, shards = pickle.loads(spec["payload"])
        run_shard(module, shards[position], path, stop_on_term=True)
    except BaseException as e:  # noqa: BLE001  whatever the run raised (SystemExit too) is its error
        tb = traceback.format_exc()
        # known by name: importing mpipipe.module may be what failed
        if type(e).__name__ == "RunStopped" and type(e).__module__ == "mpipipe.module":
            write_error(f"{path}.error.json", f"RunStopped: {e}", "")
            print(f"shard_main: {e}; the next start of this run continues from its checkpoint", file=sys.stderr)
            return STOPPED_CODE
        write_error(f"{path}.error.json", error_line(e), tb)
        print(tb, file=sys.stderr, end="")
        return 130 if isinstance(e, KeyboardInterrupt) else 1
    try:
        os.unlink(f"{path}.error.json")  # a stale one from an earlier failed attempt
    except FileNotFoundError:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
