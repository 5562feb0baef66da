"""Job arrays: N independent elements of one argv, chunked at the cluster's MaxArraySize.

Re-exported by mpipipe.platform.slurm. Each element runs the argv through the
same batch-script body as a world job (signals forwarded, requeue after the
warning, exit code written), with MPIPIPE_ARRAY_INDEX = offset + its
SLURM_ARRAY_TASK_ID, so it knows its place in the whole set.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

from mpipipe.errors import ConfigError, PlatformError
from mpipipe.platform import slurm_commands as sc
from mpipipe.platform.slurm_build import (array_range, batch_script, check_signal, output_template, sbatch_argv,
                                          sbatch_options, write_script)
from mpipipe.platform.slurm_options import SlurmOptions


def plan_chunks(count: int, max_size: int) -> List[Tuple[int, int]]:
    """(offset, size) of each array needed for `count` elements when one array holds at most `max_size`."""
    if count < 1:
        raise ConfigError(f"a job array needs at least one element, got {count}")
    if max_size < 1:
        raise ConfigError(f"MaxArraySize must be at least 1, got {max_size}")
    return [(off, min(max_size, count - off)) for off in range(0, count, max_size)]


@dataclass(frozen=True)
class ArrayChunk:
    job_id: str
    offset: int
    count: int


@dataclass(frozen=True)
class ElementResult:
    index: int
    state: str  # SLURM's last state (COMPLETED, FAILED, ...), or "ENDED" if SLURM forgot it
    code: Optional[int]  # the exit code its batch script recorded; None if it never got that far

    @property
    def ok(self) -> bool:
        return self.code == 0


class SlurmArray:
    """N independent elements running one argv, as SLURM job arrays; element i sees MPIPIPE_ARRAY_INDEX=i.

    N above the cluster's MaxArraySize is split into several arrays of at
    most that many elements (array i covers offset..offset+size-1; its
    batch script adds the offset to SLURM_ARRAY_TASK_ID). With a throttle
    (`%T`, at most T elements at once), each array after the first waits for
    the one before (`--dependency=afterany:`), so T holds for the whole set.
    Elements are requeued and stopped like world jobs (warning signal,
    SIGTERM), and each writes its exit code to <work_dir>/exit/.
    """

    def __init__(self, argv: List[str], count: int, work_dir: str, *, options: Optional[SlurmOptions] = None,
                 throttle: Optional[int] = None, max_array_size: Optional[int] = None,
                 env: Optional[Dict[str, str]] = None, job_name: str = "mpipipe-array",
                 cwd: Optional[str] = None, comment: Optional[str] = None) -> None:
        if throttle is not None and throttle < 1:
            raise ConfigError(f"an array throttle must be at least 1, got {throttle}")
        self.argv = list(argv)
        self.count = count
        self.work_dir = os.path.abspath(work_dir)
        self.options = options or SlurmOptions()
        self.throttle = throttle
        self._max = max_array_size
        self.env = dict(env or {})
        self.job_name = job_name
        self.cwd = cwd or os.getcwd()
        self.comment = comment
        self.chunks: List[ArrayChunk] = []
        self.last_states: Dict[int, str] = {}

    @property
    def max_array_size(self) -> int:
        if self._max is None:
            self._max = sc.max_array_size()
        return self._max

    @property
    def exit_dir(self) -> str:
        return os.path.join(self.work_dir, "exit")

    def chunk_submission(self, offset: int, size: int, after: Optional[str]) -> Tuple[List[str], str]:
        """(sbatch argv, batch script text) of the array covering elements offset..offset+size-1."""
        o = self.options
        spec = {"kind": "array", "argv": self.argv, "env": self.env, "offset": offset, "count": self.count,
                "exit_dir": self.exit_dir, "cwd": self.cwd, "stop": "term",
                "warning_signal": "USR1" if o.signal else None, "requeue": o.requeue,
                "grace": max(10, o.signal // 2) if o.signal else 30}
        logs = os.path.join(self.work_dir, "logs")
        output = output_template(logs, "slurm-%A_%a.out") if "\\" not in logs else os.path.join(logs, "slurm.out")
        opts = sbatch_options(o, job_name=self.job_name, output=output, cwd=self.cwd, comment=self.comment,
                              ntasks=1, array=array_range(size, self.throttle),
                              dependency=f"afterany:{after}" if after else None, world=False)
        script = os.path.join(self.work_dir, f"batch-{offset}.py")
        return sbatch_argv(opts, script), batch_script(spec, opts)

    def submit(self) -> List[ArrayChunk]:
        check_signal(self.options)
        from mpipipe.ownership import make_owner_only_dirs

        make_owner_only_dirs(os.path.join(self.work_dir, "logs"))  # owner-only, like the batch scripts beside them
        make_owner_only_dirs(self.exit_dir)
        after: Optional[str] = None
        for offset, size in plan_chunks(self.count, self.max_array_size):
            argv, text = self.chunk_submission(offset, size, after if self.throttle else None)
            write_script(argv[-1], text)
            job = sc.sbatch(argv)
            self.chunks.append(ArrayChunk(job, offset, size))
            after = job
        return list(self.chunks)

    def _index_of(self, entry: sc.QueueEntry) -> Optional[int]:
        for chunk in self.chunks:
            if chunk.job_id == entry.job_id and entry.task is not None:
                return chunk.offset + entry.task
        return None

    def states(self) -> Dict[int, str]:
        """Global element index -> SLURM state, from ONE squeue call for every array of the set."""
        found: Dict[int, str] = {}
        for entry in sc.queue_states(c.job_id for c in self.chunks).values():
            index = self._index_of(entry)
            if index is not None:
                found[index] = entry.state
        self.last_states.update(found)
        return found

    def result(self, index: int) -> ElementResult:
        path = os.path.join(self.exit_dir, f"element-{index}.exit.json")
        code: Optional[int] = None
        try:
            with open(path) as f:
                code = int(json.load(f)["code"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
        return ElementResult(index, self.last_states.get(index, "ENDED"), code)

    def wait(self, poll_interval: Optional[float] = None, timeout: Optional[float] = None,
             on_poll: Optional[Callable[[Dict[int, str]], None]] = None) -> List[ElementResult]:
        """Wait until no element is pending or running (one squeue per interval); results in index order."""
        interval = poll_interval or self.options.poll_interval
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            current = self.states()
            if on_poll is not None:
                on_poll(current)
            if not any(s in sc.ACTIVE_STATES for s in current.values()):
                break
            if deadline is not None and time.monotonic() > deadline:
                raise PlatformError(f"job array(s) {', '.join(c.job_id for c in self.chunks)} still running after "
                                    f"{timeout:.0f} s")
            time.sleep(interval)
        return [self.result(i) for i in range(self.count)]

    def cancel(self) -> None:
        sc.scancel([c.job_id for c in self.chunks])


def submit_array(argv: List[str], count: int, work_dir: str, **kwargs: Any) -> SlurmArray:
    """Submit `count` elements of `argv` (see SlurmArray); returns the submitted set."""
    array = SlurmArray(argv, count, work_dir, **kwargs)
    array.submit()
    return array
