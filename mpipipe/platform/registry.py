"""Which platform a job runs on: by name, by dotted path, or by auto-detection."""
from __future__ import annotations

import importlib
import inspect
import os
from typing import Dict, List, Optional, Tuple, Type

from mpipipe.config import JobConfig
from mpipipe.errors import PlatformError
from mpipipe.platform.base import Platform

BUILTIN: Dict[str, str] = {
    "local": "mpipipe.platform.local:LocalPlatform",
    "mpi": "mpipipe.platform.mpi:MpiPlatform",
    "slurm": "mpipipe.platform.slurm:SlurmPlatform",
}


def _import(module: str, spec: str):  # type: ignore[no-untyped-def]
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise PlatformError(
            f"cannot import module {module!r} named by platform {spec!r} ({e}); check the spelling and that "
            f"its folder is on PYTHONPATH; built-in platforms: {', '.join(BUILTIN)}"
        ) from None


def _check_class(obj: object, spec: str) -> Type[Platform]:
    if not (inspect.isclass(obj) and issubclass(obj, Platform)):
        raise PlatformError(f"platform {spec!r} names {obj!r}, which is not a subclass of mpipipe.Platform")
    if obj is Platform:
        raise PlatformError(f"platform {spec!r} names the abstract base class; subclass it")
    return obj


def load_platform(spec: str) -> Type[Platform]:
    """A platform class from a built-in name, `pkg.mod:Class`, `pkg.mod.Class`, or `pkg.mod`.

    A bare module must define exactly one Platform subclass of its own; classes
    it merely imports (a base class, say) never count.
    """
    spec = spec.strip()
    if spec in BUILTIN:
        spec = BUILTIN[spec]
    if ":" in spec:
        module, _, attr = spec.partition(":")
        mod = _import(module, spec)
        if not hasattr(mod, attr):
            raise PlatformError(f"module {module!r} has no attribute {attr!r} (platform {spec!r})")
        return _check_class(getattr(mod, attr), spec)
    try:
        mod = importlib.import_module(spec)
    except ImportError as e:
        missing = getattr(e, "name", None)
        if missing and not spec.startswith(missing):
            # the module exists but one of its own imports failed: say that, not "not found"
            raise PlatformError(f"platform module {spec!r} failed to import: {e}") from None
        if "." not in spec:
            raise PlatformError(
                f"unknown platform {spec!r}: not a built-in ({', '.join(BUILTIN)}) and not an importable module"
            ) from None
        module, _, attr = spec.rpartition(".")
        mod = _import(module, spec)
        if not hasattr(mod, attr):
            raise PlatformError(f"cannot find platform {spec!r}: module {module!r} has no attribute {attr!r}") from None
        return _check_class(getattr(mod, attr), spec)
    own = [c for _, c in inspect.getmembers(mod, inspect.isclass)
           if issubclass(c, Platform) and c is not Platform and c.__module__ == mod.__name__]
    if len(own) != 1:
        found = ", ".join(c.__name__ for c in own) or "none"
        raise PlatformError(
            f"module {spec!r} must define exactly one Platform subclass of its own, found {found}; "
            f"name one as {spec}:ClassName"
        )
    return own[0]


def detect() -> Tuple[str, str]:
    """(platform name, reason) from the environment this process runs in: MPI world > SLURM allocation > local."""
    from mpipipe.platform.mpi import MpiPlatform

    if MpiPlatform.detect():
        return "mpi", "running inside an MPI world (launcher variables are set)"
    if os.environ.get("SLURM_JOB_ID"):
        return "slurm", (f"inside SLURM allocation {os.environ['SLURM_JOB_ID']} (SLURM_JOB_ID is set) with no MPI "
                         "world yet: srun starts one")
    return "local", "not inside an MPI world or a SLURM allocation"


def choose(config: JobConfig, init_platform: Optional[str] = None) -> Tuple[Type[Platform], str]:
    """The platform class and why: --platform > SP_PLATFORM > init(platform=) > auto-detection.

    config.platform already merges the first three (see mpipipe.config).
    """
    if config.platform:
        src = "--platform or SP_PLATFORM or init(platform=)"
        if os.environ.get("SP_PLATFORM") == config.platform:
            src = "SP_PLATFORM"
        return load_platform(config.platform), f"chosen by {src} = {config.platform!r}"
    name, reason = detect()
    return load_platform(name), f"auto-detected: {reason}"


def describe_all() -> List[Tuple[str, bool, str]]:
    rows = []
    for name, spec in BUILTIN.items():
        cls = load_platform(spec)
        ok, why = cls.available()
        rows.append((name, ok, why))
    return rows
