"""mpipipe's command-line flags, declared once for the Driver and for scripts that only call init().

Built-in flags are long options only, so every short option stays free for
the user's script. The SLURM flags (--partition, --time, ...) are added at
parse time, each as --<name> and --slurm-<name>: a script that defines its own
--time keeps it, and --slurm-time still reaches SLURM. --help shows them only
with --platform slurm; --help-all always.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Dict, List, NoReturn, Optional, Sequence, Set, Tuple

from mpipipe.config import option_fields

GROUP_TITLE = "mpipipe options (each also settable as SP_<NAME>, e.g. SP_PLATFORM)"

_FIELDS = [f for f in option_fields() if f.metadata["flag"]]
_SLURM_GROUP = ("slurm", "slurm_config", "detach")  # kinds of the flags shown in the SLURM group

# the dests of mpipipe's flags: the job options, then the SLURM group's
BUILTIN_FLAGS = tuple(f.name for f in _FIELDS if f.metadata["kind"] not in _SLURM_GROUP)
SLURM_DESTS = tuple(f.name for f in _FIELDS if f.metadata["kind"] in _SLURM_GROUP)
# (name, metavar, type, help) of the SLURM flags that also have a short --<name>
SLURM_FLAGS = tuple((f.name[len("slurm_"):].replace("_", "-"), f.metadata["metavar"],
                     int if f.metadata["slurm_kind"] == "count" else str, f.metadata["help"])
                    for f in _FIELDS if f.metadata["kind"] == "slurm" and f.metadata["short"])

_TYPES = {"count": int, "count0": int, "seconds": float, "interval": float}


def _add(g: Any, names: List[str], f: Any) -> argparse.Action:
    """One flag from its option's declaration (mpipipe.config.JobConfig)."""
    meta = f.metadata
    kind = meta["slurm_kind"] if meta["kind"] == "slurm" else meta["kind"]
    kw: Dict[str, Any] = {"dest": f.name, "default": None, "help": meta["help"]}
    if kind in ("bool", "detach") and meta.get("action") != "optional":
        kw["action"] = "store_true"
    elif meta.get("action") == "optional":
        kw["action"] = argparse.BooleanOptionalAction
    else:
        if meta.get("action") == "append":
            kw["action"] = "append"
        if meta.get("metavar"):
            kw["metavar"] = meta["metavar"]
        if meta.get("choices"):
            kw["type"], kw["choices"] = str.upper, list(meta["choices"])
        elif meta["kind"] == "slurm" and kind == "seconds":
            kw["type"] = int
        elif kind in _TYPES:
            kw["type"] = _TYPES[kind]
    action: argparse.Action = g.add_argument(*names, **kw)
    return action


def add_builtin_flags(g: Any) -> None:
    """mpipipe's own job options, into an argparse parser or argument group."""
    for f in _FIELDS:
        if f.name in BUILTIN_FLAGS:
            _add(g, ["--" + f.name.replace("_", "-")], f)


def add_set_flag(g: Any) -> None:
    """--set KEY=VALUE: overrides for launcher configs built with mpipipe.launchers.from_config()."""
    g.add_argument("--set", dest="launcher_overrides", action="append", default=None,
                   metavar="KEY=VALUE",
                   help="override a value of the launcher configs built with "
                        "mpipipe.launchers.from_config(), e.g. --set launchers.0.priority=3 or "
                        "--set options.partition=gpu; VALUE is read as JSON if it parses, else as "
                        "text (repeatable)")


def add_slurm_flags(parser: argparse.ArgumentParser, taken: Set[str]) -> None:
    """The SLURM group, added last so that the script's own flags (in `taken`) win a short name (--time...).

    Its ~20 flags are left out of --help (and of the usage line) unless --help-all asks, or --platform slurm is
    on the command line: a local run's help stays short."""
    g = parser.add_argument_group(
        "SLURM options (--platform slurm; each also SP_SLURM_<NAME>, or <name> in the site config file "
        "~/.config/mpipipe/slurm.toml)")
    for f in _FIELDS:
        if f.name not in SLURM_DESTS:
            continue
        base = f.name[len("slurm_"):] if f.name.startswith("slurm_") else f.name
        long_name = "--" + base.replace("_", "-")
        names = [f"--slurm-{base.replace('_', '-')}"]
        if f.metadata.get("short") or f.metadata["kind"] == "detach":
            names = [long_name] + names
        action = _add(g, [n for n in names if n not in taken], f)
        action._mpipipe_help = action.help  # type: ignore[attr-defined]
        action.help = argparse.SUPPRESS


def show_slurm_flags(parser: argparse.ArgumentParser) -> None:
    """Put the SLURM group back into the parser's help."""
    for action in parser._actions:
        if hasattr(action, "_mpipipe_help"):
            action.help = action._mpipipe_help


def slurm_on_command_line(argv: Sequence[str]) -> bool:
    """--platform slurm (or SP_PLATFORM=slurm): the user runs on SLURM, so its flags belong in the help."""
    for k, arg in enumerate(argv):
        if arg == "--platform=slurm" or (arg == "--platform" and argv[k + 1:k + 2] == ["slurm"]):
            return True
    return os.environ.get("SP_PLATFORM") == "slurm"


class _Help(argparse.Action):
    """-h/--help: mpipipe's job options, the SLURM group only for --platform slurm; --help-all: every flag."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS,
                 default: Any = argparse.SUPPRESS, help: Optional[str] = None, everything: bool = False) -> None:
        super().__init__(option_strings, dest, nargs=0, default=default, help=help)
        self.everything = everything

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: Optional[str] = None) -> None:
        if self.everything or getattr(namespace, "platform", None) == "slurm" or slurm_on_command_line(sys.argv[1:]):
            show_slurm_flags(parser)
        parser.print_help()
        parser.exit()


def builtin_parser(add_help: bool = True, description: Optional[str] = None) -> argparse.ArgumentParser:
    """A parser with mpipipe's job options in their group (the SLURM group and --set come at parse time)."""
    parser = argparse.ArgumentParser(description=description, allow_abbrev=False, add_help=False)
    if add_help:
        parser.add_argument("-h", "--help", action=_Help,
                            help="show this help message and exit (the SLURM options too with --platform slurm)")
        parser.add_argument("--help-all", action=_Help, everything=True,
                            help="show this help with the SLURM options and exit")
    add_builtin_flags(parser.add_argument_group(GROUP_TITLE))
    return parser


def parse_known(argv: Sequence[str]) -> Tuple[Dict[str, Any], List[str], List[str]]:
    """mpipipe's flags out of a command line that also carries a script's own flags.

    Returns (the built-in options that were given, the --set overrides, the rest of argv
    untouched). A bad value of one of mpipipe's flags exits 2 with argparse's message;
    flags mpipipe does not know are left for the script.
    """
    parser = builtin_parser(add_help=False)
    parser.error = _one_line_error  # type: ignore[method-assign]
    add_set_flag(parser)
    add_slurm_flags(parser, set())
    ns, rest = parser.parse_known_args(list(argv))
    values = vars(ns)
    builtins = {k: values[k] for k in BUILTIN_FLAGS + SLURM_DESTS if values.get(k) is not None}
    return builtins, list(values.get("launcher_overrides") or ()), rest


def _one_line_error(message: str) -> NoReturn:
    """A bad value of one of mpipipe's flags, in a script whose usage line mpipipe does not know."""
    from mpipipe.console import error_line

    error_line(f"{message} (see the mpipipe options in the README, or a Driver script's --help)")
    raise SystemExit(2)
