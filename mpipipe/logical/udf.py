"""Python functions callable from a node's SQL (smallpond's `ctx.create_function`, DuckDB's create_function).

Types are named with UDFType (DuckDB's type names), UDFListType, UDFStructType
and UDFMapType; a function is registered on each task's DuckDB connection, by
value, so it must be importable or picklable like any task body.
"""
from __future__ import annotations

import enum
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

from mpipipe.errors import PlanError


class UDFType(enum.Enum):
    """DuckDB's scalar types, by their SQL names."""

    BOOLEAN = "BOOLEAN"
    TINYINT = "TINYINT"
    SMALLINT = "SMALLINT"
    INTEGER = "INTEGER"
    BIGINT = "BIGINT"
    UTINYINT = "UTINYINT"
    USMALLINT = "USMALLINT"
    UINTEGER = "UINTEGER"
    UBIGINT = "UBIGINT"
    HUGEINT = "HUGEINT"
    FLOAT = "FLOAT"
    DOUBLE = "DOUBLE"
    VARCHAR = "VARCHAR"
    BLOB = "BLOB"
    DATE = "DATE"
    TIME = "TIME"
    TIMESTAMP = "TIMESTAMP"
    INTERVAL = "INTERVAL"
    UUID = "UUID"

    def sql(self) -> str:
        return self.value


class UDFListType:
    def __init__(self, element: "UDFAnyType") -> None:
        self.element = element

    def sql(self) -> str:
        return f"{_sql(self.element)}[]"


class UDFStructType:
    def __init__(self, fields: Dict[str, "UDFAnyType"]) -> None:
        self.fields = dict(fields)

    def sql(self) -> str:
        return "STRUCT(" + ", ".join(f'"{k}" {_sql(v)}' for k, v in self.fields.items()) + ")"


class UDFMapType:
    def __init__(self, key: "UDFAnyType", value: "UDFAnyType") -> None:
        self.key = key
        self.value = value

    def sql(self) -> str:
        return f"MAP({_sql(self.key)}, {_sql(self.value)})"


UDFAnyType = Union[UDFType, UDFListType, UDFStructType, UDFMapType, str]


def _sql(t: UDFAnyType) -> str:
    return t if isinstance(t, str) else t.sql()


class UserDefinedFunction:
    """A named function for a node's SQL; `register(con)` makes it callable on a DuckDB connection."""

    def __init__(self, name: str) -> None:
        self.name = name

    def register(self, con: Any) -> None:
        raise NotImplementedError

    def fingerprint(self) -> str:
        return self.name


class PythonUDF(UserDefinedFunction):
    """A Python function with its parameter and return types (`use_arrow_type`: called on Arrow arrays)."""

    def __init__(self, name: str, func: Callable[..., Any], params: Optional[Sequence[UDFAnyType]],
                 return_type: Optional[UDFAnyType], use_arrow_type: bool = False) -> None:
        if not callable(func):
            raise PlanError(f"function {name!r}: {func!r} is not callable")
        super().__init__(name)
        self.func = func
        self.params = list(params) if params is not None else None
        self.return_type = return_type
        self.use_arrow_type = use_arrow_type

    def register(self, con: Any) -> None:
        params: Optional[List[str]] = [_sql(p) for p in self.params] if self.params is not None else None
        ret = _sql(self.return_type) if self.return_type is not None else None
        con.create_function(self.name, self.func, params, ret, type="arrow" if self.use_arrow_type else "native")

    def fingerprint(self) -> str:
        import hashlib
        import inspect

        try:
            code = inspect.getsource(self.func)
        except (OSError, TypeError):
            code = repr(getattr(self.func, "__code__", self.func))
        digest = hashlib.sha1(code.encode()).hexdigest()[:16]
        return f"{self.name}|{digest}|{[_sql(p) for p in self.params or []]}|" \
               f"{_sql(self.return_type) if self.return_type is not None else ''}|{self.use_arrow_type}"
