"""find_launcher(): the user's own launchers.py decides where work with given needs runs.

Which clusters, partitions and accounts exist is knowledge of the user's site,
not of a script, so it lives in one file in the config directory:
$MPIPIPE_CONFIG_DIR/launchers.py, else $XDG_CONFIG_HOME/mpipipe/launchers.py
(XDG_CONFIG_HOME defaults to ~/.config). It defines::

    def find_launcher(requirements, tags):
        # requirements: a parsed HostRequirement (or None); tags: a tuple of strings
        return a Launcher, or None when nothing fits
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
from types import ModuleType
from typing import Any, Dict, Iterable, Optional, Tuple, Union

from mpipipe.errors import ConfigError
from mpipipe.launchers.base import Launcher
from mpipipe.resources import requirement_of

CONFIG_DIR_VAR = "MPIPIPE_CONFIG_DIR"
FILE_NAME = "launchers.py"

_LOADED: Dict[str, Tuple[Tuple[int, int], ModuleType]] = {}  # path -> ((mtime_ns, size), module)


def candidate_paths() -> Tuple[Optional[str], str]:
    """($MPIPIPE_CONFIG_DIR/launchers.py or None when unset, $XDG_CONFIG_HOME/mpipipe/launchers.py)."""
    own = os.environ.get(CONFIG_DIR_VAR)
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    xdg = os.path.join(base, "mpipipe", FILE_NAME)
    return (os.path.join(os.path.expanduser(own), FILE_NAME) if own else None), xdg


def launchers_file() -> str:
    """The launchers.py in use; a ConfigError naming both places when there is none."""
    own, xdg = candidate_paths()
    path = own or xdg
    if os.path.isfile(path):
        return path
    if own:
        raise ConfigError(f"no {FILE_NAME} at {own} (${CONFIG_DIR_VAR} is set; without it {xdg} would be read); "
                          "create it with a find_launcher(requirements, tags) function")
    raise ConfigError(f"no {FILE_NAME} at {xdg}; create it with a find_launcher(requirements, tags) function, or "
                      f"set ${CONFIG_DIR_VAR} to a folder holding one (read as ${CONFIG_DIR_VAR}/{FILE_NAME})")


def load_launchers_module(path: str) -> ModuleType:
    """The module of a launchers.py, loaded again only when the file changed (mtime or size)."""
    stat = os.stat(path)
    stamp = (stat.st_mtime_ns, stat.st_size)
    cached = _LOADED.get(path)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    # not put in sys.modules: cloudpickle then sends the classes it defines by value to other processes
    name = "mpipipe_user_launchers_" + hashlib.sha256(path.encode()).hexdigest()[:12]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"cannot load {path} as Python; check that it is a .py file")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except SyntaxError as e:
        raise ConfigError(f"{path} has a syntax error at line {e.lineno}: {e.msg}; fix it") from None
    _LOADED[path] = (stamp, module)
    return module


def find_launcher(requirements: Any, tags: Union[str, Iterable[str]] = (), required: bool = True) -> Optional[Launcher]:
    """The Launcher the user's launchers.py picks for `requirements` (a requirement string, a parsed
    requirement, a Resources or resource dict, or None) and `tags`.

    When its find_launcher() returns None: a ConfigError, or None with required=False.
    """
    path = launchers_file()
    function = getattr(load_launchers_module(path), "find_launcher", None)
    if not callable(function):
        raise ConfigError(f"{path} defines no find_launcher(requirements, tags) function; add one that returns a "
                          "Launcher, or None when nothing fits")
    parsed = requirement_of(requirements, "find_launcher() requirements")
    tag_tuple = (tags,) if isinstance(tags, str) else tuple(tags)
    launcher = function(parsed, tag_tuple)
    if launcher is None:
        if not required:
            return None
        shown = f" (tags {', '.join(tag_tuple)})" if tag_tuple else ""
        raise ConfigError(f"no launcher in {path} fits {parsed if parsed is not None else 'no requirements'}"
                          f"{shown}; add a case to its find_launcher()")
    if not isinstance(launcher, Launcher):
        raise ConfigError(f"find_launcher() in {path} returned a {type(launcher).__name__}, not a mpipipe "
                          "Launcher or None; fix what it returns")
    return launcher
