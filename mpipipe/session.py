"""`mpipipe.init()`: the programmatic layer of configuration, and the DataFrame session it returns."""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

import sys

from mpipipe.config import JobConfig, build_config, check_names
from mpipipe.console import install_error_hook
from mpipipe.dataframe import DataFrameSession
from mpipipe.errors import MpipipeError
from mpipipe.logical.node import Context

_INIT: Dict[str, Any] = {}
_CLI: Dict[str, Any] = {}  # mpipipe's flags from the command line (a Driver's, or init()'s parse)
_USER_ARGS: Dict[str, Any] = {}  # and the script's own flags, which name the default job id
_LAUNCHER_OVERRIDES: List[str] = []
_PARSED_BY_DRIVER = False  # a Driver's parse of the command line (with the script's flags) wins over init()'s  # its --set KEY=VALUE flags, for mpipipe.launchers.from_config()


def init_options() -> Dict[str, Any]:
    return dict(_INIT)


def use_command_line(builtins: Dict[str, Any], user_args: Dict[str, Any],
                     launcher_overrides: Sequence[str] = ()) -> None:
    """A Driver parsed its command line: launchers made afterwards use those flags too."""
    global _PARSED_BY_DRIVER
    _PARSED_BY_DRIVER = True
    _CLI.clear()
    _CLI.update(builtins)
    _USER_ARGS.clear()
    _USER_ARGS.update(user_args)
    _LAUNCHER_OVERRIDES[:] = list(launcher_overrides)


def launcher_overrides() -> List[str]:
    """The --set KEY=VALUE flags of the command line (kept apart from JobConfig: they are not job options)."""
    return list(_LAUNCHER_OVERRIDES)


def current_config() -> JobConfig:
    """The job's config as launchers and executors see it: command line > SP_* > init() > defaults."""
    from mpipipe.jobdir import default_job_id

    config = build_config(dict(_CLI), init=init_options())
    if not config.job_id:
        config = config.with_(job_id=default_job_id(dict(_USER_ARGS)))
    return config


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
        config = build_config(dict(_CLI), init=self.options)
        if not config.job_id:
            from mpipipe.jobdir import default_job_id

            config = config.with_(job_id=default_job_id(dict(_USER_ARGS)))
        return config

    def run(self, plan: Any, launchers: Optional[Dict[str, Any]] = None) -> Any:
        """Run a plan (rank 0 returns its JobResult; executor ranks serve and exit); `launchers` as in
        Driver.run."""
        from mpipipe.jobmanager import JobManager, report_error

        debug = bool(_CLI.get("debug"))
        try:
            config = self.config
            debug = config.debug
            return JobManager(config, dict(_USER_ARGS)).run(plan, launchers)
        except MpipipeError as e:
            report_error(e, debug)


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
    if not _PARSED_BY_DRIVER:
        _read_command_line(sys.argv[1:])
    if platform is not None:
        options["platform"] = platform
    check_names(options, "init()")
    _INIT.clear()
    _INIT.update(options)
    session = Session(dict(options))
    _check(session)
    return session


def _read_command_line(argv: List[str]) -> None:
    """mpipipe's own flags from the script's command line, as a Driver would read them; the rest stays the
    script's (and names the default job id)."""
    from mpipipe.flags import parse_known

    builtins, overrides, rest = parse_known(argv)
    _CLI.clear()
    _CLI.update(builtins)
    _USER_ARGS.clear()
    if rest:
        _USER_ARGS["argv"] = rest
    _LAUNCHER_OVERRIDES[:] = overrides


def _check(session: Session) -> None:
    """Bad options and an unknown platform fail here, at init(), not silently later (exit 2, one line)."""
    from mpipipe.platform.registry import load_platform

    config = session.config
    if config.platform:
        load_platform(config.platform)
