"""Module cache keys by value: equal configurations share results, different ones never do, and a value that
cannot be keyed is refused; cached results someone else could have written are never unpickled."""
import ast
import json
import logging
import os
import pickle
import re
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import mpipipe
from helpers import env_for_tests, python
from mpipipe.errors import PlanError
from mpipipe.module import module_key, shards_of
from mpipipe.module_cache import ResultCache, read_result

NOBODY = 65534


class Holder(mpipipe.Module):
    """A module whose whole configuration is one attribute."""

    def __init__(self, value):
        self.value = value

    def run(self, iteration_value=None, iteration_index=0):
        return None


def key(value):
    return module_key(Holder(value))


# --- by value ---------------------------------------------------------------------------------------

def test_dataframes_differing_in_one_cell_get_different_keys():
    a = pd.DataFrame({"x": [1, 2, 3], "name": ["a", "b", "c"]})
    changed = a.copy()
    changed.loc[2, "x"] = 4
    assert key(a) == key(a.copy())
    assert key(a) != key(changed)
    renamed = a.copy()
    renamed.loc[1, "name"] = "B"
    assert key(a) != key(renamed)
    assert key(a) != key(a.astype({"x": "int32"}))  # same numbers, another dtype
    assert key(a) != key(a.rename(columns={"x": "y"}))


def test_object_columns_by_element_and_nan_stable():
    import decimal

    text = pd.DataFrame({"v": pd.Series(["1", None], dtype=object)})
    numbers = pd.DataFrame({"v": pd.Series([decimal.Decimal(1), float("nan")], dtype=object)})
    assert key(text) != key(numbers)  # pandas' own row hash takes str() of objects: these two would collide
    with_nan = pd.DataFrame({"f": [1.0, float("nan")]})
    assert key(with_nan) == key(pd.DataFrame({"f": [1.0, float("nan")]}))


def test_keys_are_the_same_in_processes_with_other_hash_seeds(tmp_path):
    (tmp_path / "frames_mod.py").write_text(textwrap.dedent("""
        import sys
        import mpipipe
        from mpipipe.module import module_key

        HEAVY = ("numpy", "pandas", "pyarrow", "omegaconf", "attrs", "pydantic")


        class Slotted:
            __slots__ = ("a", "tags")

            def __init__(self, a):
                self.a = a
                self.tags = {"x", "y", "z"}


        class Holder(mpipipe.Module):
            def __init__(self, value):
                self.value = value

            def run(self, iteration_value=None, iteration_index=0):
                return None


        def keys():
            before = {m for m in HEAVY if m in sys.modules}
            plain = module_key(Holder(Slotted(1)))
            imported = sorted({m for m in HEAVY if m in sys.modules} - before)
            import pandas as pd

            a = pd.DataFrame({"x": [1.5, float("nan")], "s": ["p", "q"], "o": pd.Series([1, "1"], dtype=object)})
            b = a.copy()
            b.loc[1, "s"] = "r"
            return [plain, imported, module_key(Holder(a)), module_key(Holder(a.copy())), module_key(Holder(b))]


        if __name__ == "__main__":
            print(keys())
    """))
    outputs = set()
    for seed in ("1", "2", "3"):
        done = subprocess.run([sys.executable, str(tmp_path / "frames_mod.py")], capture_output=True, text=True,
                              timeout=60, env=env_for_tests({"PYTHONHASHSEED": seed}), cwd=str(tmp_path))
        assert done.returncode == 0, done.stderr
        outputs.add(done.stdout.strip())
    assert len(outputs) == 1, outputs  # every hash seed gives the same keys
    plain, imported, a, a_copy, b = ast.literal_eval(outputs.pop())
    assert imported == []  # keying a plain object imports none of the data libraries
    assert a == a_copy != b


def test_a_100_mb_array_keys_in_well_under_a_second():
    arr = np.random.default_rng(0).random(100 * 2**20 // 8)
    started = time.perf_counter()
    first = key(arr)
    took = time.perf_counter() - started
    print(f"100 MB float64 array keyed in {took:.3f} s")
    assert took < 5  # about 0.1 s here; the bound only catches a return to element-by-element keying
    arr[len(arr) // 2] += 1
    assert key(arr) != first
    assert key(arr.astype(np.float32)) != key(arr)


def test_omegaconf_configs_keyed_by_their_resolved_values():
    omegaconf = pytest.importorskip("omegaconf")
    make = omegaconf.OmegaConf.create
    base = make({"model": {"depth": 4, "width": "${width}"}, "width": 128})
    assert key(base) == key(make({"model": {"depth": 4, "width": "${width}"}, "width": 128}))
    assert key(base) != key(make({"model": {"depth": 4, "width": "${width}"}, "width": 256}))
    assert key(base) != key(make({"model": {"depth": 5, "width": "${width}"}, "width": 128}))
    assert key(make([1, 2])) != key(make([1, 3]))


def test_arrow_tables_keyed_by_content_not_chunking():
    table = pa.table({"a": list(range(100)), "b": [str(i) for i in range(100)]})
    middle = table.to_pydict()
    middle["a"][50] = -1
    assert key(table) != key(pa.table(middle))  # repr() of both shows the same first and last rows
    assert key(table) == key(pa.concat_tables([table.slice(0, 30), table.slice(30)]))


def test_functions_and_methods_keyed_by_what_they_hold():
    def adder(n):
        return lambda x: x + n

    class Scale:
        def __init__(self, factor):
            self.factor = factor

        def apply(self, x):
            return x * self.factor

    assert key(adder(1)) == key(adder(1))
    assert key(adder(1)) != key(adder(2))  # same code, another captured value
    assert key(Scale(2).apply) != key(Scale(3).apply)


def test_cycles_are_keyed_by_position():
    a = {"name": "a"}
    a["self"] = a
    b = {"name": "a"}
    b["self"] = b
    c = {"name": "c"}
    c["self"] = c
    assert key(a) == key(b) != key(c)


# --- refused ------------------------------------------------------------------------------------------

class Db:
    def __init__(self, conn):
        self.conn = conn


class WithSocket(mpipipe.Module):
    def __init__(self, conn):
        self.config = {"db": Db(conn)}

    def run(self, iteration_value=None, iteration_index=0):
        return None


def test_an_unkeyable_attribute_is_a_plan_error_naming_it():
    with socket.socket() as conn:
        with pytest.raises(PlanError) as info:
            shards_of(WithSocket(conn))
    message = str(info.value)
    assert message.startswith("WithSocket.config['db'].conn: a socket.socket cannot be keyed by value"), message
    assert "nests more than" not in message and "mark such attributes transient" not in message
    # transient is offered only for what does not change the result
    for mention in re.finditer("transient", message):
        assert "does not change the result" in message[max(0, mention.start() - 80):mention.start()], message


def test_an_open_file_in_the_array_is_refused(tmp_path):
    class Files(mpipipe.Module):
        transient = ("handle",)

        def __init__(self, handle):
            self.handle = handle

        def array(self):
            return [1, self.handle]

    with open(tmp_path / "f", "w") as handle:
        with pytest.raises(PlanError, match=r"^Files\.array\(\)\[1\]: a _io\.TextIOWrapper \(an open file") as info:
            shards_of(Files(handle))
    assert "transient" not in str(info.value)


# --- planted cache files ------------------------------------------------------------------------------

class Planted:
    """Unpickling this creates `marker`: proof that the file was loaded."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return open, (self.marker, "w")


def plant(tmp_path, how):
    cache = ResultCache(str(tmp_path / "cache"))
    module = Holder(1)
    (shard,), _ = shards_of(module)
    path = cache.result_path(module, shard)
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    marker = str(tmp_path / "marker")
    with open(path, "wb") as f:
        pickle.dump(Planted(marker), f)
    os.chmod(path, 0o600)
    if how == "writable file":
        os.chmod(path, 0o666)
    elif how == "writable folder":
        os.chmod(os.path.dirname(path), 0o777)
    else:
        os.chown(path, NOBODY, NOBODY)
    return cache, module, shard, path, marker


@pytest.mark.parametrize("how", ["writable file", "writable folder", "owned by nobody"])
def test_a_planted_cached_result_is_never_unpickled(tmp_path, caplog, how):
    cache, module, shard, path, marker = plant(tmp_path, how)
    with caplog.at_level(logging.WARNING, logger="mpipipe"):
        assert cache.lookup(module, shard) == (False, None)  # a miss: the run is computed again
    assert not os.path.exists(marker)
    assert any(path in r.getMessage() and "is not loaded" in r.getMessage() for r in caplog.records), caplog.text
    with pytest.raises(PermissionError, match="is not loaded"):
        read_result(path)
    assert not os.path.exists(marker)


def test_results_are_written_owner_only(tmp_path):
    cache = ResultCache(str(tmp_path / "cache"))
    module = Holder(2)
    (shard,), _ = shards_of(module)
    path = cache.store(module, shard, {"answer": 42})
    assert os.stat(path).st_mode & 0o777 == 0o600
    for folder in (cache.root, os.path.dirname(os.path.dirname(path)), os.path.dirname(path)):
        assert os.stat(folder).st_mode & 0o777 == 0o700, folder
    assert cache.lookup(module, shard) == (True, {"answer": 42})


# --- through the scheduler ------------------------------------------------------------------------------

PIPELINE = textwrap.dedent("""
    import asyncio
    import json

    import pandas as pd

    import mpipipe


    class Total(mpipipe.Module):
        def __init__(self, frame):
            self.frame = frame

        def run(self, iteration_value=None, iteration_index=0):
            return int(self.frame["x"].sum())


    async def main():
        launcher = mpipipe.WorldLauncher()
        first = await launcher.schedule(Total(pd.DataFrame({"x": [1, 2, 3]})))
        second = await launcher.schedule(Total(pd.DataFrame({"x": [1, 2, 4]})))
        print(json.dumps({"first": first, "second": second}))


    if __name__ == "__main__":
        mpipipe.Driver().get_arguments()
        asyncio.run(main())
""")


@pytest.mark.timeout(180)
def test_modules_differing_only_in_a_dataframe_get_their_own_results(tmp_path):
    script = tmp_path / "frames_job.py"
    script.write_text(PIPELINE)
    argv = ("--platform", "local", "--num-executors", "1", "--data-root", str(tmp_path / "jobs"),
            "--cache-dir", str(tmp_path / "cache"))
    done = python(str(script), *argv, timeout=150)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert lines and json.loads(lines[-1]) == {"first": 6, "second": 7}, done.stdout
    assert done.stderr.count("0 found in the cache") == 2, done.stderr
    again = python(str(script), *argv, timeout=150)
    assert again.returncode == 0, again.stderr
    assert [line for line in again.stdout.splitlines() if line.startswith("{")][-1] == lines[-1]
    assert again.stderr.count("all found in the cache") == 2, again.stderr
