"""The job's context as the entry points set it, handed to what runs below them.

The entry points (a Driver parsing its command line, `mpipipe.init()`, an
experiment) set it; launchers, references, the result cache and the futures
face take it from here when their caller did not pass a config of its own. It
is one immutable value replaced as a whole, so what a reader gets is always
consistent: command line > SP_* > init() > defaults, and the default job id
named by the script's own arguments.
"""
from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass, field
from typing import Any, Dict, Sequence, Tuple

from mpipipe.config import JobConfig, build_config
from mpipipe.jobdir import default_job_id


@dataclass(frozen=True)
class JobContext:
    command_line: Dict[str, Any] = field(default_factory=dict)  # mpipipe's flags that were given
    init: Dict[str, Any] = field(default_factory=dict)  # init()'s options
    user_args: Dict[str, Any] = field(default_factory=dict)  # the script's own flags: they name the job
    launcher_overrides: Tuple[str, ...] = ()  # --set KEY=VALUE, for launcher configs
    from_driver: bool = False  # a Driver parsed the command line (with the script's flags): init() leaves it

    def config(self) -> JobConfig:
        """The job's config: command line > SP_* > init() > defaults."""
        config = build_config(dict(self.command_line), init=dict(self.init))
        if not config.job_id:
            config = config.with_(job_id=default_job_id(dict(self.user_args)))
        return config


_lock = threading.Lock()
_current = JobContext()


def current() -> JobContext:
    return _current


def update(**changes: Any) -> JobContext:
    """Replace parts of the context (entry points only); returns the new one."""
    global _current
    with _lock:
        _current = dataclasses.replace(_current, **changes)
        return _current


def init_options() -> Dict[str, Any]:
    """init()'s options, a copy."""
    return dict(_current.init)


def use_command_line(builtins: Dict[str, Any], user_args: Dict[str, Any],
                     launcher_overrides: Sequence[str] = ()) -> None:
    """A Driver parsed its command line: launchers made afterwards use those flags too."""
    update(command_line=dict(builtins), user_args=dict(user_args), launcher_overrides=tuple(launcher_overrides),
           from_driver=True)
