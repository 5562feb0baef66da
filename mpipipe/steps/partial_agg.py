"""A GROUP BY after a hash shuffle, split into a partial aggregate per map task and a combining one per bucket.

Each map task aggregates its own slice by the group keys before its rows are hashed and written, so the
shuffle moves one row per group and task instead of every input row; each bucket then combines the partial
rows (sum of counts, min of mins, sum of sums over sum of counts for avg, ...). This is only right when every
group lands in one bucket (the hash columns are group keys) and every aggregate combines exactly; anything
else is refused with a reason and the query runs as written.

DuckDB parses the query (`json_serialize_sql`) and renders the two new ones from edited parse trees
(`json_deserialize_sql`); both are then bound against empty tables and their output must have the user's
column names and types, or the split is refused.
"""
from __future__ import annotations

import copy
import functools
import json
import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from mpipipe.data.duckdb_tables import register_empty
from mpipipe.errors import PlanError

_VIEW = "__mpipipe_input_0"  # what `{0}` becomes (mpipipe.steps.sql.input_view(0))
_PARTIAL = "__mpipipe_p"  # partial columns: __mpipipe_p0, __mpipipe_p1, ...
# the input as written in a rendered query (a string literal is skipped, so its text is never touched)
_VIEW_OR_STRING = re.compile(r"'(?:[^']|'')*'|\b" + _VIEW + r"\b")
_PLACEHOLDER_OR_STRING = re.compile(r"'(?:[^']|'')*'|\{0\}")

# expression classes a row-level expression (an aggregate's argument, a WHERE) or an expression over
# aggregates may be built from; anything else (subqueries, windows, lambdas, stars, parameters) is refused
_SCALAR_CLASSES = frozenset({"COLUMN_REF", "CONSTANT", "FUNCTION", "COMPARISON", "CONJUNCTION", "OPERATOR", "CAST",
                             "CASE", "BETWEEN", "COLLATE", "TYPE"})

# aggregate -> (partial aggregates on the map side, how the bucket combines them: a format over the partial
# columns' names, cast to the one-phase type where the combination's own type differs)
_COMBINE: Dict[str, Tuple[Tuple[str, ...], str, bool]] = {
    "count_star": (("count_star",), "sum({0})", True),
    "count": (("count",), "sum({0})", True),
    "sum": (("sum",), "sum({0})", True),
    "min": (("min",), "min({0})", False),
    "max": (("max",), "max({0})", False),
    "avg": (("sum", "count"), "CAST(sum({0}) AS DOUBLE) / sum({1})", True),
    "mean": (("sum", "count"), "CAST(sum({0}) AS DOUBLE) / sum({1})", True),
    "bool_and": (("bool_and",), "bool_and({0})", False),
    "bool_or": (("bool_or",), "bool_or({0})", False),
    "bit_and": (("bit_and",), "bit_and({0})", False),
    "bit_or": (("bit_or",), "bit_or({0})", False),
    "bit_xor": (("bit_xor",), "bit_xor({0})", False),
}
_NUMERIC = re.compile(r"(TINYINT|SMALLINT|INTEGER|BIGINT|HUGEINT|UTINYINT|USMALLINT|UINTEGER|UBIGINT|FLOAT|DOUBLE"
                      r"|DECIMAL\(\d+,\s*\d+\))$")


@dataclass(frozen=True)
class Split:
    """The queries, each over `{0}`: the map task's slice -> partial rows (group keys under their own names,
    then partial columns), and a bucket of partial rows -> the user's rows. `rows_query` gives the same
    columns for each row on its own (no GROUP BY), for a slice whose keys hardly repeat: aggregating it
    would cost more than it saves (see map_select); "" when a row cannot be written so."""

    map_query: str
    reduce_query: str
    aggregates: Tuple[str, ...]  # the user's aggregates, for describe()
    rows_query: str = ""
    estimate_query: str = ""  # (rows, rows of a sample, its groups) of the slice after its WHERE


# a map task aggregates its slice when the groups are at most this share of its rows: measured on the group-by
# bench's data plane (one DuckDB thread), aggregating cost 20% more CPU at 94% groups per row, 7% more at
# 74%, and saved 26% at 37% and 68% at 2%
AGGREGATE_BELOW = 0.5
SAMPLE_ROWS = 16384  # the first rows of a slice, whose groups estimate the slice's


class _Refused(Exception):
    """Not provably decomposable; the message says why."""


def split_aggregate(query: str, hash_columns: Sequence[str], schema: Any, input_names: Sequence[str] = ("input",),
                    partition_column: Optional[str] = None) -> Tuple[Optional[Split], str]:
    """(Split, "") when `query` (over one input, `{0}`) can be aggregated before a shuffle by `hash_columns`
    of rows with `schema` (a pyarrow.Schema: the shuffle's input); else (None, the reason), the reason
    being "" for a query that aggregates nothing."""
    import duckdb

    if schema is None:
        return None, "the input's columns are not known before running"
    if not hash_columns:
        return None, "rows are not partitioned by columns"
    con = _database().cursor()  # a connection of its own (its views are its own), to a database made once
    try:
        con.execute("SET enable_progress_bar = false")
        return _split(con, query, list(hash_columns), schema, list(input_names), partition_column), ""
    except _Refused as e:
        return None, str(e)
    except duckdb.Error as e:
        return None, "DuckDB could not check the split: " + " ".join(str(e).split())[:200]
    finally:
        con.close()


def over(query: str, view: str) -> str:
    """A query of a Split with `{0}` replaced by the name of the view that holds its input."""
    return _PLACEHOLDER_OR_STRING.sub(lambda m: view if m.group(0) == "{0}" else m.group(0), query)


def map_select(split: Split, con: Any, view: str) -> Tuple[str, str]:
    """(the query a map task buckets, "aggregated" or "rows"): its slice (`view` on `con`) aggregated when
    its keys repeat enough, else its rows one by one in the same columns. The groups are estimated from
    the slice's first SAMPLE_ROWS rows (their distinct keys, counted exactly), as if keys were drawn
    uniformly (a few milliseconds; reading every key would cost a tenth of the aggregation it decides on)."""
    if split.rows_query:
        rows, sampled, distinct = con.execute(over(split.estimate_query, view)).fetchall()[0]
        if estimated_groups(rows, sampled, distinct) > AGGREGATE_BELOW * rows:
            return over(split.rows_query, view), "rows"
    return over(split.map_query, view), "aggregated"


def estimated_groups(rows: int, sampled: int, distinct: int) -> float:
    """The distinct keys of `rows` rows whose first `sampled` held `distinct`, when keys are drawn uniformly
    from K values: distinct = K(1 - exp(-sampled/K)) gives K, and the rows then hold K(1 - exp(-rows/K))."""
    if sampled >= rows or distinct <= 0:
        return float(distinct)
    if distinct >= sampled:
        return float(rows)
    lo, hi = float(distinct), float(distinct)
    while hi * -math.expm1(-sampled / hi) < distinct:  # the expression grows with K toward `sampled`
        hi *= 2
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if mid * -math.expm1(-sampled / mid) < distinct else (lo, mid)
    return hi * -math.expm1(-rows / hi)


# --- reading the query -------------------------------------------------------------------------

def _split(con: Any, query: str, hash_columns: List[str], schema: Any, input_names: List[str],
           partition_column: Optional[str]) -> Split:
    from mpipipe.steps.sql import substitute

    try:
        text = substitute("partial aggregate", query, input_names)
    except PlanError:
        raise _Refused("the query refers to something other than its one input (another input, the partition "
                       "number)") from None
    register_empty(con, _VIEW, schema)
    if len(con.extract_statements(text)) != 1:
        raise _Refused("the query has several statements")
    tree = json.loads(con.execute("SELECT json_serialize_sql(?)", [text]).fetchall()[0][0])
    if tree.get("error") or len(tree.get("statements", ())) != 1:
        raise _Refused("DuckDB cannot serialize the query")
    node = tree["statements"][0]["node"]
    if node.get("type") != "SELECT_NODE":
        raise _Refused("the query is not a single SELECT (a set operation, a VALUES list, ...)")
    if not _aggregates(node):
        raise _Refused("")  # a filter, a projection, a sort: no aggregate to split, nothing to say
    _check_shape(node)
    reader = _Reader(con, node, schema, partition_column)
    keys = reader.group_keys()
    missing = [c for c in hash_columns if c not in keys]
    if missing:
        raise _Refused(f"hash column(s) {', '.join(missing)} are not group keys, so a group can span buckets")
    if node.get("where_clause") is not None:
        reader.check_row_level(node["where_clause"], "the WHERE clause", keys_only=True)
    return _Builder(con, reader, node, text).build()


def _aggregates(node: Dict[str, Any]) -> bool:
    """Whether the query groups or calls an aggregate function (outside a window)."""
    if node.get("group_expressions") or node.get("aggregate_handling") != "STANDARD_HANDLING":
        return True
    return any(e.get("class") == "FUNCTION" and "aggregate" in _functions().get(e.get("function_name", ""),
                                                                                (frozenset(),))[0]
               for e in _walk([node.get("select_list"), node.get("having")]))


def _check_shape(node: Dict[str, Any]) -> None:
    if node.get("modifiers"):
        kinds = ", ".join(sorted({m.get("type", "?").replace("_MODIFIER", "") for m in node["modifiers"]}))
        raise _Refused(f"the query has {kinds} (it needs every row of the partition)")
    if node.get("cte_map", {}).get("map"):
        raise _Refused("the query has a WITH clause")
    if node.get("qualify") is not None:
        raise _Refused("the query has a QUALIFY clause")
    if node.get("sample") is not None:
        raise _Refused("the query has a USING SAMPLE clause")
    src = node.get("from_table") or {}
    if src.get("type") != "BASE_TABLE" or src.get("table_name") != _VIEW or src.get("schema_name") \
            or src.get("catalog_name") or src.get("sample") is not None or src.get("at_clause") is not None \
            or src.get("column_name_alias"):
        raise _Refused("the query does not read exactly its one input (a join, a table function, a subquery)")
    if node.get("aggregate_handling") not in ("STANDARD_HANDLING", "FORCE_AGGREGATES"):
        raise _Refused(f"the query's grouping ({node.get('aggregate_handling')}) is not a plain GROUP BY")


def _walk(obj: Any) -> Iterator[Dict[str, Any]]:
    """Every expression node in a parse tree (a dict with a "class"), outermost first."""
    if isinstance(obj, dict):
        if "class" in obj:
            yield obj
        for v in obj.values():
            yield from _walk(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _walk(v)


def _canonical(expr: Dict[str, Any]) -> str:
    """An expression's parse tree without positions and its own alias: equal text, equal expression."""
    def strip(o: Any) -> Any:
        if isinstance(o, dict):
            return {k: strip(v) for k, v in o.items() if k not in ("query_location", "query_location_length")}
        if isinstance(o, list):
            return [strip(v) for v in o]
        return o

    body = dict(expr, alias="")
    return json.dumps(strip(body), sort_keys=True)


@functools.lru_cache(maxsize=1)
def _database() -> Any:
    """An empty in-memory DuckDB for parsing and binding (opening one costs more than a split)."""
    import duckdb

    return duckdb.connect()


@functools.lru_cache(maxsize=1)
def _functions() -> Dict[str, Tuple[frozenset, bool, Tuple[str, ...]]]:
    """DuckDB's functions by name: their kinds (scalar, aggregate, macro, ...), whether they give the same
    result for the same arguments in the map and the reduce step, and the bodies of its macros. Same result:
    none of their overloads is volatile (random()), and not all are fixed per query (now()); a mix of
    consistent overloads and ones fixed per query is a function of time-zone-aware values, which depend on
    the session's settings only."""
    con = _database().cursor()
    try:
        rows = con.execute("SELECT function_name, function_type, stability, macro_definition FROM duckdb_functions() "
                           "WHERE internal AND schema_name IN ('main', 'pg_catalog')").fetchall()
    finally:
        con.close()
    kinds: Dict[str, set] = {}
    seen: Dict[str, set] = {}
    bodies: Dict[str, List[str]] = {}
    for name, kind, stability, body in rows:
        kinds.setdefault(name, set()).add(kind)
        seen.setdefault(name, set()).add(stability)
        if kind == "macro":
            bodies.setdefault(name, []).append(body or "")
    return {n: (frozenset(k), "CONSISTENT" in seen[n] and "VOLATILE" not in seen[n], tuple(bodies.get(n, ())))
            for n, k in kinds.items()}


@functools.lru_cache(maxsize=256)
def _plain_macro(name: str, depth: int = 0) -> bool:
    """A built-in macro (nullif, ...) whose every body is a scalar expression of consistent functions."""
    bodies = _functions().get(name, (frozenset(), False, ()))[2]
    if not bodies or depth > 4:
        return False
    con = _database().cursor()
    try:
        for body in bodies:
            tree = json.loads(con.execute("SELECT json_serialize_sql(?)", [f"SELECT {body}"]).fetchall()[0][0])
            if tree.get("error"):
                return False
            for e in _walk(tree["statements"][0]["node"].get("select_list")):
                if e.get("class") not in _SCALAR_CLASSES:
                    return False
                if e.get("class") == "FUNCTION":
                    kinds, stable, _ = _functions().get(e.get("function_name", ""), (frozenset(), False, ()))
                    if not (kinds == {"scalar"} and stable) and \
                            not (kinds == {"macro"} and _plain_macro(e["function_name"], depth + 1)):
                        return False
    finally:
        con.close()
    return True


def _function_kind(fn: Dict[str, Any]) -> str:
    """'aggregate' or 'scalar' (a built-in macro of scalar functions too), or _Refused saying why neither."""
    name = fn.get("function_name", "")
    if fn.get("schema") or fn.get("catalog"):
        raise _Refused(f"function {fn.get('schema')}.{name} is not one of DuckDB's own")
    kinds, stable, _ = _functions().get(name, (frozenset(), False, ()))
    if kinds == {"aggregate"}:
        return "aggregate"
    if (kinds == {"scalar"} and stable) or (kinds == {"macro"} and _plain_macro(name)):
        return "scalar"
    if kinds == {"scalar"}:
        raise _Refused(f"{name}() may give another value in each step")
    raise _Refused(f"function {name}() is not a known scalar or aggregate function (a table function, a macro "
                   "of other kinds)")


class _Reader:
    """What the query's parse tree says: its input columns, group keys, and row-level expressions."""

    def __init__(self, con: Any, node: Dict[str, Any], schema: Any, partition_column: Optional[str]) -> None:
        self.con = con
        self.node = node
        self.partition_column = partition_column
        src = node["from_table"]
        self.qualifier = (src.get("alias") or src["table_name"]).lower()
        self.columns: Dict[str, str] = {}
        for name in schema.names:
            if name.lower() in self.columns:
                raise _Refused(f"the input has columns that differ only in case ({name!r})")
            if name.startswith(_PARTIAL):
                raise _Refused(f"the input has a column named like a partial column ({name!r})")
            self.columns[name.lower()] = name
        self.keys: List[str] = []

    def column(self, ref: Dict[str, Any]) -> str:
        """The input column a COLUMN_REF names (`c`, `{0}.c`, `alias.c`)."""
        names = ref.get("column_names", [])
        if len(names) == 2 and names[0].lower() == self.qualifier:
            names = names[1:]
        if len(names) != 1:
            raise _Refused(f"{'.'.join(names)} is not a column of the input (a struct field or another table)")
        name = names[0]
        if self.partition_column and name.lower() == self.partition_column.lower():
            raise _Refused(f"the query reads the partition column {self.partition_column!r}, which the shuffle adds")
        if name.lower() not in self.columns:
            raise _Refused(f"{name} is not a column of the input (an alias of the select list?)")
        return self.columns[name.lower()]

    def group_keys(self) -> List[str]:
        node = self.node
        if node["aggregate_handling"] == "FORCE_AGGREGATES":  # GROUP BY ALL: the select items without aggregates
            exprs = [e for e in node["select_list"] if not self._has_aggregate(e)]
            if node.get("group_expressions") or node.get("group_sets"):
                raise _Refused("the query mixes GROUP BY ALL with groups")
        else:
            exprs = node.get("group_expressions") or []
            if node.get("group_sets") != [list(range(len(exprs)))]:
                raise _Refused("the query has GROUPING SETS, ROLLUP or CUBE" if len(node.get("group_sets") or []) > 1
                               else "the query has no GROUP BY")
        if not exprs:
            raise _Refused("the query has no group keys")
        keys = []
        for e in exprs:
            if e.get("class") != "COLUMN_REF":
                raise _Refused("a group key is not a plain column of the input (an expression, a position, an alias)")
            name = self.column(e)
            if name not in keys:
                keys.append(name)
        self.keys = keys
        self.key_exprs = exprs
        return keys

    def _has_aggregate(self, expr: Dict[str, Any]) -> bool:
        return any(e.get("class") == "FUNCTION" and _function_kind(e) == "aggregate" for e in _walk(expr))

    def check_row_level(self, expr: Dict[str, Any], what: str, keys_only: bool = False) -> None:
        """An expression evaluated row by row from input columns (in a WHERE: group keys only)."""
        for e in _walk(expr):
            cls = e.get("class")
            if cls not in _SCALAR_CLASSES:
                raise _Refused(f"{what} has a {str(cls).lower().replace('_', ' ')} expression")
            if cls == "FUNCTION":
                if _function_kind(e) != "scalar":
                    raise _Refused(f"{what} has an aggregate inside an aggregate or a WHERE")
                _plain_call(e, what)
            elif cls == "COLUMN_REF":
                name = self.column(e)
                if keys_only and name not in self.keys:
                    raise _Refused(f"{what} reads {name}, which is not a group key")


def _plain_call(fn: Dict[str, Any], what: str) -> None:
    name = fn.get("function_name")
    if fn.get("distinct"):
        raise _Refused(f"{what}: {name}(DISTINCT ...) needs every value of the group at once")
    if fn.get("filter") is not None:
        raise _Refused(f"{what}: {name}(...) has a FILTER clause")
    if (fn.get("order_bys") or {}).get("orders"):
        raise _Refused(f"{what}: {name}(... ORDER BY ...) depends on the order of the whole group")
    if fn.get("export_state"):
        raise _Refused(f"{what}: {name}(...) EXPORT_STATE")


# --- writing the two queries -----------------------------------------------------------------------

@dataclass
class _Aggregate:
    name: str  # the user's function (avg, count_star, ...)
    partials: List[int]  # indexes of its partial columns
    type: str = ""  # its DuckDB type in the one-phase query


class _Builder:
    def __init__(self, con: Any, reader: _Reader, node: Dict[str, Any], text: str) -> None:
        self.con = con
        self.reader = reader
        self.node = node
        self.text = text
        self.partials: List[Dict[str, Any]] = []  # the partial aggregates' parse trees, in column order
        self.partial_index: Dict[str, int] = {}
        self.aggregates: Dict[str, _Aggregate] = {}  # by canonical tree of the user's call
        self.calls: Dict[str, Dict[str, Any]] = {}  # a user's call by canonical tree, for the type query

    def build(self) -> Split:
        node = self.node
        # every aggregate of the select list and HAVING becomes partial columns (shared when equal)
        for item in node["select_list"]:
            self._collect(item, "the select list")
        if node.get("having") is not None:
            self._collect(node["having"], "the HAVING clause")
        if not self.aggregates:
            raise _Refused("the query has no aggregates")
        one_phase = self.con.sql(self.text)
        out_names, out_types = list(one_phase.columns), [str(t) for t in one_phase.types]
        if len(set(out_names)) != len(out_names):
            raise _Refused("the query's output has columns of the same name")
        self._aggregate_types()
        map_query = self._map_query()
        partial_schema = self.con.sql(map_query).to_arrow_table().schema
        rows_query = self._rows_query(map_query)
        reduce_query = self._reduce_query(out_names)
        register_empty(self.con, _VIEW, partial_schema)
        got = self.con.sql(reduce_query)
        if list(got.columns) != out_names or [str(t) for t in got.types] != out_types:
            raise _Refused(f"the combined result would have other columns or types ({_listing(got)} instead of "
                           f"{_listing(one_phase)})")
        keys = ", ".join(_quote(k) for k in self.reader.keys)
        estimate = (f"SELECT (SELECT count(*) FROM ({rows_query})), count(*), count(DISTINCT hash({keys})) "
                    f"FROM (SELECT {keys} FROM ({rows_query}) LIMIT {SAMPLE_ROWS})") if rows_query else ""
        return Split(_placeholder(map_query), _placeholder(reduce_query),
                     tuple(a.name for a in self.aggregates.values()),
                     _placeholder(rows_query) if rows_query else "", _placeholder(estimate) if estimate else "")

    # the aggregates and their partial columns

    def _collect(self, expr: Dict[str, Any], what: str) -> None:
        """Check an expression over group keys and aggregates, and give each aggregate its partial columns."""
        cls = expr.get("class")
        if cls not in _SCALAR_CLASSES:
            raise _Refused(f"{what} has a {str(cls).lower().replace('_', ' ')} expression")
        if cls == "COLUMN_REF":
            name = self.reader.column(expr)
            if name not in self.reader.keys:
                raise _Refused(f"{what} reads {name} outside an aggregate and it is not a group key")
            return
        if cls == "FUNCTION" and _function_kind(expr) == "aggregate":
            self._aggregate(expr, what)
            return
        if cls == "FUNCTION":
            _plain_call(expr, what)
        for child in _children(expr):
            self._collect(child, what)

    def _aggregate(self, fn: Dict[str, Any], what: str) -> None:
        name = fn["function_name"]
        args = [a.get("expression") for a in fn.get("arguments", [])]
        if any(a.get("name") for a in fn.get("arguments", [])):
            raise _Refused(f"{what}: {name}(...) has named arguments")
        if name == "count" and not args:
            name = "count_star"
        if name not in _COMBINE:
            raise _Refused(f"{what}: {name}() does not combine from partial results")
        _plain_call(fn, what)
        if len(args) != (0 if name == "count_star" else 1):
            raise _Refused(f"{what}: {name}() with {len(args)} arguments")
        for a in args:
            self.reader.check_row_level(a, f"the argument of {name}()")
        key = _canonical(fn)
        if key in self.aggregates:
            return
        partials = []
        for pname in _COMBINE[name][0]:
            call = _call(pname, args)
            pkey = _canonical(call)
            if pkey not in self.partial_index:
                self.partial_index[pkey] = len(self.partials)
                self.partials.append(call)
            partials.append(self.partial_index[pkey])
        self.aggregates[key] = _Aggregate(name, partials)
        self.calls[key] = dict(fn, alias="")

    def _aggregate_types(self) -> None:
        """Each aggregate's type in the one-phase query, and each partial's after its trip through Parquet."""
        probe = self._statement(list(self.calls.values()), where=True)
        types = [str(t) for t in self.con.sql(self._render(probe)).types]
        for agg, t in zip(self.aggregates.values(), types):
            agg.type = t
            if (agg.name == "sum" and not _NUMERIC.match(t)) or (agg.name in ("avg", "mean") and t != "DOUBLE"):
                raise _Refused(f"{agg.name}() giving {t}")
        probe = self._statement([dict(p, alias="") for p in self.partials], where=True)
        self.partial_types = [str(t) for t in self.con.sql(self._render(probe)).types]
        for agg in self.aggregates.values():
            if agg.name in ("avg", "mean") and not _NUMERIC.match(self.partial_types[agg.partials[0]]):
                raise _Refused(f"{agg.name}() of values whose sum is {self.partial_types[agg.partials[0]]}")

    def _map_query(self) -> str:
        items = [_column_ref(k, alias=k) for k in self.reader.keys]
        for i, p in enumerate(self.partials):
            t = self.partial_types[i]
            if t == "UHUGEINT":
                raise _Refused("a partial sum would be UHUGEINT, which Parquet cannot hold")
            # Parquet holds a HUGEINT as a DOUBLE: a partial sum of integers travels as DECIMAL(38,0) instead
            expr = _cast(self.con, p, "DECIMAL(38,0)") if t == "HUGEINT" else copy.deepcopy(p)
            expr["alias"] = f"{_PARTIAL}{i}"
            items.append(expr)
        return self._render(self._statement(items, where=True))

    def _rows_query(self, map_query: str) -> str:
        """The map query's columns for each row on its own: the group keys, and each partial aggregate of one
        row (count(*) -> 1, count(x) -> x IS NOT NULL, sum/min/max/bool/bit of x -> x), cast to the map
        query's types; "" when one of them cannot be."""
        import duckdb

        want = [str(t) for t in self.con.sql(map_query).types]
        items = [_column_ref(k, alias=k) for k in self.reader.keys]
        for p in self.partials:
            args = [a["expression"] for a in p["arguments"]]
            if p["function_name"] == "count_star":
                expr = _parse_expression(self.con, "CAST(1 AS BIGINT)")
            elif p["function_name"] == "count":
                expr = _parse_expression(self.con, "CAST((NULL IS NOT NULL) AS BIGINT)")
                expr["child"]["children"] = [copy.deepcopy(args[0])]
            else:
                expr = copy.deepcopy(args[0])
            items.append(expr)
        stmt = self._statement(items, where=True)
        stmt.update(group_expressions=[], group_sets=[])
        try:
            got = [str(t) for t in self.con.sql(self._render(stmt)).types]
            for i, (g, w) in enumerate(zip(got, want)):
                if g != w:
                    items[i] = _cast(self.con, items[i], w)
            for i, item in enumerate(items[len(self.reader.keys):]):
                item["alias"] = f"{_PARTIAL}{i}"
            stmt["select_list"] = items
            text = self._render(stmt)
            if [str(t) for t in self.con.sql(text).types] != want:
                return ""
        except duckdb.Error:
            return ""
        return text

    def _reduce_query(self, out_names: List[str]) -> str:
        combined = {}
        for key, agg in self.aggregates.items():
            _, fmt, cast = _COMBINE[agg.name]
            text = fmt.format(*(_quote(f"{_PARTIAL}{i}") for i in agg.partials))
            if cast:
                text = f"CAST({text} AS {agg.type})"
            combined[key] = _parse_expression(self.con, text)

        def replace(expr: Dict[str, Any]) -> Dict[str, Any]:
            key = _canonical(expr) if expr.get("class") == "FUNCTION" else None
            if key in combined:
                return copy.deepcopy(combined[key])
            return _map_children(expr, replace)

        items = []
        for item, name in zip(self.node["select_list"], out_names):
            new = replace(item)
            new["alias"] = name
            items.append(new)
        stmt = self._statement(items, where=False)
        if self.node.get("having") is not None:
            stmt["having"] = replace(self.node["having"])
        return self._render(stmt)

    # parse trees

    def _statement(self, items: List[Dict[str, Any]], where: bool) -> Dict[str, Any]:
        """A SELECT of `items` from the input, grouped by the keys (WHERE kept when asked)."""
        keys = [_column_ref(k) for k in self.reader.keys]
        stmt = copy.deepcopy(self.node)
        stmt.update(select_list=items, group_expressions=keys, group_sets=[list(range(len(keys)))],
                    aggregate_handling="STANDARD_HANDLING", having=None)
        if not where:
            stmt["where_clause"] = None
        return stmt

    def _render(self, stmt: Dict[str, Any]) -> str:
        return _render(self.con, stmt)


def _render(con: Any, stmt: Dict[str, Any]) -> str:
    tree = {"error": False, "statements": [{"node": stmt, "named_param_map": []}]}
    return con.execute("SELECT json_deserialize_sql(?)", [json.dumps(tree)]).fetchall()[0][0]


def _parse_expression(con: Any, text: str) -> Dict[str, Any]:
    tree = json.loads(con.execute("SELECT json_serialize_sql(?)", [f"SELECT {text}"]).fetchall()[0][0])
    expr: Dict[str, Any] = tree["statements"][0]["node"]["select_list"][0]
    return expr


def _cast(con: Any, expr: Dict[str, Any], type_name: str) -> Dict[str, Any]:
    cast = _parse_expression(con, f"CAST(NULL AS {type_name})")
    cast["child"] = copy.deepcopy(expr)
    return cast


def _call(name: str, args: List[Dict[str, Any]]) -> Dict[str, Any]:
    return {"class": "FUNCTION", "type": "FUNCTION", "alias": "", "function_name": name, "schema": "", "catalog": "",
            "filter": None, "order_bys": {"type": "ORDER_MODIFIER", "orders": []}, "distinct": False,
            "is_operator": False, "export_state": False,
            "arguments": [{"name": "", "expression": copy.deepcopy(a)} for a in args],
            "qualified_name": {"path": [name]}, "is_legacy_function_call": False}


def _column_ref(name: str, alias: str = "") -> Dict[str, Any]:
    return {"class": "COLUMN_REF", "type": "COLUMN_REF", "alias": alias, "column_names": [name]}


def _children(expr: Dict[str, Any]) -> Iterator[Dict[str, Any]]:
    """The expression nodes directly under `expr`."""
    for v in expr.values():
        for e in _top(v):
            yield e


def _top(obj: Any) -> Iterator[Dict[str, Any]]:
    if isinstance(obj, dict):
        if "class" in obj:
            yield obj
            return
        for v in obj.values():
            yield from _top(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _top(v)


def _map_children(expr: Dict[str, Any], fn: Callable[[Dict[str, Any]], Dict[str, Any]]) -> Dict[str, Any]:
    """A copy of `expr` with each expression node directly under it replaced by fn(node)."""
    def go(o: Any) -> Any:
        if isinstance(o, dict):
            return fn(o) if "class" in o else {k: go(v) for k, v in o.items()}
        if isinstance(o, list):
            return [go(v) for v in o]
        return o

    return {k: go(v) for k, v in expr.items()}


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _listing(rel: Any) -> str:
    return ", ".join(f"{c} {t}" for c, t in zip(rel.columns, rel.types))


def _placeholder(query: str) -> str:
    """A rendered query with its input written `{0}` again."""
    found = [0]

    def repl(m: "re.Match[str]") -> str:
        if m.group(0).startswith("'"):
            return m.group(0)
        found[0] += 1
        return "{0}"

    out = _VIEW_OR_STRING.sub(repl, query)
    if not found[0]:
        raise _Refused("the rendered query does not name its input")
    return out
