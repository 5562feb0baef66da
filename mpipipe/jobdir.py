"""The job directory: its name (the job id), its lock, how it is made safe to use, and what a killed run left.

`<data-root>/<job-id>/` holds the journal, outputs, logs and state of one job
(the README's "The job directory" lists it). It must be the user's alone:
another user's folder, or one others may write, could hold a planted journal or
pickles, so it is refused before anything in it is read.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import socket
import stat
import sys
from typing import Any, Dict, Optional, Set

from mpipipe.config import JobConfig
from mpipipe.errors import JournalError


_SESSION_HINTED: Set[str] = set()  # kernel-session job ids whose hint was shown


def default_job_id(user_args: Dict[str, Any]) -> str:
    """Same script and same arguments -> same job id, so re-running a command resumes it. In a Jupyter kernel:
    the notebook's name, or this kernel session's id (mpipipe.notebook says how)."""
    from mpipipe.notebook import current_job_id

    notebook = current_job_id()
    if notebook is not None:
        job_id, named = notebook
        if not named and job_id not in _SESSION_HINTED:
            _SESSION_HINTED.add(job_id)
            from mpipipe.console import say

            say(f"[mpipipe] this kernel does not say which notebook it runs: its job is {job_id}, this kernel "
                f"session's; to resume it after a restart, pass mpipipe.init(job_id={job_id!r})")
        return job_id
    script = os.path.abspath(sys.argv[0]) if sys.argv and sys.argv[0] else "interactive"
    stem = os.path.splitext(os.path.basename(script))[0] or "job"
    digest = hashlib.sha1(json.dumps([script, sorted((k, repr(v)) for k, v in user_args.items())]).encode()).hexdigest()
    return f"{stem}-{digest[:8]}"


class JobLock:
    """An exclusive lock on the job directory; the kernel drops it when the holder dies."""

    def __init__(self, job_dir: str) -> None:
        self.path = os.path.join(job_dir, "lock")
        self.fd: Optional[int] = None

    def acquire(self) -> None:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as e:
            raise JournalError(f"cannot lock the job directory {os.path.dirname(self.path)}: {e.strerror}; "
                               "choose a writable --data-root") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise JournalError(
                f"job directory {os.path.dirname(self.path)} is in use by {holder}; wait for that run to end "
                "or choose another --job-id"
            ) from None
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode())
        except OSError as e:
            os.close(fd)
            raise JournalError(f"cannot write to the job directory {os.path.dirname(self.path)}: {e.strerror}; "
                               "free some space or choose another --data-root") from None
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def prepare_job_dir(config: JobConfig, job_id: str) -> str:
    """The job's folder, made owner-only; an existing one is checked before anything is read from it.

    The data root may be shared (/tmp); the job directory must be this user's alone: one that another user
    owns or may write to could hold a planted journal, outputs or pickles, and is refused."""
    from mpipipe.ownership import check_private_dir, make_private_tree

    job_dir = os.path.join(config.data_root, job_id)
    try:
        st: Optional[os.stat_result] = os.lstat(job_dir)
    except OSError:
        st = None  # missing (or the data root is not a folder): creating it below says why not
    if st is not None:
        if stat.S_ISLNK(st.st_mode) and st.st_uid != os.geteuid():
            raise JournalError(f"job directory {job_dir} is a symbolic link that another user made; remove it or "
                               "choose another --data-root or --job-id")
        check_private_dir(job_dir, "job directory")
    try:
        make_private_tree(job_dir, "job directory")
        for sub in ("logs", "outputs"):
            make_private_tree(os.path.join(job_dir, sub), "job folder")
    except OSError as e:
        raise JournalError(f"cannot create the job directory {job_dir}: {e.strerror}; "
                           "choose a writable --data-root") from None
    if not os.access(job_dir, os.W_OK):
        raise JournalError(f"job directory {job_dir} is not writable; choose a writable --data-root")
    return job_dir


def remove_stale_staging(job_dir: str) -> None:
    """Staging folders of attempts that a killed run left behind. Only the lock holder calls this, before its
    executors start any task: no attempt of a live run can be writing there."""
    import glob
    import shutil

    for path in glob.glob(os.path.join(glob.escape(job_dir), "outputs", "*", ".staging")):
        shutil.rmtree(path, ignore_errors=True)
