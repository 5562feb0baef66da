"""A launcher that runs the missing runs of a module as SLURM job arrays, one element per run.

The job (module, runs, result paths) is pickled once into a work folder under
the job directory, <data_root>/<job_id>/slurm-modules/<label>-<n>/, which the
compute nodes must see (a shared filesystem, as for the SLURM platform). Each
element runs `python -m mpipipe.launchers.shard_main` on it and writes its
result where the cache expects it, or an .error.json beside it. Failed
elements (an exception, the time limit, a lost node) are submitted again as a
smaller array, up to max_retries times; SLURM's own requeue is off for them,
except for modules that define checkpoint(): their elements are requeued
(after the warning signal, or by `scontrol requeue`) and continue from the
checkpoint they saved on SIGTERM, at most max_requeues times per attempt.
Waiting is asyncio polling (one squeue per interval for all the arrays of a
module), so modules gathered with asyncio wait side by side.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import fields
from typing import AbstractSet, Any, Dict, List, Mapping, Optional, Sequence, Tuple

from mpipipe.atomic import atomic_file
from mpipipe.config import convert_slurm
from mpipipe.errors import ConfigError, MpipipeError, PlanError, RequirementError
from mpipipe.launchers.base import Launcher, ShardJob, say
from mpipipe.module import ShardFailure, can_checkpoint
from mpipipe.platform.slurm_options import SlurmOptions
from mpipipe import context

__all__ = ["SlurmLauncher", "SlurmOptions"]

OPTION_NAMES = tuple(f.name for f in fields(SlurmOptions))
#: Other spellings of option names (experimaestro's documentation writes gpu_per_node).
OPTION_ALIASES = {"gpu_per_node": "gpus_per_node"}
SPEC_VERSION = 1
PROGRESS_EVERY = 10.0  # seconds between two progress lines while a module's array runs
ENTRY_MODULE = "mpipipe.launchers.shard_main"


# --- options --------------------------------------------------------------------------------------------------


def option_value(name: str, value: Any) -> Any:
    """One SLURM option checked and typed as the command line would; None restores its default."""
    if value is None:
        return getattr(SlurmOptions(), name)
    try:
        return convert_slurm(name, value)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"bad value for the SLURM option {name}: {e}") from None


def option_name(name: str) -> str:
    """The SlurmOptions field a user's spelling means ("gpus-per-node", "gpu_per_node" -> "gpus_per_node")."""
    name = str(name).replace("-", "_")
    return OPTION_ALIASES.get(name, name)


def typed_options(options: SlurmOptions) -> SlurmOptions:
    """Each value checked and typed as the command line would (SlurmOptions(gpus_per_node=2) holds "2")."""
    return SlurmOptions(**{name: None if getattr(options, name) is None else option_value(name, getattr(options, name))
                           for name in OPTION_NAMES})


def as_options(options: Any) -> Optional[SlurmOptions]:
    """SlurmOptions from what a user or a launcher config file gives: SlurmOptions, a mapping, or None."""
    if options is None:
        return None
    if isinstance(options, SlurmOptions):
        return typed_options(options)
    if isinstance(options, Mapping):
        names = {option_name(k): v for k, v in options.items()}
        unknown = sorted(k for k in names if k not in OPTION_NAMES)
        if unknown:
            raise ConfigError(f"unknown SLURM option(s) {', '.join(unknown)}; valid options: {', '.join(OPTION_NAMES)}")
        return SlurmOptions(**{k: option_value(k, v) for k, v in names.items()})
    raise ConfigError(f"a SlurmLauncher's options must be a SlurmOptions or a dict of them, "
                      f"got {type(options).__name__}")


def _warning(options: SlurmOptions, minutes: int, soft: AbstractSet[str], signal: Optional[int]) -> Dict[str, Any]:
    """The signal change a new time limit of `minutes` needs: a warning nobody chose starts again from `signal`,
    and any warning must come before the limit (as resolve() does for a short --time)."""
    warn = signal if signal is not None and "signal" in soft else options.signal
    if warn and 2 * warn > minutes * 60:
        warn = max(1, minutes * 60 // 2)
    return {"signal": warn} if warn != options.signal else {}


def fill_from_requirements(options: SlurmOptions, spec: Any, where: str, soft: AbstractSet[str] = frozenset(),
                           signal: Optional[int] = None) -> SlurmOptions:
    """Options nobody chose, taken from what one run needs (cores, memory, GPUs, duration, partition).

    `soft` names options whose values are only defaults (the site config's): a
    run's own needs replace them, while options the user chose (on the launcher,
    the command line, SP_SLURM_*, init()) are kept. `signal` is the warning a new
    time limit starts from when the signal is soft (None: the options' own).
    Only a requirement with a single alternative is translated: SLURM cannot be
    asked for "this or that".
    """
    if spec is None or callable(spec):  # a function of each run's inputs: nothing to translate up front
        return options

    def free(name: str) -> bool:
        return getattr(options, name) is None or name in soft

    given = getattr(spec, "slurm_options", None)
    if callable(given) and not isinstance(spec, type):  # stopes' Requirements: SLURM options of its own
        try:
            wanted = {option_name(k): v for k, v in given().items()}
        except MpipipeError as e:
            raise RequirementError(f"{where}: {e}") from None
        filled = {k: option_value(k, v) for k, v in wanted.items() if k in OPTION_NAMES and free(k)}
        minutes = int(filled["time"]) if str(filled.get("time", "")).isdigit() else 0
        if minutes and "signal" not in filled:
            filled.update(_warning(options, minutes, soft, signal))
        return options.with_(**filled) if filled else options
    from mpipipe.resources import Resources, requirement_of

    if isinstance(spec, Mapping):
        spec = Resources.from_dict(spec, where)
    requirement = requirement_of(spec, where)
    changes: Dict[str, Any] = {}
    if isinstance(spec, Resources):
        if spec.partition and free("partition"):
            changes["partition"] = option_value("partition", spec.partition)
        if spec.extra_args:
            changes["extra"] = options.extra + option_value("extra", list(spec.extra_args))
    if requirement is not None and len(requirement.alternatives) == 1:
        need = requirement.alternatives[0]
        if need.cpu.cores and free("cpus_per_task"):
            changes["cpus_per_task"] = need.cpu.cores
        if need.cpu.memory and free("mem"):
            changes["mem"] = f"{math.ceil(need.cpu.memory / 2 ** 20)}M"
        gpus = sum(a.count for a in need.accelerators if a.kind != "mps")  # Apple devices are not SLURM GPUs
        if gpus and free("gpus_per_node") and free("gpus") and free("gres"):
            changes["gpus_per_node"] = str(gpus)
            if options.gpus is not None:  # the site's GPU count gives way to the run's
                changes["gpus"] = None
            if options.gres is not None and options.gres.startswith("gpu"):
                changes["gres"] = None
        if need.duration and free("time"):
            minutes = max(1, math.ceil(need.duration / 60))
            changes["time"] = str(minutes)
            changes.update(_warning(options, minutes, soft, signal))
    return options.with_(**changes) if changes else options


# --- the job's spec, read by shard_main ------------------------------------------------------------------------


def write_spec(path: str, job: ShardJob, max_requeues: Optional[int] = None) -> None:
    """Pickle the job once; paths and sys.path stay readable even if the module cannot be unpickled."""
    from mpipipe import pickling

    try:
        payload = pickling.dumps((job.module, job.shards))
    except Exception as e:  # noqa: BLE001  a user's attribute may fail to pickle in any way
        what = pickling.describe_unpicklable(job.module, "") or f"{type(e).__name__}: {e}"
        raise PlanError(f"module {job.label} cannot be sent to SLURM: {what.lstrip('.')}; make that attribute "
                        "picklable, or store it with mpipipe.refs and pass the reference") from None
    header = {"version": SPEC_VERSION, "label": job.label, "paths": list(job.paths),
              "sys_path": [os.path.abspath(p) if p else os.getcwd() for p in sys.path if isinstance(p, str)],
              "max_requeues": max_requeues, "payload": payload}
    with atomic_file(path, mode=None) as f:
        pickling.dump(header, f)


def error_path(result_path: str) -> str:
    return f"{result_path}.error.json"


def read_error(result_path: str) -> Tuple[str, str]:
    """(error line, traceback) that a failed element wrote, or ("", "")."""
    try:
        with open(error_path(result_path)) as f:
            record = json.load(f)
        return str(record.get("error", "")), str(record.get("traceback", ""))
    except (OSError, ValueError, AttributeError):
        return "", ""


def _tail(path: str, lines: int = 15) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return ""


def _new_work_dir(parent: str, label: str) -> str:
    """<parent>/<label>-<n> with the first n free (made exclusively, so two drivers never share one)."""
    os.makedirs(parent, exist_ok=True)
    n = 1 + sum(1 for name in os.listdir(parent) if name.startswith(f"{label}-"))
    while True:
        path = os.path.join(parent, f"{label}-{n}")
        try:
            os.mkdir(path)
            return path
        except FileExistsError:
            n += 1


def _log_path(array: Any, index: int) -> str:
    """The slurm-%A_%a.out file of element `index` of a SlurmArray."""
    logs = os.path.join(array.work_dir, "logs")
    if "\\" in logs:
        return os.path.join(logs, "slurm.out")
    for chunk in array.chunks:
        if chunk.offset <= index < chunk.offset + chunk.count:
            return os.path.join(logs, f"slurm-{chunk.job_id}_{index - chunk.offset}.out")
    return ""


def _package_parent() -> str:
    import mpipipe

    return os.path.dirname(os.path.dirname(os.path.abspath(mpipipe.__file__)))


# --- the launcher ---------------------------------------------------------------------------------------------


class SlurmLauncher(Launcher):
    """Runs each scheduled module as SLURM job arrays (see the module docstring).

    `options` None means the job's own SLURM options (command line >
    SP_SLURM_* > init() > site config), read when a module runs. SLURM options
    may also be given as keywords (`SlurmLauncher(nodes=1, partition="gpu")`):
    they change `options`, or the job's options when `options` is None.
    `max_parallel` caps how many elements run at once (the array's %T),
    `max_retries` defaults to the job's --max-retries, `poll_interval` to the
    options' poll_interval. `max_requeues` bounds how many times an element of
    a module that defines checkpoint() is requeued within one attempt
    (default: the max_num_timeout of its stopes Requirements, else 3).
    `config(partition=..., time=...)` changes SLURM options; other keys change
    the launcher's own settings. A SLURM option given as None (a config file's
    `partition: null`) is left to the job's options.
    """

    keyword_options = OPTION_NAMES + tuple(OPTION_ALIASES)  # SLURM options it takes as keywords

    def __init__(self, priority: float = 0, options: Any = None, *, max_parallel: Optional[int] = None,
                 max_retries: Optional[int] = None, poll_interval: Optional[float] = None,
                 max_requeues: Optional[int] = None, cache: bool = True, cache_dir: Optional[str] = None,
                 tags: Sequence[str] = (), connector: Any = None, **slurm_options: Any) -> None:
        if isinstance(priority, (SlurmOptions, Mapping)) and options is None:
            priority, options = 0, priority  # SlurmLauncher(SlurmOptions(...)) reads as it looks
        super().__init__(priority, cache=cache, cache_dir=cache_dir, tags=tags, connector=connector)
        self.options = as_options(options)
        self.max_parallel = max_parallel
        self.max_retries = max_retries
        self.poll_interval = poll_interval
        self.max_requeues = max_requeues
        self._overrides: Dict[str, Any] = {}  # config() changes kept for the job's options, while options is None
        self._submitted: List[str] = []
        slurm_options = {k: v for k, v in slurm_options.items() if v is not None}
        if slurm_options:
            named = {option_name(k): v for k, v in slurm_options.items()}
            unknown = sorted(k for k in named if k not in OPTION_NAMES)
            if unknown:
                raise ConfigError(f"SlurmLauncher has no argument {', '.join(map(repr, unknown))}; SLURM options: "
                                  f"{', '.join(OPTION_NAMES)}; settings: max_parallel, max_retries, poll_interval, "
                                  "max_requeues, priority, cache, cache_dir, tags, connector")
            self._apply({k: option_value(k, v) for k, v in named.items()})
        self._check()

    def _apply(self, typed: Dict[str, Any]) -> None:
        """Change SLURM options: in `options`, or on top of the job's options while `options` is None."""
        if self.options is not None:
            self.options = self.options.with_(**typed)
        else:
            self._overrides = {**self._overrides, **typed}

    def _check(self) -> None:
        def whole(value: Any, low: int) -> bool:
            return value is None or isinstance(value, int) and not isinstance(value, bool) and value >= low

        if not whole(self.max_parallel, 1):
            raise ConfigError(f"max_parallel must be a whole number >= 1 (or None), got {self.max_parallel!r}")
        if not whole(self.max_retries, 0):
            raise ConfigError(f"max_retries must be a whole number >= 0 (or None), got {self.max_retries!r}")
        if not whole(self.max_requeues, 0):
            raise ConfigError(f"max_requeues must be a whole number >= 0 (or None), got {self.max_requeues!r}")
        p = self.poll_interval
        if p is not None and (isinstance(p, bool) or not isinstance(p, (int, float)) or not p > 0):
            raise ConfigError(f"poll_interval must be a number of seconds > 0 (or None), got {p!r}")

    @property
    def submitted(self) -> List[str]:
        """The SLURM job ids of every array this launcher submitted, in order."""
        return list(self._submitted)

    def config(self, **overrides: Any) -> "SlurmLauncher":
        """A copy with SLURM options (partition, time, ...) or launcher settings changed; the original is untouched."""
        changes = {option_name(k): v for k, v in overrides.items() if option_name(k) in OPTION_NAMES}
        settings = {k: v for k, v in overrides.items() if option_name(k) not in OPTION_NAMES}
        settable = sorted(k for k in vars(self) if not k.startswith("_"))
        unknown = sorted(k for k in settings if k not in settable)
        if unknown:
            raise ConfigError(f"SlurmLauncher has no setting {', '.join(map(repr, unknown))}; settable: "
                              f"{', '.join(settable)}; SLURM options: {', '.join(OPTION_NAMES)}")
        new = super().config(**settings)
        assert isinstance(new, SlurmLauncher)
        new._submitted = []
        if "options" in settings:
            new.options = as_options(settings["options"])
            new._overrides = {}
        if changes:
            new._apply({k: option_value(k, v) for k, v in changes.items()})
        new._check()
        return new

    def resolved_options(self, module: Any = None) -> SlurmOptions:
        """The options a run uses: its own (or the job's) options, config() changes, then the module's needs.

        A module's needs replace what only the site config said (its partition,
        time, ...), never what the user chose: this launcher's options and config()
        changes, the command line, SP_SLURM_* and init()."""
        soft: AbstractSet[str] = frozenset()
        signal: Optional[int] = None
        if self.options is not None:
            options = self.options
        else:
            from mpipipe.config import SLURM_DEFAULTS
            from mpipipe.platform.slurm_options import SITE_KEYS, default_site_config, read_site_config, resolve

            config = context.current().config()
            options = resolve(config)
            chosen = {name for name in SITE_KEYS if getattr(config, f"slurm_{name}") is not None}
            soft = frozenset(SITE_KEYS) - chosen - set(self._overrides)
            if module is not None and "signal" in soft:
                explicit = config.slurm_config is not None
                site = read_site_config(config.slurm_config if explicit else default_site_config(), explicit)
                signal = site.get("signal", SLURM_DEFAULTS["signal"])
        if self._overrides:
            options = options.with_(**self._overrides)
        if module is not None:
            options = fill_from_requirements(options, module.requirements(),
                                             f"module {module.name()!r}: requirements()", soft, signal)
        return options

    def submission_options(self, module: Any) -> SlurmOptions:
        """What the arrays of `module` are submitted with: resolved_options(module), SLURM's requeue off unless
        the module can checkpoint."""
        # without a checkpoint a run restarts from scratch, so one that always outlives --time would loop
        # forever: timed-out, preempted or lost elements are then this launcher's retries, bounded by max_retries.
        # With one, a requeued element continues (and shard_main bounds the requeues by max_requeues)
        return self.resolved_options(module).with_(requeue=can_checkpoint(module))

    def requeue_limit(self, module: Any) -> Optional[int]:
        """How many requeues an element of `module` may have within one attempt (None: it cannot checkpoint)."""
        if not can_checkpoint(module):
            return None
        if self.max_requeues is not None:
            return self.max_requeues
        limit = getattr(module.requirements(), "max_num_timeout", None)
        return limit if isinstance(limit, int) and not isinstance(limit, bool) and limit >= 0 else 3

    def describe(self) -> str:
        try:
            partition = self.resolved_options().partition
        except MpipipeError:
            partition = None
        return f"slurm (partition {partition})" if partition else "slurm (default partition)"

    async def run_shards(self, job: ShardJob) -> List[ShardFailure]:
        from mpipipe.platform.slurm_array import ElementResult, SlurmArray
        config = context.current().config()
        options = self.submission_options(job.module)
        retries = config.max_retries if self.max_retries is None else self.max_retries
        interval = self.poll_interval or options.poll_interval
        work = _new_work_dir(os.path.join(config.data_root, str(config.job_id), "slurm-modules"), job.label)
        spec = os.path.join(work, "spec.pkl")
        write_spec(spec, job, self.requeue_limit(job.module))
        env = {"PYTHONPATH": os.pathsep.join(p for p in (_package_parent(), os.environ.get("PYTHONPATH")) if p)}
        comment = " ".join(str(job.module.comment() or "").split()) or None
        todo = list(range(len(job.shards)))  # positions in job.shards still to run
        attempts = [0] * len(job.shards)
        last: Dict[int, Tuple[ElementResult, str]] = {}
        arrays: List[SlurmArray] = []
        max_size: Optional[int] = None
        try:
            for attempt in range(retries + 1):
                for p in todo:  # an earlier run's error is not this attempt's answer
                    try:
                        os.unlink(error_path(job.paths[p]))
                    except FileNotFoundError:
                        pass
                folder = os.path.join(work, f"attempt-{attempt + 1}")
                os.makedirs(folder)
                positions = os.path.join(folder, "positions.json")
                with open(positions, "w") as f:
                    json.dump(todo, f)
                array = SlurmArray([sys.executable, "-m", ENTRY_MODULE, spec, positions], len(todo), folder,
                                   options=options, throttle=self.max_parallel, max_array_size=max_size, env=env,
                                   job_name=job.label, comment=comment)
                arrays.append(array)
                if attempt:
                    say(f"module {job.label}: running {len(todo)} failed run(s) again (attempt {attempt + 1} of "
                        f"{retries + 1})")
                array.submit()
                max_size = array.max_array_size
                self._submitted.extend(c.job_id for c in array.chunks)
                await self._wait(array, interval, job.label)
                failed = []
                for i, p in enumerate(todo):
                    attempts[p] += 1
                    result = array.result(i)
                    if result.code != 0 or not os.path.exists(job.paths[p]):
                        failed.append(p)
                        last[p] = (result, _log_path(array, i))
                todo = failed
                if not todo:
                    break
        except BaseException:
            ids = [c.job_id for a in arrays for c in a.chunks]
            if ids:  # nobody waits for them any more (Ctrl-C, a cancelled gather, squeue failing)
                say(f"module {job.label}: cancelling SLURM job(s) {', '.join(ids)} (scancel)")
                for a in arrays:
                    try:
                        a.cancel()
                    except MpipipeError as e:
                        say(f"module {job.label}: {e}")
            raise
        return [self._failure(job, p, attempts[p], *last[p]) for p in todo]

    async def _wait(self, array: Any, interval: float, label: str) -> None:
        """Until no element is pending or running; squeue runs in a thread, the sleep is asyncio's."""
        import asyncio

        from mpipipe.platform.slurm_commands import ACTIVE_STATES

        shown = time.monotonic()
        while True:
            states = await asyncio.to_thread(array.states)
            active = [s for s in states.values() if s in ACTIVE_STATES]
            if not active:
                return
            if time.monotonic() - shown >= PROGRESS_EVERY:
                running = sum(s == "RUNNING" for s in active)
                say(f"module {label}: {array.count - len(active)} of {array.count} element(s) ended, {running} "
                    f"running, {len(active) - running} pending")
                shown = time.monotonic()
            await asyncio.sleep(interval)

    @staticmethod
    def _failure(job: ShardJob, p: int, attempts: int, result: Any, log: str) -> ShardFailure:
        shard, path = job.shards[p], job.paths[p]
        error, tb = read_error(path)
        log = log if log and os.path.exists(log) else ""
        if not error:
            if result.code is None:
                error = f"it ended without an exit code (SLURM state {result.state})"
            elif result.code != 0:
                error = f"it exited with code {result.code} (SLURM state {result.state})"
            else:
                error = f"it exited with code 0 but wrote no result to {path}"
            tail = _tail(log) if log else ""
            tb = f"last lines of its SLURM log:\n{tail}" if tail.strip() else ""
        return ShardFailure(shard.index, shard.value, error, tb, log, attempts)

    def __repr__(self) -> str:
        o = self.options
        where = "the job's SLURM options" if o is None else f"partition {o.partition or 'default'}"
        return f"<SlurmLauncher priority={self.priority} {where}>"
