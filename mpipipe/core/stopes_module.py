"""StopesModule and Requirements: stopes' module API on mpipipe's Module.

Code written for stopes (``from stopes.core.stopes_module import StopesModule``,
or ``stopes.code.stopes_module`` as its documentation spells it) runs with only
the package name changed. A StopesModule keeps its config as stopes does: a
dataclass becomes an OmegaConf structured config, `config_class` promotes a
DictConfig to that dataclass, interpolations are resolved and the config is
made read-only. Fields marked `metadata={"transient": True}` (and a field named
`requirements`) are left out of the cache key, as in stopes.
"""
from __future__ import annotations

import dataclasses
import typing as tp
from abc import ABC, abstractmethod
from pathlib import Path

from mpipipe.errors import ConfigError, RequirementError
from mpipipe.module import Module, build_module


@dataclasses.dataclass
class Requirements:
    """What one run needs, with stopes' fields and defaults.

    On SLURM: cpus_per_task, mem_gb, gpus_per_node, timeout_min and constraint
    become sbatch options (where the launcher's options do not set them), and
    max_num_timeout bounds how many times a checkpointed run is requeued.
    On a world launcher (executor ranks): gpus_per_node, mem_gb and
    timeout_min place and limit the run; cpus_per_task is a SLURM request only
    (stopes' default of 5 would make a run wait for a 5-core executor), so ask
    for cores with mpipipe's own forms there. An array element is one task:
    nodes and tasks_per_node above 1 are refused.
    """

    nodes: int = 1
    mem_gb: tp.Optional[int] = None
    tasks_per_node: int = 1
    gpus_per_node: int = 0
    cpus_per_task: int = 5
    timeout_min: int = 720
    constraint: tp.Optional[str] = None
    max_num_timeout: int = 10

    def _one_task(self) -> None:
        if (self.nodes or 1) > 1 or (self.tasks_per_node or 1) > 1:
            raise RequirementError(f"Requirements(nodes={self.nodes}, tasks_per_node={self.tasks_per_node}): a "
                                   "run is one task on one node here; start the extra processes from run(), or "
                                   "use nodes=1, tasks_per_node=1")

    def as_resources(self) -> tp.Any:
        """What a world launcher places the run by: GPUs, memory and time."""
        from mpipipe.resources import Resources

        self._one_task()
        return Resources(gpus=self.gpus_per_node or 0, memory=f"{self.mem_gb}GiB" if self.mem_gb else 0,
                         time=float(self.timeout_min or 0) * 60)

    def slurm_options(self) -> tp.Dict[str, tp.Any]:
        """SlurmOptions fields for one array element."""
        self._one_task()
        options: tp.Dict[str, tp.Any] = {"cpus_per_task": self.cpus_per_task or None,
                                         "gpus_per_node": str(self.gpus_per_node) if self.gpus_per_node else None,
                                         "mem": f"{self.mem_gb}G" if self.mem_gb else None,
                                         "time": str(self.timeout_min) if self.timeout_min else None,
                                         "constraint": self.constraint}
        return {k: v for k, v in options.items() if v is not None}


def _omegaconf() -> tp.Any:
    try:
        import omegaconf
    except ImportError:
        raise ConfigError("a StopesModule keeps its config as an OmegaConf config, and omegaconf is not installed; "
                          "pip install omegaconf (or hydra-core)") from None
    return omegaconf


def _promote(config: tp.Any, config_class: type) -> tp.Any:
    """`config` merged into the structured config of `config_class` (without Hydra's _target_)."""
    oc = _omegaconf()
    if hasattr(config, "_target_"):
        config = oc.OmegaConf.create(config)  # a copy: the caller's config keeps its _target_
        with oc.open_dict(config):
            del config["_target_"]
    proto = oc.OmegaConf.structured(config_class)
    try:
        proto.merge_with(config)
    except Exception as e:  # noqa: BLE001  OmegaConf's own error classes
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"the config does not fit {config_class.__name__} ({first}); give it only that "
                          "dataclass's fields") from None
    return proto


def _transient_paths(config_class: tp.Any, prefix: tp.Tuple[str, ...] = ()) -> tp.List[tp.Tuple[str, ...]]:
    """Key paths of the dataclass fields marked transient (and of fields named `requirements`)."""
    if not (dataclasses.is_dataclass(config_class) and isinstance(config_class, type)):
        return []
    paths: tp.List[tp.Tuple[str, ...]] = []
    try:
        hints = tp.get_type_hints(config_class)
    except Exception:  # noqa: BLE001  unresolvable annotations: only the fields' metadata counts then
        hints = {}
    for f in dataclasses.fields(config_class):
        if f.metadata.get("transient", False) or f.name == "requirements":
            paths.append(prefix + (f.name,))
            continue
        kind = hints.get(f.name, f.type)
        if dataclasses.is_dataclass(kind):
            paths += _transient_paths(kind, prefix + (f.name,))
        elif isinstance(kind, type) and hasattr(kind, "transient_attributes"):
            paths += [prefix + (f.name, str(a)) for a in getattr(kind, "transient_attributes")]
    return paths


def _drop(tree: tp.Any, path: tp.Tuple[str, ...]) -> None:
    for key in path[:-1]:
        if not isinstance(tree, dict) or key not in tree:
            return
        tree = tree[key]
    if isinstance(tree, dict):
        tree.pop(path[-1], None)


class StopesModule(Module, ABC):
    """A module configured by one config, as in stopes: subclass it, take `config` in __init__, define run()."""

    def __init__(self, config: tp.Any, config_class: tp.Optional[tp.Type[tp.Any]] = None) -> None:
        oc = _omegaconf()
        if dataclasses.is_dataclass(config) and not isinstance(config, type):
            config = oc.OmegaConf.structured(config)
        if config_class is not None:
            config = _promote(config, config_class)
        elif not isinstance(config, oc.DictConfig):
            raise ConfigError(f"{type(self).__name__}: a StopesModule config must be a dataclass or an OmegaConf "
                              f"DictConfig, got a {type(config).__name__}; wrap a dict in OmegaConf.create()")
        oc.OmegaConf.resolve(config)
        oc.OmegaConf.set_readonly(config, True)
        super().__init__(config)
        self._config_class = config_class

    @staticmethod
    def build(config: tp.Any, **kwargs: tp.Any) -> "StopesModule":  # type: ignore[override]
        """The module a config with a `_target_` describes, with `kwargs` merged into its config."""
        return tp.cast(StopesModule, build_module(config, kwargs, StopesModule))

    def __call__(self, iteration_value: tp.Optional[tp.Any] = None, iteration_index: int = 0,
                 cache: tp.Any = None) -> tp.Any:
        """What submitit calls in stopes; runs run() (the launcher keeps the result, not `cache`)."""
        return self.run(iteration_value=iteration_value, iteration_index=iteration_index)

    @abstractmethod
    def run(self, iteration_value: tp.Optional[tp.Any] = None, iteration_index: int = 0) -> tp.Any:
        """One run: the whole module, or element `iteration_index` of array()."""

    def requirements(self) -> tp.Any:
        return None

    def comment(self) -> tp.Any:
        return None

    @classmethod
    def version(cls) -> str:  # type: ignore[override]
        return "0.0"

    def validate(self, output: tp.Any, iteration_value: tp.Optional[tp.Any] = None,
                 iteration_index: int = 0) -> bool:
        """A cached Path whose file is gone is computed again (stopes' default)."""
        return not (isinstance(output, Path) and not output.exists())

    def _config_type(self) -> tp.Any:
        if self._config_class is not None:
            return self._config_class
        try:
            return _omegaconf().OmegaConf.get_type(self.config)
        except Exception:  # noqa: BLE001
            return None

    def get_config_for_cache(self) -> tp.Dict[str, tp.Any]:
        """The config as plain data, without its transient fields."""
        oc = _omegaconf()
        data = oc.OmegaConf.to_container(self.config, resolve=True)
        if not isinstance(data, dict):
            raise ConfigError(f"{type(self).__name__}.config must be a mapping, got a {type(data).__name__}")
        for path in _transient_paths(self._config_type()):
            _drop(data, path)
        return data

    def cache_config(self) -> tp.Dict[str, tp.Any]:
        state = super().cache_config()
        if self._config_type() is not None and _transient_paths(self._config_type()):
            state["config"] = self.get_config_for_cache()
        return state
