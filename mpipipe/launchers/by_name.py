"""A launcher per step: each module goes to the launcher registered under its name().

One script can then send its preprocessing to local processes and its
training to a GPU cluster without changing the modules themselves.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping

from mpipipe.errors import ConfigError, PlanError
from mpipipe.launchers.base import Launcher, ShardJob
from mpipipe.module import Module, ShardFailure

DEFAULT = ""  # the key of the launcher used for modules with no entry of their own


class LauncherMap(Launcher):
    """`mapping[module.name()]` runs the module; the "" key, if any, runs every other module."""

    def __init__(self, mapping: Mapping[str, Launcher], priority: float = 0, **kwargs: Any) -> None:
        super().__init__(priority, **kwargs)
        if not isinstance(mapping, Mapping):
            raise ConfigError(f"LauncherMap takes a mapping from module names to launchers, got "
                              f"{type(mapping).__name__}")
        self.mapping: Dict[str, Launcher] = {}
        for name, launcher in mapping.items():
            if not isinstance(name, str):
                raise ConfigError(f"LauncherMap: key {name!r} is not a module name (a string; \"\" for the default)")
            if not isinstance(launcher, Launcher):
                raise ConfigError(f"LauncherMap: the value for {name!r} is a {type(launcher).__name__}, not a "
                                  "mpipipe Launcher; map each name to a Launcher instance")
            self.mapping[name] = launcher

    def launcher_for(self, name: str) -> Launcher:
        """The launcher of the module called `name`: its own entry, else the default ("")."""
        if name in self.mapping:
            return self.mapping[name]
        if DEFAULT in self.mapping:
            return self.mapping[DEFAULT]
        keys = ", ".join(repr(k) for k in sorted(self.mapping)) or "none"
        raise ConfigError(f"LauncherMap has no launcher for module {name!r} and no default; keys: {keys}; add "
                          "an entry for it or a default under the key \"\"")

    def describe(self) -> str:
        return "a launcher per module (" + ", ".join(repr(k) for k in sorted(self.mapping)) + ")"

    def resolve(self, module: Module) -> Launcher:
        """The module's own launcher (followed down if that one chooses too)."""
        return self.launcher_for(module.name()).resolve(module)

    async def schedule(self, module: Module) -> Any:
        if not isinstance(module, Module):
            raise PlanError(f"schedule() takes a mpipipe.Module, got {type(module).__name__}")
        return await self.launcher_for(module.name()).schedule(module)

    async def run_shards(self, job: ShardJob) -> List[ShardFailure]:
        """Only reached if schedule() is bypassed: the runs go to the module's launcher."""
        return await self.launcher_for(job.module.name()).run_shards(job)

    def __repr__(self) -> str:
        return f"<LauncherMap {self.mapping!r}>"
