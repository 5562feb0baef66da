"""MpiExecutor and SlurmExecutor: executors for `pipeline.map(..., executor=...)` that honour resources.

Each call pipefunc submits is read for the function it runs (mpipipe.pipefunc.calls)
and what that function needs: the executor's defaults with the function's
`resources` on top. "element"-scoped resources are evaluated per element and
each element is its own task; "map"-scoped ones once per map, whose elements
run in chunks of `size_per_learner` (the whole map by default), each chunk one
task holding the resources, its elements on a pool of `cpus` processes (or in
turn, for `parallelization_mode="internal"` or `executor_type="sequential"`).
Calls then go through mpipipe.futures.Executor as tasks of the world's live run
(journaled either way): run by the world's executors, placed by the scheduler,
or handed to the SLURM launcher as job arrays.
"""
from __future__ import annotations

import concurrent.futures
import threading
import time
import warnings
import weakref
from typing import Any, Callable, Dict, List, Sequence, Tuple

from mpipipe.errors import ConfigError
from mpipipe.futures import Call, Executor
from mpipipe.pipefunc import calls as pf
from mpipipe.pipefunc.arguments import Arguments, read_arguments
from mpipipe.pipefunc.needs import POOLED, Need, need_of

# the chunks of one map that pipefunc submits this close together are one batch; pipefunc submits them in one loop,
# but on a loaded host that loop can be descheduled for tens of milliseconds, which split a map into more tasks
MAP_BATCH_SECONDS = 0.1

Futures = List["concurrent.futures.Future[Any]"]


def _configure() -> None:
    """mpipipe's flags (--platform, --data-root, ...) from the command line, as init() reads them, unless the
    script already called init() or built a Driver."""
    from mpipipe import session

    if not session.init_options():
        session.init()


def _quiet_chunk_size_warning() -> None:
    """pipefunc sizes chunks by the cores of executors it knows and warns about any other; mpipipe re-chunks
    what it is given, so that warning says nothing here."""
    warnings.filterwarnings("ignore", message=r"Automatic chunksize calculation failed with: Cannot get number of "
                                              r"cores for <class 'mpipipe\.pipefunc\.", category=UserWarning)


def _gather(parts: Futures, combine: Callable[[List[Any]], Any]) -> "concurrent.futures.Future[Any]":
    """One future for several: the first exception, or combine(results) once all are done."""
    out: "concurrent.futures.Future[Any]" = concurrent.futures.Future()
    out.set_running_or_notify_cancel()
    lock = threading.Lock()
    left = [len(parts)]

    def done(part: "concurrent.futures.Future[Any]") -> None:
        with lock:
            left[0] -= 1
            last = left[0] == 0
            if out.done():
                return
            error = part.exception() if not part.cancelled() else concurrent.futures.CancelledError()
            if error is not None:
                out.set_exception(error)
                return
            if not last:
                return
        try:
            out.set_result(combine([p.result() for p in parts]))
        except BaseException as e:  # noqa: BLE001
            out.set_exception(e)

    for part in parts:
        part.add_done_callback(done)
    return out


def _failed(error: BaseException) -> "concurrent.futures.Future[Any]":
    fut: "concurrent.futures.Future[Any]" = concurrent.futures.Future()
    fut.set_running_or_notify_cancel()
    fut.set_exception(error)
    return fut


class _MapBatch:
    """Chunks of one map waiting to be submitted together (pipefunc submits a map's chunks in one burst)."""

    def __init__(self, chunk: pf.MapChunk, need: Need, label: str, where: str) -> None:
        self.fn = chunk.fn
        self.need = need
        self.label = label
        self.where = where
        self.chunks: List[Tuple[Tuple[int, ...], "concurrent.futures.Future[Any]"]] = []
        self.last = time.monotonic()


class PipefuncExecutor(concurrent.futures.Executor):
    """The part MpiExecutor and SlurmExecutor share; a subclass says where calls with a given need go."""

    default_name = "pipefunc"

    def __init__(self, arguments: Dict[str, Any]) -> None:
        self.arguments: Arguments = read_arguments(type(self).__name__, arguments, self.default_name)
        self.name = self.arguments.name
        self.size_per_learner = self.arguments.size_per_learner
        self.executor_type = self.arguments.executor_type
        self._check(self.arguments)
        _configure()
        _quiet_chunk_size_warning()
        self._lock = threading.Lock()
        self._map_needs: "weakref.WeakKeyDictionary[Any, Need]" = weakref.WeakKeyDictionary()
        self._batches: Dict[int, _MapBatch] = {}
        self._shutdown = False

    # --- where calls go (subclasses) --------------------------------------------------------

    def _check(self, arguments: Arguments) -> None:
        """Refuse settings this executor cannot honour (before anything joins a world or reads flags)."""

    def _submit(self, calls: Sequence[Call], need: Need, label: str, where: str) -> Futures:
        """Queue calls needing `need`, named `label`; `where` names them in errors, status and job comments."""
        raise NotImplementedError

    def _backends(self) -> List[Executor]:
        raise NotImplementedError

    # --- reading pipefunc's calls ----------------------------------------------------------

    def _where(self, func: Any) -> str:
        return f"pipefunc function {pf.output_label(func)!r}"

    def _need(self, resources: Any, func: Any) -> Need:
        return self.arguments.defaults.over(need_of(resources, self._where(func)))

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> "concurrent.futures.Future[Any]":
        if self._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")
        call = pf.classify(fn, args, kwargs)
        if call is None:
            return self._submit([(fn, args, kwargs)], self.arguments.defaults, self.name, f"{self.name} calls")[0]
        label = f"{self.name}-{pf.output_label(call.func)}"
        where = self._where(call.func)
        if isinstance(call, pf.Single):
            return self._submit([(fn, args, {})], self._need(pf.evaluated_resources(call), call.func), label,
                                where)[0]
        if call.func.resources is None and self.arguments.defaults == Need():
            return self._submit([(fn, args, {})], Need(), label, where)[0]  # nothing asked for: pipefunc's chunk
        if call.func.resources_scope == "element":
            return self._elements(call, label, where)
        return self._map_chunk(call, label)

    def _elements(self, chunk: pf.MapChunk, label: str, where: str) -> "concurrent.futures.Future[Any]":
        """"element" scope: each element its own task, with resources evaluated for that element."""
        resources = chunk.func.resources
        groups: Dict[Need, List[int]] = {}
        for i in chunk.indices:
            try:
                need = self._need(pf.element_resources(chunk, i) if callable(resources) else resources, chunk.func)
            except Exception as e:  # noqa: BLE001  the user's resources function (or its value) failed
                if pf.error_handling(chunk) != "continue":
                    return _failed(e)
                need = self.arguments.defaults  # pipefunc records the error when the element runs
            groups.setdefault(need, []).append(i)
        by_index: Dict[int, "concurrent.futures.Future[Any]"] = {}
        for need, indices in groups.items():
            try:
                futures = self._submit([(chunk.fn, ((i,),), {}) for i in indices], need, label, where)
            except Exception as e:  # noqa: BLE001  e.g. a need no world executor can take
                return _failed(e)
            by_index.update(zip(indices, futures))
        parts = [by_index[i] for i in chunk.indices]
        return _gather(parts, lambda results: [out for part in results for out in part])

    def _map_chunk(self, chunk: pf.MapChunk, label: str) -> "concurrent.futures.Future[Any]":
        """"map" scope: resources evaluated once per map; the map's chunks are re-cut by size_per_learner."""
        need = self._map_needs.get(chunk.process_index)
        if need is None:
            resources = chunk.func.resources
            try:
                need = self._need(pf.map_resources(chunk) if callable(resources) else resources, chunk.func)
            except Exception as e:  # noqa: BLE001
                if pf.error_handling(chunk) != "continue":
                    return _failed(e)
                need = self.arguments.defaults
            self._map_needs[chunk.process_index] = need
        fut: "concurrent.futures.Future[Any]" = concurrent.futures.Future()
        fut.set_running_or_notify_cancel()
        key = id(chunk.process_index)
        with self._lock:
            batch = self._batches.get(key)
            start = batch is None
            if batch is None:
                batch = self._batches[key] = _MapBatch(chunk, need, label, self._where(chunk.func))
            batch.chunks.append((chunk.indices, fut))
            batch.last = time.monotonic()
        if start:
            threading.Thread(target=self._flush_when_quiet, args=(key, batch), name="mpipipe-pipefunc-map",
                             daemon=True).start()
        return fut

    def _flush_when_quiet(self, key: int, batch: _MapBatch) -> None:
        while True:
            time.sleep(MAP_BATCH_SECONDS)
            with self._lock:
                if time.monotonic() - batch.last >= MAP_BATCH_SECONDS:
                    self._batches.pop(key, None)
                    break
        self._flush(batch)

    def _flush(self, batch: _MapBatch) -> None:
        """Submit a map's chunks as tasks of size_per_learner elements (all of them by default)."""
        indices = [i for chunk_indices, _ in batch.chunks for i in chunk_indices]
        size = self.size_per_learner or len(indices)
        pieces = [tuple(indices[k:k + size]) for k in range(0, len(indices), size)]
        executor_type = batch.need.executor_type or self.executor_type
        processes = batch.need.cpus if executor_type in POOLED and not batch.need.internal else 1
        where = batch.where
        try:
            futures = self._submit([(pf.run_elements, (batch.fn, piece, processes), {}) for piece in pieces],
                                   batch.need, batch.label, where)
        except Exception as e:  # noqa: BLE001
            for _, fut in batch.chunks:
                fut.set_exception(e)
            return
        piece_of = {i: n for n, piece in enumerate(pieces) for i in piece}
        for chunk_indices, fut in batch.chunks:
            used = sorted({piece_of[i] for i in chunk_indices})

            def combine(results: List[Any], used: List[int] = used, chunk_indices: Tuple[int, ...] = chunk_indices
                        ) -> List[Any]:
                outputs = {i: out for n, result in zip(used, results) for i, out in zip(pieces[n], result)}
                return [outputs[i] for i in chunk_indices]

            def settle(g: "concurrent.futures.Future[Any]", fut: "concurrent.futures.Future[Any]" = fut) -> None:
                if g.exception():
                    fut.set_exception(g.exception())
                else:
                    fut.set_result(g.result())

            _gather([futures[n] for n in used], combine).add_done_callback(settle)

    # --- the rest of the Executor interface ----------------------------------------------------

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No new calls; the backends' shutdown (see mpipipe.futures.Executor.shutdown)."""
        self._shutdown = True
        if wait:
            while True:
                with self._lock:
                    if not self._batches:
                        break
                time.sleep(MAP_BATCH_SECONDS)
        for backend in self._backends():
            backend.shutdown(wait=wait, cancel_futures=cancel_futures)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class MpiExecutor(PipefuncExecutor):
    """Runs a pipeline's functions on the executors of this job's world: local processes, an MPI world
    (`mpiexec -n N python script.py`), or one started with `--platform mpi`.

    Takes adaptive_scheduler's SlurmExecutor arguments (see mpipipe.pipefunc.arguments);
    `launcher`: a world launcher (default: the job's platform). Building it joins
    the world: under mpiexec, ranks other than 0 serve from here and exit.
    """

    def __init__(self, launcher: Any = None, **arguments: Any) -> None:
        from mpipipe.launchers.world import WorldLauncher

        if launcher is not None and not isinstance(launcher, WorldLauncher):
            raise ConfigError(f"MpiExecutor runs on a world launcher (WorldLauncher, DirectLauncher, MpiLauncher), "
                              f"got {type(launcher).__name__}; use mpipipe.pipefunc.SlurmExecutor for SLURM")
        super().__init__(arguments)
        self.executor = Executor(launcher, name=self.name).join()

    def _check(self, arguments: Arguments) -> None:
        if arguments.defaults.nodes > 1:
            raise ConfigError(f"MpiExecutor: nodes={arguments.defaults.nodes}, but a task on a world's executors "
                              "runs on one host; give cores_per_node only, or use SlurmExecutor")

    def _submit(self, calls: Sequence[Call], need: Need, label: str, where: str) -> Futures:
        return self.executor.submit_calls(calls, resources=need.world_spec(where), name=label, describe=where)

    def _backends(self) -> List[Executor]:
        return [self.executor]


class SlurmExecutor(PipefuncExecutor):
    """Runs a pipeline's functions as SLURM job arrays through mpipipe's SlurmLauncher: one array per function
    and resources, one element per call (per element, or per chunk of a map). The calls are tasks of the job's
    world (journaled, in `mpipipe status`), which the first call joins.

    Takes adaptive_scheduler's SlurmExecutor arguments (see mpipipe.pipefunc.arguments);
    `launcher`: a SlurmLauncher to start from (default: SlurmLauncher(), the job's
    SLURM options: command line > SP_SLURM_* > init() > site config). What a
    function needs (the executor's defaults with its resources on top) becomes
    sbatch options over the site config's, but never over options chosen on the
    launcher, the command line, SP_SLURM_* or init().
    """

    def __init__(self, launcher: Any = None, **arguments: Any) -> None:
        from mpipipe.launchers.slurm import SlurmLauncher

        if launcher is not None and not isinstance(launcher, SlurmLauncher):
            raise ConfigError(f"SlurmExecutor runs on a SlurmLauncher, got {type(launcher).__name__}; use "
                              "mpipipe.futures.Executor(launcher) for other launchers")
        arguments.setdefault("cores_per_node", 1)  # adaptive_scheduler's default: one core per job
        super().__init__(arguments)
        self._one_driver()
        a = self.arguments
        settings = {k: v for k, v in (("max_parallel", a.max_parallel), ("max_retries", a.max_retries),
                                      ("poll_interval", a.poll_interval)) if v is not None}
        self.launcher = (launcher or SlurmLauncher()).config(cache=False, **settings)
        self._executors: Dict[int, Executor] = {}

    @staticmethod
    def _one_driver() -> None:
        """Inside an MPI world (the script run under mpiexec or srun), only rank 0 submits: the other ranks join
        the world here, serve it and exit, as they would for an MpiExecutor."""
        from mpipipe.platform.mpi import MpiPlatform, launcher_world_size

        if MpiPlatform.detect() and launcher_world_size()[0] > 1:
            from mpipipe.launchers.world import MpiLauncher

            MpiLauncher().join()

    def _backend(self, need: Need) -> Executor:
        """One Executor per node count (the one need a requirement cannot say); the rest travels as each call's
        requirements, which the launcher turns into sbatch options."""
        with self._lock:
            backend = self._executors.get(need.nodes)
            if backend is None:
                launcher = self.launcher.config(nodes=need.nodes) if need.nodes else self.launcher
                backend = self._executors[need.nodes] = Executor(launcher, name=self.name)
        return backend

    def _submit(self, calls: Sequence[Call], need: Need, label: str, where: str) -> Futures:
        from mpipipe.resources import Resources

        spec = Resources(cpus=need.cpus, memory=need.memory, gpus=need.gpus, time=need.time,
                         partition=need.partition, extra_args=need.extra) if (
            need.cpus or need.memory or need.gpus or need.time or need.partition or need.extra) else None
        return self._backend(need).submit_calls(calls, resources=spec, name=label, describe=where)

    def _backends(self) -> List[Executor]:
        with self._lock:
            return list(self._executors.values())
