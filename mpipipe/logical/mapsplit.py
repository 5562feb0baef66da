"""The map side of a partitioning node over a one-partition source, cut into several tasks.

A hash (column, user) partitioning whose input is one partition would bucket every row in one task while
the other executors wait. When that input is a source whose files the plan lists, the node instead runs one
map task per contiguous range of the list, cut at Parquet row-group boundaries (at file boundaries for
other formats) so the tasks get about as many rows each. Every task writes every bucket; a consumer reads
bucket j of every task in task order, so each bucket holds the same rows, in the same order, as with one
task.

How many tasks: one per MAP_UNIT_ROWS rows (Parquet: counted in the footers the source read) or per
MAP_UNIT_BYTES bytes of files, whichever gives more, rounded up to a power of two (whole_waves); at most
MAX_MAP_TASKS, at most one per unit (row group, or file), and no more than `max_bucket_files // nbuckets`
(every task writes every bucket). The units are large because each task has a fixed cost, and a partial
aggregate on the map side (mpipipe.logical.partial) leaves more partial rows the more slices it sees; on one
host a one-task step already gets all of the host's cores (DataNode.task_resources), so the cut pays off
across hosts and for inputs of many units.
CSV and JSON files are split only when their column types are given (schema=): otherwise DuckDB decides the
types from all files together, and a task seeing some files could decide others.
"""
from __future__ import annotations

import hashlib
from typing import Dict, List, Optional, Sequence, Tuple

from mpipipe.data.fragment import Fragment

MAP_UNIT_ROWS = 8_000_000
MAP_UNIT_BYTES = 128 << 20
MAX_MAP_TASKS = 64

# one piece of a map task's input: fragments lo..hi-1 whole, or row groups g0..g1-1 of fragment lo (hi = lo+1)
Piece = Tuple[int, int, Optional[Tuple[int, int]]]
Slices = List[List[Piece]]


def typed(frag: Fragment) -> bool:
    """A fragment whose column types do not depend on which other files are read with it."""
    return frag.format == "parquet" or any(k == "columns" for k, _ in frag.options)


def auto_tasks(rows: Optional[int], size: Optional[int]) -> int:
    """The rule's task count before the caps: one per MAP_UNIT_ROWS rows or MAP_UNIT_BYTES bytes."""
    by_rows = rows // MAP_UNIT_ROWS if rows is not None else 0
    by_bytes = size // MAP_UNIT_BYTES if size is not None else 0
    return max(1, by_rows, by_bytes)


def whole_waves(k: int) -> int:
    """`k` rounded up to a power of two. Executors come in counts such as 1, 2, 4 or 8, and tasks of equal size
    in a count they do not divide leave executors idle through the last wave: the sort benchmark's 7 map tasks
    on 2 executors kept one of them idle for a whole task: 10.6 s, against 9.45 s with 8."""
    return 1 << (max(1, k) - 1).bit_length()


def plan_slices(frags: Sequence[Fragment], row_groups: Dict[str, Tuple[int, ...]], sizes: Dict[str, int],
                nbuckets: int, max_bucket_files: int, wanted: Optional[int] = None,
                files_only: bool = False) -> Optional[Slices]:
    """Each map task's pieces of `frags`, or None for one task. `row_groups`: rows per row group of each
    Parquet path (from its footer); `sizes`: bytes of each local file; `wanted`: the task count asked for
    (map_tasks=), else the rule's; `files_only`: never cut inside a file."""
    if len(frags) == 0 or not all(typed(f) for f in frags):
        return None
    known_rows = all(f.format == "parquet" and f.path in row_groups for f in frags)
    rows = [_rows(f, row_groups) for f in frags] if known_rows else None
    size = sum(sizes[f.path] for f in frags) if all(f.path in sizes for f in frags) else None
    if wanted is None:
        if rows is None and size is None:
            return None  # nothing tells how much work there is (object-store text files)
        k = min(whole_waves(auto_tasks(sum(rows) if rows is not None else None, size)), MAX_MAP_TASKS)
    else:
        k = wanted
    k = min(k, max(1, max_bucket_files // max(1, nbuckets)))
    if k <= 1:
        return None
    # units: (fragment, row group or None, weight)
    units: List[Tuple[int, Optional[int], int]] = []
    by_groups = known_rows and not files_only
    for i, f in enumerate(frags):
        if by_groups and f.whole:
            units.extend((i, g, n) for g, n in enumerate(row_groups[f.path]))
        else:
            units.append((i, None, rows[i] if rows is not None else sizes.get(f.path, 1)))
    k = min(k, len(units))
    if k <= 1:
        return None
    cuts = _cuts([w for _, _, w in units], k)
    return [_pieces(units[a:b], row_groups, frags) for a, b in zip(cuts, cuts[1:])]


def _rows(f: Fragment, row_groups: Dict[str, Tuple[int, ...]]) -> int:
    groups = row_groups[f.path]
    if f.rows is not None:
        return f.rows[1] - f.rows[0]
    if f.row_groups is not None:
        return sum(groups[g] for g in f.row_groups if g < len(groups))
    return sum(groups)


def _cuts(weights: Sequence[int], k: int) -> List[int]:
    """k contiguous, non-empty runs of the units with weights as even as unit boundaries allow: the run
    starts as positions 0 = c0 < c1 < ... < ck = len(weights)."""
    n = len(weights)
    total = sum(weights)
    cuts = [0]
    acc, u = 0, 0
    for t in range(1, k):
        target = total * t / k
        while u < n and acc + weights[u] / 2 <= target:  # a unit goes where most of it lies
            acc += weights[u]
            u += 1
        cut = min(max(u, cuts[-1] + 1), n - (k - t))
        while u < cut:
            acc += weights[u]
            u += 1
        while u > cut:
            u -= 1
            acc -= weights[u]
        cuts.append(cut)
    cuts.append(n)
    return cuts


def _pieces(units: Sequence[Tuple[int, Optional[int], int]], row_groups: Dict[str, Tuple[int, ...]],
            frags: Sequence[Fragment]) -> List[Piece]:
    """A run of units as pieces: neighbouring whole fragments as one range, a file's row groups as one
    range (the whole file when the run holds all of them)."""
    out: List[Piece] = []
    for i, g, _ in units:
        if g is None:
            if out and out[-1][2] is None and out[-1][1] == i:
                out[-1] = (out[-1][0], i + 1, None)
            else:
                out.append((i, i + 1, None))
        elif out and out[-1][0] == i and out[-1][2] is not None and out[-1][2][1] == g:
            out[-1] = (i, i + 1, (out[-1][2][0], g + 1))
        else:
            out.append((i, i + 1, (g, g + 1)))
    whole: List[Piece] = []
    for lo, hi, groups in out:
        if groups is not None and groups == (0, len(row_groups[frags[lo].path])):
            lo, hi, groups = lo, hi, None
        if groups is None and whole and whole[-1][2] is None and whole[-1][1] == lo:
            whole[-1] = (whole[-1][0], hi, None)
        else:
            whole.append((lo, hi, groups))
    return whole


def fragments_of(frags: Sequence[Fragment], pieces: Sequence[Piece]) -> List[Fragment]:
    """The fragments one map task reads."""
    out: List[Fragment] = []
    for lo, hi, groups in pieces:
        if groups is None:
            out.extend(frags[lo:hi])
        else:
            f = frags[lo]
            out.append(Fragment(f.path, f.format, tuple(range(*groups)), None, f.options))
    return out


def digest(slices: Optional[Slices]) -> str:
    """What decides which rows each map task reads (part of the node's fingerprint, so a journal made with
    other cuts is not reused)."""
    return "" if slices is None else hashlib.sha1(repr(slices).encode()).hexdigest()[:16]
