"""The sink node: gathers final outputs into a folder outside the job directory."""
from __future__ import annotations

import os
from typing import Any, List, Optional

from mpipipe.errors import PlanError
from mpipipe.logical.datanode import DataNode, Inputs, _as_inputs
from mpipipe.logical.dataset import is_uri
from mpipipe.logical.plan import Context


class DataSinkNode(DataNode):
    """Put every partition of the inputs into `output_path`.

    type="link" hard-links the Parquet files (symlinks across file systems),
    "copy" copies them (also to object-store URIs), "manifest" (smallpond:
    `manifest_only=True`) writes only `manifest.json` listing the files. Files that are not Parquet (what a
    PythonScriptNode or ComputeNode wrote) go to `<input>-<partition>/`. Every
    Parquet footer is read before anything is written, so the folder appears
    complete or not at all, never over a corrupt file; a folder mpipipe did not
    write is never overwritten.
    """

    kind = "sink"
    gathers = True

    @property
    def reads_any_format(self) -> bool:  # type: ignore[override]
        return self.type != "manifest"  # a manifest lists the input's files as they are

    def __init__(self, ctx: Context, inputs: Inputs, output_path: str, type: str = "link",
                 manifest_only: bool = False, is_final_node: bool = False, name: Optional[str] = None,
                 version: str = "", **options: Any) -> None:
        from mpipipe.steps.sink import SINK_TYPES, foreign_contents

        label = name or options.get("output_name") or "sink"
        if manifest_only:
            type = "manifest"
        if type == "link_or_copy":  # smallpond's: links where it can, copies elsewhere, as "link" does here
            type = "link"
        deps, _ = _as_inputs(inputs)
        if not deps:
            raise PlanError(f"node {label!r} needs at least one input")
        if type not in SINK_TYPES:
            raise PlanError(f"node {label!r}: type must be one of {', '.join(SINK_TYPES)}, got {type!r}")
        output_path = os.fspath(output_path)
        remote = is_uri(output_path) and not output_path.startswith("file://")
        if remote and type != "copy":
            raise PlanError(f"node {label!r}: {output_path} is an object-store URI; use type='copy' there")
        if not remote:
            output_path = os.path.abspath(os.path.expanduser(output_path))
        try:
            foreign = foreign_contents(output_path)
        except OSError as e:
            raise PlanError(f"node {label!r}: cannot check output path {output_path}: {e}") from None
        if foreign:
            raise PlanError(f"node {label!r}: output folder {output_path} exists and was not written by mpipipe; "
                            "remove it or choose another output path")
        if not remote:
            parent = os.path.dirname(output_path)
            probe = parent
            while not os.path.exists(probe):
                probe = os.path.dirname(probe)
            if not os.access(probe, os.W_OK):
                raise PlanError(f"node {label!r}: cannot write to {parent} (permission denied); "
                                "choose another output path")
        self.output_path = output_path
        self.type = type
        # a local sink is reused from the journal only while its folder is still there
        self.reuse_check = "" if remote else "target/_MPIPIPE_SINK"
        super().__init__(ctx, deps, 1, name, version, **options)

    def default_name(self) -> str:
        return "sink"

    def step_fingerprint(self) -> str:
        return f"{self.output_path}|{self.type}"

    def describe(self) -> str:
        return f"sink ({self.type}) to {self.output_path}"

    def output_schema(self) -> Any:
        return next((s for s in self.input_schemas() if s is not None), None)

    def process_partition(self, task: Any, inputs: List[Any]) -> Any:
        from mpipipe.steps.sink import sink_local, sink_uri

        named = list(zip(self.input_names or (), inputs))
        if is_uri(self.output_path) and not self.output_path.startswith("file://"):
            return sink_uri(self.output_path, named, task.output_dir)
        return sink_local(self.output_path, self.type, named, task.output_dir, getattr(task, "job_dir", ""))




class RootNode(DataNode):
    """Ties several nodes into one plan root; it writes nothing (each input's outputs stay its own)."""

    kind = "root"
    gathers = True

    def __init__(self, ctx: Context, inputs: Inputs, name: Optional[str] = None, version: str = "") -> None:
        deps, _ = _as_inputs(inputs)
        if not deps:
            raise PlanError(f"node {name or 'root'!r} needs at least one input")
        super().__init__(ctx, deps, 1, name, version)

    def default_name(self) -> str:
        return "root"

    def input_data(self, task: Any) -> List[Any]:
        return []

    def process_partition(self, task: Any, inputs: List[Any]) -> Any:
        return {}
