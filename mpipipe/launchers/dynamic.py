"""A launcher that picks, at each submission, one of several launchers by their priorities.

Priorities are read at submission time, after `update()`, so a subclass can
steer work towards whichever cluster is least busy right now.
"""
from __future__ import annotations

import logging
import random
from typing import Any, List, Optional, Sequence

from mpipipe.errors import ConfigError, PlanError
from mpipipe.launchers.base import Launcher, ShardJob
from mpipipe.module import Module, ShardFailure

log = logging.getLogger("mpipipe.modules")


class DynamicLauncher(Launcher):
    """Each schedule() goes to one of `launchers`: the highest priority (ties at random), or with
    `sample=True` a random one with probability proportional to its priority.

    Override `update()` to refresh the launchers' priorities (queue lengths, free GPUs, ...) before
    each choice; it may read and change `self.launchers` (also spelled `self._launchers`, one list).
    `rng` is a random.Random, to make the choice reproducible.
    """

    def __init__(self, launchers: Sequence[Launcher], sample: bool = False, rng: Optional[random.Random] = None,
                 priority: float = 0, **kwargs: Any) -> None:
        super().__init__(priority, **kwargs)
        self._launchers: List[Launcher] = list(launchers)
        if not self._launchers:
            raise ConfigError("DynamicLauncher needs at least one launcher to choose from; pass a non-empty list")
        for i, launcher in enumerate(self.launchers):
            if not isinstance(launcher, Launcher):
                raise ConfigError(f"DynamicLauncher: launchers[{i}] is a {type(launcher).__name__}, not a "
                                  "mpipipe Launcher; pass Launcher instances")
        self.sample = bool(sample)
        self.rng = rng if rng is not None else random.Random()

    @property
    def launchers(self) -> List[Launcher]:
        """The launchers to choose from (the list itself: changing it changes the choices)."""
        return self._launchers

    @launchers.setter
    def launchers(self, value: Sequence[Launcher]) -> None:
        self._launchers = list(value)

    def update(self) -> None:
        """Called before each choice; subclasses set `launcher.priority` from the clusters' state here."""

    def choose(self) -> Launcher:
        """One launcher, by the rule of `sample` (without calling update(): schedule() does)."""
        if not self.sample:
            best = max(launcher.priority for launcher in self.launchers)
            return self.rng.choice([launcher for launcher in self.launchers if launcher.priority == best])
        for launcher in self.launchers:
            if not launcher.priority > 0:
                raise ConfigError(f"DynamicLauncher(sample=True): {self.name_of(launcher)} has priority "
                                  f"{launcher.priority}; sampling needs every priority > 0 (raise it, or drop "
                                  "that launcher)")
        return self.rng.choices(self.launchers, weights=[launcher.priority for launcher in self.launchers])[0]

    def name_of(self, launcher: Launcher) -> str:
        """launchers[i] (Class): not describe(), which may join a world."""
        index = next(i for i, other in enumerate(self.launchers) if other is launcher)
        return f"launchers[{index}] ({type(launcher).__name__})"

    def describe(self) -> str:
        return "one of " + ", ".join(self.name_of(launcher) for launcher in self.launchers)

    def resolve(self, module: Module) -> Launcher:
        """update(), then the choice for this module (followed down if the choice chooses too)."""
        self.update()
        if not self._launchers:
            raise ConfigError("DynamicLauncher: update() left no launcher to choose from; keep at least one in "
                              "self.launchers")
        chosen = self.choose()
        log.info("DynamicLauncher: module %s goes to %s (priority %s)", module.name(), self.name_of(chosen),
                 chosen.priority)
        return chosen.resolve(module)

    async def schedule(self, module: Module) -> Any:
        if not isinstance(module, Module):
            raise PlanError(f"schedule() takes a mpipipe.Module, got {type(module).__name__}")
        return await self.resolve(module).schedule(module)

    async def run_shards(self, job: ShardJob) -> List[ShardFailure]:
        """Only reached if schedule() is bypassed: the runs go where a fresh choice says."""
        self.update()
        return await self.choose().run_shards(job)

    def __repr__(self) -> str:
        return f"<DynamicLauncher sample={self.sample} launchers={self.launchers!r}>"
