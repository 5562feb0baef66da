"""Launchers (and platforms) described as data: a mapping with a `_target_` class path.

This lets a TOML/JSON/YAML file or a Hydra config say where modules run, and
`--set key.path=value` change it from the command line without editing code::

    _target_ = "mpipipe.launchers:DynamicLauncher"
    sample = true
    [[launchers]]
    _target_ = "mpipipe.launchers:DirectLauncher"
    priority = 1

Every other key of a mapping is a keyword argument; nested mappings with a
`_target_` (also inside lists) are built first, depth first.
"""
from __future__ import annotations

import inspect
import json
import sys
import os
from collections.abc import Mapping, Sequence
from typing import Any, Dict, Iterable, List, Optional, Union

from mpipipe.errors import ConfigError
from mpipipe import context

TARGET = "_target_"
_EXAMPLE = '_target_ = "mpipipe.launchers:DirectLauncher"'


# --- plain data and overrides ------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """Fresh dicts and lists from any mapping/sequence (an OmegaConf DictConfig, a tuple...); leaves are shared."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes, bytearray)):
        return [_plain(v) for v in value]
    return value


def _join(path: str, key: Any) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


def parse_value(text: str) -> Any:
    """An override's value: JSON if it parses (3, true, null, [1, 2], {"a": 1}), else the text itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _step(node: Any, part: str, where: str, item: str) -> Any:
    """The child `part` of a mapping or list, for an override's path; errors say what exists there."""
    shown = where or "the top level"
    if isinstance(node, dict):
        if part not in node:
            keys = ", ".join(sorted(map(str, node))) or "none"
            raise ConfigError(f"override {item!r}: no key {part!r} at {shown} (keys there: {keys}); check the "
                              "key path")
        return node[part]
    if isinstance(node, list):
        if not part.isdigit() or int(part) >= len(node):
            raise ConfigError(f"override {item!r}: {shown} is a list of {len(node)}; use an index "
                              f"0..{len(node) - 1} instead of {part!r}")
        return node[int(part)]
    raise ConfigError(f"override {item!r}: {shown} is a value ({node!r}), not a mapping or list; shorten the key "
                      "path")


def apply_overrides(spec: Any, overrides: Iterable[str]) -> Dict[str, Any]:
    """A copy of `spec` with each "a.b.c=value" set; list items are addressed by index (launchers.0.priority).

    A new key may be added to an existing mapping (a keyword argument left at its default), but every
    mapping or list on the way must already exist, so that a misspelt path is an error.
    """
    data = _plain(spec)
    if not isinstance(data, dict):
        raise ConfigError(f"a launcher config is a mapping with a {TARGET} key, got {type(spec).__name__}")
    for item in overrides:
        key, sep, text = str(item).partition("=")
        key = key.strip()
        parts = key.split(".")
        if not sep or not key or not all(parts):
            raise ConfigError(f"override {item!r} is not KEY=VALUE; write it as --set a.b.c=value")
        node: Any = data
        where = ""
        for part in parts[:-1]:
            parent = node
            node = _step(parent, part, where, item)
            where = _join(where, int(part) if isinstance(parent, list) else part)
        last = parts[-1]
        if isinstance(node, dict):
            node[last] = parse_value(text)
        elif isinstance(node, list):
            _step(node, last, where, item)  # checks the index
            node[int(last)] = parse_value(text)
        else:
            raise ConfigError(f"override {item!r}: {where or 'the top level'} is a value ({node!r}), not a "
                              "mapping or list; shorten the key path")
    return data


# --- building ----------------------------------------------------------------------------------------------


def _import_target(target: str, where: str) -> Any:
    """The object named by "pkg.mod:Name" or "pkg.mod.Name" (Name may be dotted: Outer.Inner)."""
    from mpipipe.module import locate_target

    return locate_target(target, where)


def _text(value: Any, where: str) -> str:
    """A platform option as text: strings as they are, anything else as JSON."""
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        raise ConfigError(f"launcher config {where}: a platform option must be plain data (text, number, list, "
                          f"mapping), got a {type(value).__name__}") from None


def _build_platform(cls: type, kwargs: Dict[str, Any], target: str, where: str) -> Any:
    """A Platform from the job's config: JobConfig fields among the keys replace the job's values, and
    every other key joins `platform_options` (as text, as SP_PLATFORM_OPTIONS gives them) for it to read."""
    from mpipipe.config import OPTION_NAMES, convert_option
    config = context.current().config()
    fields: Dict[str, Any] = {"platform": target}
    extra = dict(config.platform_options)
    for key, value in kwargs.items():
        if key == "platform_options":
            if not isinstance(value, Mapping):
                raise ConfigError(f"launcher config {_join(where, key)} must be a mapping, got {value!r}")
            extra.update({str(k): _text(v, _join(_join(where, key), k)) for k, v in value.items()})
        elif key in OPTION_NAMES:
            fields[key] = convert_option(key, value, f"launcher config {_join(where, key)}")
        else:
            extra[key] = _text(value, _join(where, key))
    return cls(config.with_(platform_options=tuple(sorted(extra.items())), **fields))


def _keywords(obj: Any) -> Optional[List[str]]:
    """The keyword names a class accepts, following `**kwargs` up its __init__ chain (as Launcher
    subclasses pass them on); None when it accepts any name or cannot be inspected."""
    names: List[str] = []
    for cls in obj.__mro__:
        if "__init__" not in vars(cls):
            continue
        try:
            params = list(inspect.signature(cls.__init__).parameters.values())[1:]  # without self
        except (TypeError, ValueError):
            return None
        names += [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in names]
        if not any(p.kind == p.VAR_KEYWORD for p in params):
            return names
    return None


def _check_keywords(obj: Any, kwargs: Dict[str, Any], target: str, where: str) -> None:
    """A wrong or missing keyword is a ConfigError naming the target and where it is, before any call."""
    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError):  # some builtins have none: let the call decide
        return
    takes = [p.name for p in signature.parameters.values() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    try:
        signature.bind(**kwargs)
    except TypeError as e:
        raise ConfigError(f"{where}: {target} cannot take these keys ({e}); it takes: "
                          f"{', '.join(takes) or 'nothing'}") from None
    if inspect.isclass(obj) and any(p.kind == p.VAR_KEYWORD for p in signature.parameters.values()):
        accepted = _keywords(obj)
        if accepted is not None:  # keywords a class takes through its own **kwargs (SlurmLauncher's SLURM options)
            accepted = accepted + [k for k in getattr(obj, "keyword_options", ()) if k not in accepted]
        unknown = sorted(set(kwargs) - set(accepted)) if accepted is not None else []
        if unknown:
            raise ConfigError(f"{where}: {target} has no setting {', '.join(map(repr, unknown))}; it takes: "
                              f"{', '.join(accepted or ()) or 'nothing'}")


def _build(value: Any, where: str) -> Any:
    if isinstance(value, dict):
        if TARGET in value:
            return _call(value, where)
        return {k: _build(v, _join(where, k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_build(v, _join(where, i)) for i, v in enumerate(value)]
    return value


def _call(spec: Dict[str, Any], where: str) -> Any:
    from mpipipe.platform.base import Platform

    shown = where or "the top level"
    target = spec[TARGET]
    if not isinstance(target, str) or not target.strip():
        raise ConfigError(f"{shown}: {TARGET} must be a class path such as \"mpipipe.launchers:DirectLauncher\", "
                          f"got {target!r}")
    target = target.strip()
    special = sorted(k for k in spec if isinstance(k, str) and k != TARGET and k.startswith("_") and k.endswith("_"))
    if special:
        raise ConfigError(f"{shown}: {', '.join(special)} not supported (only {TARGET}); remove it")
    obj = _import_target(target, shown)
    kwargs = {}
    for key, value in spec.items():
        if key == TARGET:
            continue
        if not isinstance(key, str) or not key.isidentifier():
            raise ConfigError(f"{shown} ({target}): key {key!r} cannot be a keyword argument; use a Python name")
        kwargs[key] = _build(value, _join(where, key))
    if inspect.isclass(obj) and issubclass(obj, Platform):
        return _build_platform(obj, kwargs, target, where)
    if not callable(obj):
        raise ConfigError(f"{shown}: {TARGET} {target!r} names a {type(obj).__name__}, not a class or function")
    _check_keywords(obj, kwargs, target, shown)
    return obj(**kwargs)


def instantiate(spec: Any, overrides: Iterable[str] = ()) -> Any:
    """Build the object a `_target_` mapping describes, after applying `overrides` ("a.b.c=value").

    `_target_` is "pkg.mod:Class" or "pkg.mod.Class" (a function works too); the other keys are its
    keyword arguments, built first when they hold `_target_` mappings themselves (in lists as well).
    A Platform subclass cannot take keywords (it takes a JobConfig), so for one the job's config
    (mpipipe.context.current().config()) is used, with the keys that name JobConfig fields (num_executors,
    mpiexec, slurm_partition, ...) replacing its values, `platform` set to the target, and every other
    key added to `platform_options` as text, which is where a platform reads its own settings.
    """
    data = apply_overrides(spec, overrides)
    if TARGET not in data:
        raise ConfigError(f"a launcher config needs a {TARGET} key naming what to build, e.g. {_EXAMPLE}; "
                          f"found keys: {', '.join(map(str, data)) or 'none'}")
    return _build(data, "")


# --- files and the command line ----------------------------------------------------------------------------


def load_launcher_config(path: Union[str, "os.PathLike[str]"]) -> Dict[str, Any]:
    """The mapping in a .toml, .json, or .yaml/.yml file (YAML needs PyYAML)."""
    path = os.path.expanduser(os.fspath(path))
    ext = os.path.splitext(path)[1].lower()
    if ext not in (".toml", ".json", ".yaml", ".yml"):
        raise ConfigError(f"launcher config {path}: unknown format {ext or '(no extension)'}; use a .toml, .json, "
                          ".yaml or .yml file")
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise ConfigError(f"launcher config {path} does not exist; check the path") from None
    except OSError as e:
        raise ConfigError(f"cannot read launcher config {path}: {e}") from None
    try:
        if ext == ".toml":
            if sys.version_info >= (3, 11):
                import tomllib
            else:  # Python 3.10: the same parser, installed as tomli (a dependency there)
                import tomli as tomllib

            data = tomllib.loads(raw.decode("utf-8"))
        elif ext == ".json":
            data = json.loads(raw.decode("utf-8"))
        else:
            try:
                import yaml
            except ImportError:
                raise ConfigError(f"launcher config {path} is YAML but PyYAML is not installed; pip install pyyaml, "
                                  "or write it as TOML or JSON") from None
            data = yaml.safe_load(raw.decode("utf-8"))
    except ConfigError:
        raise
    except Exception as e:  # each parser has its own error class; all mean the same thing here
        raise ConfigError(f"launcher config {path} is not valid {ext[1:].upper()}: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"launcher config {path} must hold a mapping with a {TARGET} key, got "
                          f"{type(data).__name__}")
    return data


def from_config(spec_or_path: Any, prefix: Optional[str] = None) -> Any:
    """instantiate() a mapping or a config file with the command line's --set overrides.

    With `prefix`, only the overrides "prefix.key=value" apply (as "key=value"), so that a script that
    builds several launchers can tell them apart; without it every --set applies.
    """
    if isinstance(spec_or_path, (str, os.PathLike)):
        spec_or_path = load_launcher_config(spec_or_path)
    overrides = list(context.current().launcher_overrides)
    if prefix is not None:
        start = prefix.rstrip(".") + "."
        overrides = [o[len(start):] for o in overrides if o.startswith(start)]
    return instantiate(spec_or_path, overrides)


# --- Hydra applications ------------------------------------------------------------------------------------


def _hydra_value(value: Any, item: str) -> str:
    """A --set value (already read as JSON or text) written in Hydra's override grammar."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ",".join(_hydra_value(v, item) for v in value) + "]"
    if isinstance(value, dict):
        for key in value:
            if not str(key).isidentifier():
                raise ConfigError(f"--set {item}: the key {key!r} cannot be written as a Hydra override; use "
                                  "Hydra's own KEY=VALUE syntax for this value")
        return "{" + ",".join(f"{k}:{_hydra_value(v, item)}" for k, v in value.items()) + "}"
    text = str(value)
    for quote in ("'", '"'):
        if quote not in text and not text.endswith("\\"):
            return f"{quote}{text}{quote}"
    raise ConfigError(f"--set {item}: a value with both kinds of quotes cannot be written as a Hydra override; "
                      "use Hydra's own KEY=VALUE syntax for this value")


def hydra_argv(argv: Optional[List[str]] = None) -> List[str]:
    """Take mpipipe's flags off the command line of a @hydra.main script, before Hydra parses it.

    Hydra refuses flags it does not know, so mpipipe's (--platform, --num-executors, --data-root, ...) are
    read here, as init() would read them, and removed from sys.argv; each `--set KEY=VALUE` becomes Hydra's
    `++KEY=VALUE` (set, or add). Returns what Hydra is left with. Call it first in `if __name__ ==
    "__main__":`; a world started again under mpiexec gets the original command line.
    """
    import sys

    from mpipipe.flags import parse_known

    args = sys.argv[1:] if argv is None else list(argv)
    builtins, overrides, rest = parse_known(args)
    extra = []
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not KEY=VALUE; write it as --set a.b.c=value")
        extra.append(f"++{key.strip()}={_hydra_value(parse_value(text), item)}")
    context.update(command_line=builtins, user_args={"argv": rest} if rest else {},
                   launcher_overrides=tuple(overrides), from_driver=True)
    left = rest + extra
    if argv is None:
        sys.argv[1:] = left
    return left
