"""`mpipipe.init()`: the programmatic layer of configuration, and the DataFrame session it returns.

What init() and a Driver learn (init()'s options, mpipipe's flags, the script's
own flags, --set overrides) goes into the job's context (mpipipe.context), which
is what launchers, references and the result cache read below this layer.
"""
from __future__ import annotations

import sys
from typing import Any, Dict, List, Optional

from mpipipe import context
from mpipipe.context import init_options, use_command_line  # noqa: F401  (the session's face: Driver sets these)
from mpipipe.config import JobConfig, check_names
from mpipipe.console import install_error_hook
from mpipipe.dataframe import DataFrameSession
from mpipipe.errors import MpipipeError
from mpipipe.logical.plan import Context


def launcher_overrides() -> List[str]:
    """The --set KEY=VALUE flags of the command line (kept apart from JobConfig: they are not job options)."""
    return list(context.current().launcher_overrides)


def current_config() -> JobConfig:
    """The job's config as launchers and executors see it: command line > SP_* > init() > defaults."""
    return context.current().config()


class Session(DataFrameSession):
    """What init() returns: the merged config, the DataFrame readers, and run() for hand-built plans.

    Every DataFrame of a session lives in one Context, and every action runs in
    the session's job directory, so an action reuses what earlier ones computed.
    """

    def __init__(self, options: Dict[str, Any]) -> None:
        self.options = options
        self.ctx = Context()

    @property
    def config(self) -> JobConfig:
        """command line > SP_* > init() > defaults, with the default job id named by the script's arguments."""
        return context.JobContext(context.current().command_line, self.options, context.current().user_args).config()

    def run(self, plan: Any, launchers: Optional[Dict[str, Any]] = None) -> Any:
        """Run a plan (rank 0 returns its JobResult; executor ranks serve and exit); `launchers` as in
        Driver.run."""
        from mpipipe.jobmanager import JobManager, report_error
        from mpipipe.launchers.plan_steps import step_launchers
        from mpipipe.logical.intermediates import choose_intermediates

        job = context.current()
        debug = bool(job.command_line.get("debug"))
        try:
            config = self.config
            debug = config.debug
            choose_intermediates(plan, config.shuffle_format)
            return JobManager(config, dict(job.user_args)).run(plan, step_launchers(launchers))
        except MpipipeError as e:
            report_error(e, debug)

    def execute(self, plan: Any, launchers: Optional[Dict[str, Any]] = None) -> Any:
        """Run a plan as run() does, but let its error reach the caller: a DataFrame action that fails raises
        where smallpond raised (an error nobody catches still prints as one line and sets the exit code)."""
        from mpipipe.jobmanager import JobManager
        from mpipipe.launchers.plan_steps import step_launchers
        from mpipipe.logical.intermediates import choose_intermediates

        config = self.config
        choose_intermediates(plan, config.shuffle_format)
        return JobManager(config, dict(context.current().user_args)).run(plan, step_launchers(launchers))

    @property
    def job_dir(self) -> str:
        """The session's job directory (made, owner-only, on first use): what every action runs in."""
        from mpipipe.jobdir import default_job_id, prepare_job_dir

        config = self.config
        return prepare_job_dir(config, config.job_id or default_job_id(dict(context.current().user_args)))

    @property
    def output_root(self) -> str:
        """A folder of the job directory for the script's own outputs (`<job dir>/output`, made on first use);
        mpipipe never writes or removes anything there."""
        import os

        path = os.path.join(self.job_dir, "output")
        os.makedirs(path, mode=0o700, exist_ok=True)
        return path

    @property
    def runtime_ctx(self) -> Any:
        """smallpond's view of the session: a RuntimeContext whose `output_root` is this session's."""
        from mpipipe.execution.task import RuntimeContext

        rc = RuntimeContext(job_id=None, data_root=self.config.data_root)
        rc.job_root = self.job_dir
        return _SessionRuntime(rc, self.output_root)

    _runtime_ctx = runtime_ctx  # the private name smallpond's own tests read

    def shutdown(self) -> None:
        """Stop this process's executors now (they also stop at exit). Local executors start again for a later
        action; the ranks of an MPI world leave for good, so call it last there."""
        from mpipipe.jobmanager import shutdown

        shutdown()


class _SessionRuntime:
    """A RuntimeContext whose output_root is the session's output folder."""

    def __init__(self, rc: Any, output_root: str) -> None:
        self._rc = rc
        self.output_root = output_root

    def __getattr__(self, name: str) -> Any:
        return getattr(self._rc, name)


def init(platform: Optional[str] = None, **options: Any) -> Session:
    """Set job options in code (platform, num_executors, data_root, ...).

    The command line and SP_* environment variables still win over these.
    Unknown option names are rejected with the list of valid ones. The
    returned Session reads data (read_parquet, from_pandas, ...) into lazy
    DataFrames.
    """
    # a script that uses only the DataFrame API makes no Driver: an MpipipeError raised while it
    # builds frames (a path that matches nothing, a bad column, this call) prints as one line too
    install_error_hook()
    from mpipipe.notebook import in_notebook

    if not context.current().from_driver and not in_notebook():  # a kernel's argv is the kernel's own
        _read_command_line(sys.argv[1:])
    if platform is not None:
        options["platform"] = platform
    _smallpond_keywords(options)
    check_names(options, "init()")
    context.update(init=dict(options))
    session = Session(dict(options))
    _check(session)
    from mpipipe.jobmanager import start_executors_early

    start_executors_early(session.config)  # they boot while the script reads its data and builds frames
    return session


# smallpond's init() keywords that mean nothing here (value: smallpond's default, which says nothing)
NO_EFFECT_KEYWORDS: Dict[str, Any] = {
    "ray_address": "mpipipe does not use Ray", "job_time": "a job is named by its id alone",
    "bind_numa_node": "executors are not bound to NUMA nodes", "memory_allocator": "tasks use Python's allocator",
    "_remove_output_root": "the session's output folder is the script's own"}
_NO_EFFECT_DEFAULTS: Dict[str, Any] = {"_remove_output_root": True, "bind_numa_node": False}


def _smallpond_keywords(options: Dict[str, Any]) -> None:
    """smallpond's spellings: job_name names the job (its id, unless job_id is given: then SLURM's job name);
    the keywords without a meaning here are taken out, with a one-line warning when they ask for something."""
    import logging

    name = options.pop("job_name", None)
    if name is not None:
        options.setdefault("slurm_job_name" if options.get("job_id") is not None else "job_id", str(name))
    for key, why in NO_EFFECT_KEYWORDS.items():
        if key in options:
            value = options.pop(key)
            if value is not None and value != _NO_EFFECT_DEFAULTS.get(key):
                from mpipipe.console import ensure_terminal

                ensure_terminal()
                logging.getLogger("mpipipe.session").warning("init(%s=%r) has no effect: %s", key, value, why)


def _read_command_line(argv: List[str]) -> None:
    """mpipipe's own flags from the script's command line, as a Driver would read them; the rest stays the
    script's (and names the default job id)."""
    from mpipipe.flags import parse_known

    builtins, overrides, rest = parse_known(argv)
    context.update(command_line=builtins, user_args={"argv": rest} if rest else {},
                   launcher_overrides=tuple(overrides))


def _check(session: Session) -> None:
    """Bad options and an unknown platform fail here, at init(), not silently later (exit 2, one line)."""
    from mpipipe.platform.registry import load_platform

    config = session.config
    if config.platform:
        load_platform(config.platform)
