"""Gathering final outputs into a user's folder: link, copy, or a manifest of paths.

Local folders are filled beside their final place and renamed into it, so a
reader never sees half a result; a folder mpipipe wrote before (it holds the
marker file) is replaced, any other non-empty folder is refused. Object-store
folders (copy only) get the marker written last.
"""
from __future__ import annotations

import json
import os
import shutil
from typing import Any, Dict, List, Sequence, Tuple

from mpipipe.logical.dataset import Fragment, is_uri
from mpipipe.steps.partio import PartitionData, _open, read_fragment, write_manifest

MARKER = "_MPIPIPE_SINK"
SINK_TYPES = ("link", "copy", "manifest")


def foreign_contents(path: str) -> bool:
    """True if `path` is a non-empty folder (or a file) that mpipipe did not write."""
    if is_uri(path) and not path.startswith("file://"):
        import pyarrow.fs as pafs

        fs, root = _open(path)
        info = fs.get_file_info(root)
        if info.type == pafs.FileType.NotFound:
            return False
        if info.type == pafs.FileType.File:
            return True
        if fs.get_file_info(root + "/" + MARKER).type == pafs.FileType.File:
            return False
        return bool(fs.get_file_info(pafs.FileSelector(root, recursive=False)))
    if not os.path.lexists(path):
        return False
    if not os.path.isdir(path) or os.path.islink(path):
        return True
    return not os.path.exists(os.path.join(path, MARKER)) and bool(os.listdir(path))


def _place(frag: Fragment, dest: str, how: str) -> None:
    import pyarrow.parquet as pq

    local = not is_uri(frag.path) or frag.path.startswith("file://")
    if frag.format == "parquet" and frag.whole and local:
        src = _open(frag.path)[1]
        if how == "link":
            try:
                os.link(src, dest)
            except OSError:
                os.symlink(os.path.abspath(src), dest)
        else:
            shutil.copyfile(src, dest)
        return
    pq.write_table(read_fragment(frag), dest)


def _named(inputs: Sequence[Tuple[str, PartitionData]]) -> List[Tuple[str, Fragment]]:
    out = []
    for input_name, data in inputs:
        for k, frag in enumerate(data.fragments):
            out.append((f"{input_name}-{k:06d}.parquet", frag))
    return out


def sink_local(output_path: str, how: str, inputs: Sequence[Tuple[str, PartitionData]], job_output: str) -> Dict[str, Any]:
    final = os.path.abspath(output_path[len("file://"):] if output_path.startswith("file://") else output_path)
    if foreign_contents(final):
        raise FileExistsError(f"output folder {final} exists and was not written by mpipipe; "
                              "remove it or choose another output path")
    parent = os.path.dirname(final)
    os.makedirs(parent, exist_ok=True)
    staging = f"{final}.mpipipe-staging.{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    named = _named(inputs)
    written: List[Fragment] = []
    try:
        os.makedirs(staging)
        if how == "manifest":
            with open(os.path.join(staging, "manifest.json"), "w") as f:
                json.dump({"fragments": [fr.to_json() for _, fr in named]}, f, indent=1)
            written = [fr for _, fr in named]
        else:
            for name, frag in named:
                _place(frag, os.path.join(staging, name), how)
                written.append(Fragment(os.path.join(final, name)))
        with open(os.path.join(staging, MARKER), "w") as f:
            json.dump({"type": how, "files": len(named)}, f)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)  # a copy that failed (a full disk) leaves nothing half-written
        raise
    old = f"{final}.mpipipe-old.{os.getpid()}"
    if os.path.lexists(final):
        os.rename(final, old)
    os.rename(staging, final)
    shutil.rmtree(old, ignore_errors=True)
    schema = inputs[0][1].schema()
    write_manifest(job_output, written, schema)
    os.symlink(final, os.path.join(job_output, "target"))  # lets a later run see if the folder was removed
    return {"files": len(named), "path": final}


def sink_uri(output_path: str, inputs: Sequence[Tuple[str, PartitionData]], job_output: str) -> Dict[str, Any]:
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    if foreign_contents(output_path):
        raise FileExistsError(f"output folder {output_path} exists and was not written by mpipipe; "
                              "remove it or choose another output path")
    fs, root = _open(output_path)
    root = root.rstrip("/")
    if fs.get_file_info(root).type == pafs.FileType.Directory:
        fs.delete_dir_contents(root, missing_dir_ok=True)
    fs.create_dir(root, recursive=True)
    named = _named(inputs)
    written = []
    for name, frag in named:
        pq.write_table(read_fragment(frag), f"{root}/{name}", filesystem=fs)
        written.append(Fragment(output_path.rstrip("/") + "/" + name))
    with fs.open_output_stream(f"{root}/{MARKER}") as f:
        f.write(json.dumps({"type": "copy", "files": len(named)}).encode())
    write_manifest(job_output, written, inputs[0][1].schema())
    return {"files": len(named), "path": output_path}
