"""What a partition of data is: fragments of files (whole files, Parquet row groups, row ranges), and the
files a set of paths, globs and folders names.

This sits below both the plan (mpipipe.logical, which describes datasets) and
the task bodies (mpipipe.steps, which read fragments), so neither imports the other
to learn what a fragment is.
"""
from __future__ import annotations

import fnmatch
import glob
import os
import re
import stat
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from mpipipe.errors import PlanError

_URI_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_WILDCARDS = re.compile(r"[*?\[]")

FORMATS = ("parquet", "csv", "json")
_SUFFIXES = {"parquet": (".parquet", ".parq", ".pq"), "csv": (".csv", ".tsv", ".csv.gz", ".tsv.gz"),
             "json": (".json", ".jsonl", ".ndjson", ".json.gz", ".jsonl.gz", ".ndjson.gz")}


def is_uri(path: str) -> bool:
    """An object-store or other pyarrow.fs URI (local `file://` URIs count too)."""
    return bool(_URI_RE.match(path))


@dataclass(frozen=True)
class Fragment:
    """One file, or a slice of one (Parquet row groups or a row range), in one format."""

    path: str
    format: str = "parquet"
    row_groups: Optional[Tuple[int, ...]] = None
    rows: Optional[Tuple[int, int]] = None  # [start, stop) within the file
    options: Tuple[Tuple[str, Any], ...] = ()

    @property
    def whole(self) -> bool:
        return self.row_groups is None and self.rows is None

    def to_json(self) -> Dict[str, Any]:
        d: Dict[str, Any] = {"path": self.path, "format": self.format}
        if self.row_groups is not None:
            d["row_groups"] = list(self.row_groups)
        if self.rows is not None:
            d["rows"] = list(self.rows)
        if self.options:
            d["options"] = [list(kv) for kv in self.options]
        return d

    @staticmethod
    def from_json(d: Dict[str, Any]) -> "Fragment":
        return Fragment(d["path"], d.get("format", "parquet"),
                        tuple(d["row_groups"]) if d.get("row_groups") is not None else None,
                        tuple(d["rows"]) if d.get("rows") is not None else None,  # type: ignore[arg-type]
                        tuple((k, v) for k, v in d.get("options", [])))


def _filesystem(uri: str) -> Tuple[Any, str]:
    import pyarrow.fs as pafs

    try:
        return pafs.FileSystem.from_uri(uri)
    except (ValueError, OSError) as e:
        raise PlanError(f"cannot open {uri}: {e}") from None


def _expand_uri(pattern: str, suffixes: Tuple[str, ...]) -> List[str]:
    import pyarrow.fs as pafs

    scheme = pattern.split("://", 1)[0]
    m = _WILDCARDS.search(pattern)
    base = pattern[: pattern.rfind("/", 0, m.start())] if m else pattern
    fs, root = _filesystem(base)
    try:
        info = fs.get_file_info(root)
        if info.type == pafs.FileType.File and not m:
            return [pattern]
        if info.type == pafs.FileType.NotFound:
            return []
        infos = fs.get_file_info(pafs.FileSelector(root, recursive=True))
    except OSError as e:
        raise PlanError(f"cannot list {pattern}: {e}") from None
    rel_pattern = pattern.split("://", 1)[1]
    out = []
    for i in infos:
        if i.type != pafs.FileType.File or os.path.basename(i.path).startswith(("_", ".")):
            continue
        if m:
            if fnmatch.fnmatchcase(i.path, rel_pattern):
                out.append(f"{scheme}://{i.path}")
        elif i.path.endswith(suffixes):
            out.append(f"{scheme}://{i.path}")
    return sorted(out)


def _expand_local(pattern: str, suffixes: Tuple[str, ...]) -> List[str]:
    if pattern.startswith("file://"):
        pattern = pattern[len("file://"):]
    pattern = os.path.expanduser(pattern)
    if _WILDCARDS.search(pattern):
        hits = sorted(glob.glob(pattern, recursive=True))
        # like a directory and an object-store glob: `_SUCCESS`, `_metadata` (a summary that points at the
        # data files, which DuckDB would count a second time) and hidden files are not data
        asked = os.path.basename(pattern).startswith(("_", "."))  # unless the pattern names such files
        return [os.path.abspath(h) for h in hits if not os.path.isdir(h)  # a FIFO or device is refused below
                and (asked or not os.path.basename(h).startswith(("_", ".")))]
    if os.path.isdir(pattern):
        found: List[str] = []
        for root, dirs, files in os.walk(pattern):
            dirs[:] = sorted(d for d in dirs if not d.startswith((".", "_")))
            found.extend(os.path.join(root, f) for f in files
                         if f.endswith(suffixes) and not f.startswith((".", "_")))
        return sorted(os.path.abspath(f) for f in found)
    if os.path.exists(pattern):
        return [os.path.abspath(pattern)]
    return []


_SPECIAL_FILES = ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISSOCK, "a socket"),
                  (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def _check_regular(path: str) -> None:
    """Inputs are regular files: reading a FIFO would wait forever for a writer, and a device never ends."""
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        raise PlanError(f"input file {path} cannot be read: {e.strerror}") from None
    if not stat.S_ISREG(mode):
        what = next((name for test, name in _SPECIAL_FILES if test(mode)), "not a regular file")
        raise PlanError(f"input file {path} is {what}; inputs must be regular files")


def expand_paths(paths: Union[str, Sequence[str]], fmt: str) -> List[str]:
    """Files named by paths, globs (`**` too) and directories, in a stable order; errors name what matched nothing."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [os.fspath(paths)]
    if not paths:
        raise PlanError("no input paths given")
    files: List[str] = []
    for p in paths:
        p = os.fspath(p)
        if is_uri(p) and not p.startswith("file://"):
            found = _expand_uri(p, _SUFFIXES[fmt])
        else:
            found = _expand_local(p, _SUFFIXES[fmt])
        if not found:
            hint = "" if _WILDCARDS.search(p) else f" (a directory is searched for {', '.join(_SUFFIXES[fmt])} files)"
            raise PlanError(f"input path {p!r} matches no file{hint}")
        for f in found:
            if is_uri(f):
                continue
            _check_regular(f)
            if not os.access(f, os.R_OK):
                raise PlanError(f"input file {f} is not readable (permission denied)")
        files.extend(found)
    return files
