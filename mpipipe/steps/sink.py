"""Gathering final outputs into a user's folder: link, copy, or a manifest of paths.

Local folders are filled beside their final place and renamed into it, so a
reader never sees half a result; a folder mpipipe wrote before (it holds the
marker file) is replaced, any other non-empty folder is refused. Object-store
folders (copy only) get the marker written last, and a `_MPIPIPE_SINK_WRITING`
file while they are written, so a retry after a failed copy may replace them.
Every Parquet footer is read before anything is written, so a corrupt input
fails the sink instead of reaching a folder that looks complete; files that are
not Parquet (a PythonScriptNode's text or images) go to one sub-folder per
partition.
"""
from __future__ import annotations

import json
import os
import shutil
from typing import Any, Dict, List, Optional, Sequence, Tuple

from mpipipe.data.fragment import Fragment, is_uri
from mpipipe.steps.partio import (TYPED, DataError, PartitionData, _metadata_schema, _open, _same_layout,
                                  conform_table, copy_text_to_parquet, read_fragment, read_text, write_manifest,
                                  write_table)

MARKER = "_MPIPIPE_SINK"
WRITING = "_MPIPIPE_SINK_WRITING"  # an object-store folder being written: ours, not complete
SINK_TYPES = ("link", "copy", "manifest")


PUBLISHED = "_MPIPIPE_PUBLISHED."  # + a node's name: that node's partitions are linked into <folder>/<node>/
MANIFEST_TXT = "manifest.txt"  # a manifest sink's files, one path per line (smallpond's manifest)


def published_nodes(path: str) -> List[str]:
    """The nodes whose outputs a node's `output_path` put into this folder (each left a marker file)."""
    try:
        return [n[len(PUBLISHED):] for n in os.listdir(path) if n.startswith(PUBLISHED)]
    except OSError:
        return []


def _only_published(path: str) -> bool:
    """A folder holding nothing but what nodes published into it (their folders and markers)."""
    nodes = set(published_nodes(path))
    return bool(nodes) and all(n in nodes or n.startswith(PUBLISHED) for n in os.listdir(path))


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
        if any(fs.get_file_info(root + "/" + m).type == pafs.FileType.File for m in (MARKER, WRITING)):
            return False
        return bool(fs.get_file_info(pafs.FileSelector(root, recursive=False)))
    if not os.path.lexists(path):
        return False
    if not os.path.isdir(path) or os.path.islink(path):
        return True
    return not os.path.exists(os.path.join(path, MARKER)) and bool(os.listdir(path)) and not _only_published(path)


Entry = Tuple[str, List[Fragment], Optional[Any], Optional[Any]]


def _place(entry: Entry, dest: str, how: str, job_dir: str = "") -> None:
    """Link or copy a whole local Parquet file whose footer was read and whose layout is the input's; text
    files of one format are converted together by DuckDB (so they agree on types); anything else (slices,
    object-store files, files in another column order, this job's files with NOT NULL columns, a shuffle's
    Arrow IPC files) is read and written anew."""
    _, frags, schema, footer = entry
    frag = frags[0]
    if frag.format not in TYPED:
        copy_text_to_parquet(frags, dest)
        return
    local = not is_uri(frag.path) or frag.path.startswith("file://")
    layout = _metadata_schema(footer, frag.path) if footer is not None else None
    src = _open(frag.path)[1]
    # a file of this job with NOT NULL columns (DuckDB writes a hash bucket that saw no null so) is written
    # anew as nullable, so what a sink holds never depends on whether the data had a null; a user's own
    # input file is copied as it is
    ours = bool(job_dir) and os.path.abspath(src).startswith(os.path.join(os.path.abspath(job_dir), ""))
    if frag.whole and local and layout is not None and schema is not None and _same_layout(layout, schema) \
            and (not ours or all(f.nullable for f in layout)):
        if how == "link":
            try:
                os.link(src, dest)
            except FileNotFoundError:
                raise DataError(f"Parquet file {frag.path} does not exist (any more); run the job again") from None
            except OSError:
                os.symlink(os.path.abspath(src), dest)
        else:
            shutil.copyfile(src, dest)
        return
    table = read_fragment(frag, None, footer)
    write_table(conform_table(table, schema) if schema is not None else table, os.path.dirname(dest),
                os.path.basename(dest))


def _named(inputs: Sequence[Tuple[str, PartitionData]]) -> List[Entry]:
    """(file name, fragments, the input's schema, the footer) for each file the sink writes: one per Parquet
    fragment, one per run of text files. Reading the footers here is what makes a corrupt or mismatched
    file fail the sink before it writes anything."""
    out: List[Entry] = []
    for input_name, data in inputs:
        chk = data.checked()
        schema = chk.schema if chk.typed else None
        units: List[List[Fragment]] = []
        for f in chk.fragments:
            if (f.format not in TYPED and units and units[-1][0].format == f.format
                    and units[-1][0].options == f.options):
                units[-1].append(f)
            else:
                units.append([f])
        for k, frags in enumerate(units):
            out.append((f"{input_name}-{k:06d}.parquet", frags, schema, chk.footers.get(frags[0].path)))
    return out


def _other_files(inputs: Sequence[Tuple[str, PartitionData]]) -> List[Tuple[str, str]]:
    """(name in the sink, source path) for the non-Parquet files of the inputs: one sub-folder per partition."""
    return [(f"{input_name}-{i:06d}/{rel}", path) for input_name, data in inputs for i, rel, path in data.other_files]


def _sink_schema(inputs: Sequence[Tuple[str, PartitionData]]) -> Optional[Any]:
    for _, data in inputs:
        if data.fragments:
            return data.schema()
    return None


def sink_local(output_path: str, how: str, inputs: Sequence[Tuple[str, PartitionData]], job_output: str,
               job_dir: str = "") -> Dict[str, Any]:
    final = os.path.abspath(output_path[len("file://"):] if output_path.startswith("file://") else output_path)
    if foreign_contents(final):
        raise FileExistsError(f"output folder {final} exists and was not written by mpipipe; "
                              "remove it or choose another output path")
    parent = os.path.dirname(final)
    os.makedirs(parent, exist_ok=True)
    staging = f"{final}.mpipipe-staging.{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    written: List[Fragment] = []
    try:
        named = _named(inputs)
        others = _other_files(inputs)
        os.makedirs(staging)
        if how == "manifest":
            written = [fr for _, frags, _, _ in named for fr in frags]
            with open(os.path.join(staging, "manifest.json"), "w") as f:
                json.dump({"fragments": [fr.to_json() for fr in written],
                           "files": [path for _, path in others]}, f, indent=1)
            with open(os.path.join(staging, MANIFEST_TXT), "w") as f:
                f.writelines(f"{p}\n" for p in [fr.path for fr in written] + [path for _, path in others])
        else:
            for entry in named:
                _place(entry, os.path.join(staging, entry[0]), how, job_dir)
                written.append(Fragment(os.path.join(final, entry[0])))
            for name, path in others:
                _place_file(path, os.path.join(staging, name), how)
        with open(os.path.join(staging, MARKER), "w") as f:
            json.dump({"type": how, "files": len(named) + len(others)}, f)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)  # a copy that failed (a full disk) leaves nothing half-written
        raise
    kept = _keep_published(final, staging)
    old = f"{final}.mpipipe-old.{os.getpid()}"
    try:
        if os.path.lexists(final):
            os.rename(final, old)
        os.rename(staging, final)
    except OSError:
        for name in kept:  # put what nodes published back where it was
            if os.path.lexists(os.path.join(staging, name)):
                os.rename(os.path.join(staging, name), os.path.join(final, name))
        raise
    shutil.rmtree(old, ignore_errors=True)
    write_manifest(job_output, written, None if written else _sink_schema(inputs))
    os.symlink(final, os.path.join(job_output, "target"))  # lets a later run see if the folder was removed
    return {"files": len(named) + len(others), "path": final}


def _keep_published(final: str, staging: str) -> List[str]:
    """What nodes published into the sink's folder (their `output_path`) moves into the new folder, so the
    sink's swap keeps it."""
    kept: List[str] = []
    if not os.path.isdir(final):
        return kept
    for node in published_nodes(final):
        for name in (node, PUBLISHED + node):
            src = os.path.join(final, name)
            if os.path.lexists(src) and not os.path.lexists(os.path.join(staging, name)):
                os.rename(src, os.path.join(staging, name))
                kept.append(name)
    return kept


def _place_file(src: str, dest: str, how: str) -> None:
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    try:
        if how == "link":
            try:
                os.link(src, dest)
            except FileNotFoundError:
                raise
            except OSError:
                os.symlink(os.path.abspath(src), dest)
        else:
            shutil.copyfile(src, dest)
    except FileNotFoundError:
        raise DataError(f"file {src} does not exist (any more); run the job again") from None


def sink_uri(output_path: str, inputs: Sequence[Tuple[str, PartitionData]], job_output: str) -> Dict[str, Any]:
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    if foreign_contents(output_path):
        raise FileExistsError(f"output folder {output_path} exists and was not written by mpipipe; "
                              "remove it or choose another output path")
    named = _named(inputs)  # every footer read before anything at the destination is touched
    others = _other_files(inputs)
    fs, root = _open(output_path)
    root = root.rstrip("/")
    if fs.get_file_info(root).type == pafs.FileType.Directory:
        fs.delete_dir_contents(root, missing_dir_ok=True)
    fs.create_dir(root, recursive=True)
    with fs.open_output_stream(f"{root}/{WRITING}") as f:  # ours while it is written, complete only with MARKER
        f.write(b"{}")
    written = []
    for name, frags, schema, footer in named:
        table = read_text(frags) if frags[0].format not in TYPED else read_fragment(frags[0], None, footer)
        pq.write_table(conform_table(table, schema) if schema is not None else table, f"{root}/{name}", filesystem=fs)
        written.append(Fragment(output_path.rstrip("/") + "/" + name))
    for name, path in others:
        try:
            with open(path, "rb") as src, fs.open_output_stream(f"{root}/{name}") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        except FileNotFoundError:
            raise DataError(f"file {path} does not exist (any more); run the job again") from None
    with fs.open_output_stream(f"{root}/{MARKER}") as f:
        f.write(json.dumps({"type": "copy", "files": len(named) + len(others)}).encode())
    fs.delete_file(f"{root}/{WRITING}")
    write_manifest(job_output, written, None if written else _sink_schema(inputs))
    return {"files": len(named) + len(others), "path": output_path}
