"""Where an MPI shuffle's buckets live on one executor rank: in memory first, on local disk past a budget.

With `--shuffle mpi` a map task's buckets never reach the job directory. Its worker writes them into its rank's
store; the rank sends each bucket to the rank that reads it (execution/mpi_shuffle.py), which keeps it in its
own store; a reading task finds them there by the path the journal knows (`<job dir>/outputs/<node>/<part>`,
which stays empty), mapped by local().

Two tiers:
- memory: a folder on the host's tmpfs (/dev/shm), up to `budget` bytes for this rank;
- disk: a folder under the spill folder (the system's temporary folder by default) for what does not fit.
  What is spilled is reached through a symbolic link in the memory tier, so a path has one form whichever
  tier holds it.

A store belongs to one rank of one world: its folder names the job, the world and the rank's pid. The rank
removes it when it stops, and a rank that starts removes the stores left on its host by ranks that died.
"""
from __future__ import annotations

import logging
import os
import shutil
import time
from typing import Any, Dict, Optional, Tuple

from mpipipe.execution.osutil import physical_memory, process_alive

log = logging.getLogger("mpipipe.shuffle")

MEMORY_BASE = "/dev/shm"
WALK_SECONDS = 0.5
KEEP_FREE = 0.10  # a host with less than this share of its memory available spills, whatever the budget says


def _temp_folder() -> str:
    import tempfile  # (a worker never needs it: it loads random, hashlib...)

    return tempfile.gettempdir()


def _base_folder(base: str) -> str:
    return os.path.join(base, f"mpipipe-shuffle-{os.getuid()}")


def default_budget(host_executors: int) -> int:
    """A quarter of the host's memory, shared by the executor ranks there."""
    return physical_memory() // 4 // max(1, host_executors)


def memory_available() -> Optional[int]:
    """MemAvailable of /proc/meminfo in bytes (None where there is none)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


class ShuffleStore:
    """One rank's store (see the module's docstring); `spec()` is what its workers get to build their own."""

    def __init__(self, memory_root: Optional[str], disk_root: str, budget: int, job_dir: str) -> None:
        self.memory_root = memory_root
        self.disk_root = disk_root
        self.root = memory_root or disk_root  # where every path of the store is reached
        self.budget = budget
        self.outputs = os.path.join(os.path.abspath(job_dir), "outputs")
        self.spill_dir: Optional[str] = None
        self._used: Optional[Tuple[float, int]] = None  # (when the memory tier was counted, bytes)

    @classmethod
    def for_rank(cls, job_dir: str, name: str, budget: int, spill_dir: Optional[str] = None) -> "ShuffleStore":
        """This rank's store (made by prepare()); `name` says whose it is (job, world, rank) and ends with the
        rank's pid."""
        memory_root = None
        if budget > 0 and os.path.isdir(MEMORY_BASE) and os.access(MEMORY_BASE, os.W_OK):
            memory_root = os.path.join(_base_folder(MEMORY_BASE), name)
        disk_root = os.path.join(_base_folder(spill_dir or _temp_folder()), name)
        store = cls(memory_root, disk_root, budget, job_dir)
        store.spill_dir = spill_dir
        return store

    def prepare(self) -> None:
        """Make the store's folders (owner-only), after removing the stores of ranks that died on this host."""
        from mpipipe.ownership import make_private_dir

        sweep_dead(self.spill_dir)
        for root in (self.memory_root, self.disk_root):
            if root:
                make_private_dir(os.path.dirname(root), "the shuffle store folder")  # shared by this user's ranks
                shutil.rmtree(root, ignore_errors=True)
                os.makedirs(root, mode=0o700)

    @classmethod
    def from_spec(cls, spec: Dict[str, Any]) -> "ShuffleStore":
        return cls(spec["memory"], spec["disk"], int(spec["budget"]), spec["job_dir"])

    def spec(self) -> Dict[str, Any]:
        return {"memory": self.memory_root, "disk": self.disk_root, "budget": self.budget,
                "job_dir": os.path.dirname(self.outputs)}

    # --- paths ----------------------------------------------------------------------------------

    def local(self, path: str) -> str:
        """The store's path for a path under the job's outputs/ (a map task's output, or a folder in it)."""
        rel = os.path.relpath(path, self.outputs)
        if rel.startswith(".."):
            raise ValueError(f"{path} is not under {self.outputs}")
        return os.path.join(self.root, rel)

    def resolve(self, path: str) -> str:
        """Where a reading task finds `path`: in this rank's store, or where it is when a run before wrote it
        to the job directory (a journaled map task of a files shuffle)."""
        here = self.local(path)
        return path if not os.path.lexists(here) and os.path.exists(path) else here

    # --- tiers ----------------------------------------------------------------------------------

    def memory_used(self) -> int:
        """Bytes this rank holds in its memory tier: counted on disk at most every WALK_SECONDS (a store holds
        a file per map task and bucket, and a rank asks once per bucket it receives), plus what tier_for
        placed there since."""
        now = time.monotonic()
        if self._used is None or now - self._used[0] > WALK_SECONDS:
            self._used = (now, self._walk())
        return self._used[1]

    def _walk(self) -> int:
        if not self.memory_root:
            return 0
        total = 0
        for folder, _dirs, files in os.walk(self.memory_root):
            for f in files:
                try:
                    st = os.lstat(os.path.join(folder, f))
                except OSError:
                    continue
                if not os.path.islink(os.path.join(folder, f)):
                    total += st.st_size
        return total

    def tier_for(self, nbytes: int) -> str:
        """The root that takes `nbytes` more: memory while this rank's budget and the host's memory allow."""
        if not self.memory_root or nbytes > self.budget:
            return self.disk_root
        available = memory_available()
        if available is not None and available - nbytes < KEEP_FREE * physical_memory():
            return self.disk_root
        try:
            fs = os.statvfs(self.memory_root)
            if fs.f_bavail * fs.f_frsize < nbytes + (64 << 20):
                return self.disk_root
        except OSError:
            return self.disk_root
        used = self.memory_used()
        if used + nbytes > self.budget:
            return self.disk_root
        self._used = (self._used[0] if self._used else time.monotonic(), used + nbytes)
        return self.memory_root

    def staging(self, tier: str, label: str) -> str:
        """A fresh folder in `tier` for something being written (a map attempt, a bucket being received)."""
        path = os.path.join(tier, ".staging", label)
        shutil.rmtree(path, ignore_errors=True)
        os.makedirs(path, mode=0o700)
        return path

    def publish(self, staging: str, path: str) -> str:
        """Move a finished staging folder to the store's place for `path` (a job output path, or a folder in
        one); from the disk tier, the memory tier gets a link to it. Returns the store's path."""
        here = self.local(path)
        tier = self.disk_root if staging.startswith(self.disk_root + os.sep) else self.root
        where = os.path.join(tier, os.path.relpath(here, self.root))
        os.makedirs(os.path.dirname(where), mode=0o700, exist_ok=True)
        if os.path.lexists(where):
            _remove(where)
        try:
            os.rename(staging, where)
        except OSError:  # the parent is a link to the other tier
            shutil.move(staging, where)
        if where != here and os.path.realpath(here) != os.path.realpath(where):
            os.makedirs(os.path.dirname(here), mode=0o700, exist_ok=True)
            if os.path.lexists(here):
                _remove(here)
            os.symlink(where, here)
        return here

    def remove(self, path: str) -> None:
        """Drop the store's copy of `path` (and what a link there points to)."""
        here = self.local(path)
        if os.path.islink(here):
            target = os.path.realpath(here)
            os.unlink(here)
            shutil.rmtree(target, ignore_errors=True)
        else:
            shutil.rmtree(here, ignore_errors=True)

    def drop_node(self, name: str) -> None:
        """Forget every bucket of a node's shuffle (all its readers are done)."""
        for root in (self.memory_root, self.disk_root):
            if root:
                shutil.rmtree(os.path.join(root, name), ignore_errors=True)

    def close(self) -> None:
        for root in (self.memory_root, self.disk_root):
            if root:
                shutil.rmtree(root, ignore_errors=True)


def rank_store(setup: Dict[str, Any], rank: int, world_size: int) -> Optional[ShuffleStore]:
    """The store of this executor rank when rank 0 asked for one (an MPI world: setup["shuffle"]), not made yet."""
    opts = setup.get("shuffle")
    if not opts:
        return None
    budget = opts.get("budget")
    if budget is None:
        budget = default_budget(host_ranks(world_size))
    name = f"{setup.get('job_id', 'job')}.{opts.get('world', '0')}.r{rank}.{os.getpid()}"
    return ShuffleStore.for_rank(setup["job_dir"], name, int(budget), opts.get("spill_dir"))


def host_ranks(default: int) -> int:
    """The ranks of this world on this host, as the launcher says (MPICH's hydra, Open MPI, SLURM), else
    `default`."""
    for var in ("MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE", "SLURM_NTASKS_PER_NODE"):
        value = os.environ.get(var, "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    return default


def local_store(setup: Dict[str, Any]) -> ShuffleStore:
    """A worker's view of its rank's store, from the job setup its rank gave it."""
    return ShuffleStore.from_spec(setup["shuffle_store"])


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        os.unlink(path)


def sweep_dead(spill_dir: Optional[str] = None) -> None:
    """Remove the stores on this host whose rank died without removing its own (their names end in its pid)."""
    for base in (MEMORY_BASE, spill_dir or _temp_folder()):
        folder = _base_folder(base)
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        for name in names:
            pid = name.rsplit(".", 1)[-1]
            if not pid.isdigit():
                continue
            if not process_alive(int(pid)):
                log.info("removing the shuffle store %s of a rank that died", name)
                shutil.rmtree(os.path.join(folder, name), ignore_errors=True)
