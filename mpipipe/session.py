"""`mpipipe.init()`: the programmatic layer of configuration, below CLI and environment."""
from __future__ import annotations

from typing import Any, Dict, Optional

from mpipipe.config import JobConfig, build_config, check_names
from mpipipe.errors import MpipipeError

_INIT: Dict[str, Any] = {}


def init_options() -> Dict[str, Any]:
    return dict(_INIT)


class Session:
    """The handle init() returns: the merged config, and run() for plans built without a Driver."""

    def __init__(self, options: Dict[str, Any]) -> None:
        self.options = options

    @property
    def config(self) -> JobConfig:
        return build_config({}, init=self.options)

    def run(self, plan: Any) -> Any:
        from mpipipe.jobmanager import JobManager, report_error

        config = self.config
        try:
            return JobManager(config).run(plan)
        except MpipipeError as e:
            report_error(e, config.debug)


def init(platform: Optional[str] = None, **options: Any) -> Session:
    """Set job options in code (platform, num_executors, data_root, ...).

    The command line and SP_* environment variables still win over these.
    Unknown option names are rejected with the list of valid ones.
    """
    if platform is not None:
        options["platform"] = platform
    check_names(options, "init()")
    _INIT.clear()
    _INIT.update(options)
    return Session(dict(options))
