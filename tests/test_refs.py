"""Large inputs passed by reference: stored once, shipped small, loaded lazily where used."""
import os
import pickle
import re
import struct
import subprocess
import sys
import textwrap

import cloudpickle
import pytest

from mpipipe import refs
from mpipipe.errors import JournalError, MpipipeError, PlanError
from mpipipe.refs import ArrayRef, ElementRef, Ref, ValueRef, resolve, store, store_array

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def ship(x):
    """What a task does to its arguments: cloudpickle out, unpickle on the other side."""
    return pickle.loads(cloudpickle.dumps(x))


def files(d):
    return sorted(n for n in os.listdir(d))


# --- round trips ---------------------------------------------------------------------------------

@pytest.mark.parametrize("value", [0, 12345678901234567890, "text", None, {"a": [1, 2, {"b": (3, 4)}]}, [1.5, None]])
def test_value_round_trip(tmp_path, value):
    ref = store(value, tmp_path / "refs")
    assert isinstance(ref, ValueRef) and isinstance(ref, Ref)
    assert ref.load() == value
    assert ship(ref).load() == value
    assert resolve(ref) == value
    assert os.path.basename(ref.path) == f"value-{ref.digest[:16]}.pkl"
    assert os.path.isabs(ref.path)
    assert "ValueRef(" in repr(ref) and ref.digest[:16] in repr(ref)


def test_value_round_trip_lambda(tmp_path):
    """Values are cloudpickled, so a function defined here loads in another process too."""
    k = 3
    ref = store(lambda x: x * k, tmp_path)
    assert ship(ref).load()(5) == 15


def test_array_round_trip(tmp_path):
    items = [1, "two", {"three": 3}, None, [4, 5], (6,)]
    arr = store_array(items, tmp_path)
    assert isinstance(arr, ArrayRef)
    assert len(arr) == len(items)
    assert [arr[i] for i in range(len(items))] == items
    assert list(arr) == items
    assert list(ship(arr)) == items
    assert [arr.element(i).load() for i in range(len(items))] == items
    assert os.path.basename(arr.path) == f"array-{arr.digest[:16]}.bin"
    assert "ArrayRef(" in repr(arr) and "6 elements" in repr(arr)


def test_array_from_generator_and_empty(tmp_path):
    arr = store_array((i * i for i in range(10)), tmp_path)
    assert list(arr) == [i * i for i in range(10)]
    empty = store_array([], tmp_path)
    assert len(empty) == 0 and list(empty) == []
    with pytest.raises(IndexError):
        empty[0]


def test_numpy_round_trip(tmp_path):
    np = pytest.importorskip("numpy")
    a = np.arange(1000, dtype=np.float64).reshape(10, 100)
    loaded = ship(store(a, tmp_path)).load()
    assert loaded.dtype == a.dtype and np.array_equal(loaded, a)
    arr = store_array([a[i] for i in range(10)], tmp_path)
    assert np.array_equal(arr[3], a[3])
    assert np.array_equal(ship(arr.element(-1)).load(), a[9])


# --- content addressing and dedup ----------------------------------------------------------------

def test_store_same_value_writes_once(tmp_path):
    ref1 = store({"big": list(range(1000))}, tmp_path)
    mtime = os.stat(ref1.path).st_mtime_ns
    os.utime(ref1.path, ns=(0, 0))  # a rewrite would reset it
    ref2 = store({"big": list(range(1000))}, tmp_path)
    assert ref2.path == ref1.path and ref2.digest == ref1.digest and ref2 == ref1
    assert hash(ref2) == hash(ref1)
    assert os.stat(ref1.path).st_mtime_ns == 0 != mtime
    assert files(tmp_path) == [os.path.basename(ref1.path)]  # no temporary files left behind
    other = store({"big": list(range(1001))}, tmp_path)
    assert other.digest != ref1.digest and other != ref1
    assert len(files(tmp_path)) == 2


def test_store_rewrites_a_truncated_file(tmp_path):
    """A same-named file of the wrong size (a crash, a bad copy) is not trusted as the content."""
    ref = store(list(range(100)), tmp_path)
    with open(ref.path, "r+b") as f:
        f.truncate(3)
    ref2 = store(list(range(100)), tmp_path)
    assert ref2.load() == list(range(100))


def test_store_array_same_items_writes_once(tmp_path):
    arr1 = store_array(list(range(100)), tmp_path)
    for p in (arr1.path, arr1.index_path):
        os.utime(p, ns=(0, 0))
    arr2 = store_array(list(range(100)), tmp_path)
    assert (arr2.path, arr2.index_path, arr2.digest) == (arr1.path, arr1.index_path, arr1.digest)
    assert os.stat(arr1.path).st_mtime_ns == 0 and os.stat(arr1.index_path).st_mtime_ns == 0
    assert files(tmp_path) == sorted(os.path.basename(p) for p in (arr1.path, arr1.index_path))


def test_digests_tell_apart_values_arrays_and_boundaries(tmp_path):
    assert store([1, 2], tmp_path).digest != store_array([1, 2], tmp_path).digest
    assert store_array([[1], [2]], tmp_path).digest != store_array([[1, 2]], tmp_path).digest
    arr = store_array(["a", "b"], tmp_path)
    e = arr.element(1)
    assert isinstance(e, ElementRef) and isinstance(e, Ref)
    assert e.array_digest == arr.digest and e.index == 1 and e.digest == f"{arr.digest}[1]"
    assert arr.element(-1).digest == e.digest  # normalized, so the cache key is stable
    assert ship(e).digest == e.digest and ship(e) == e
    assert arr.element(0) != e


# --- laziness and size ---------------------------------------------------------------------------

def test_element_reads_only_its_own_bytes(tmp_path, monkeypatch):
    big = [bytes([i]) * 200_000 for i in range(5)]
    arr = store_array(big, tmp_path)
    reads = []
    real = refs._read_range

    def spy(path, start, size):
        reads.append((path, start, size))
        return real(path, start, size)

    monkeypatch.setattr(refs, "_read_range", spy)
    assert ship(arr.element(2)).load() == big[2]
    data_reads = [r for r in reads if r[0] == arr.path]
    index_reads = [r for r in reads if r[0] == arr.index_path]
    assert len(data_reads) == 1 and data_reads[0][2] < 200_100  # one element, not a megabyte
    assert index_reads == [(arr.index_path, 16, 16)]  # two offsets
    assert reads == [r for r in reads if r[0] in (arr.path, arr.index_path)]


def test_corrupted_other_element_does_not_matter(tmp_path):
    arr = store_array([b"x" * 1000, b"y" * 1000, b"z" * 1000], tmp_path)
    with open(arr.path, "r+b") as f:  # smash element 0 and the end of the file
        f.write(b"\xff" * 500)
        f.seek(0, 2)
        f.seek(f.tell() - 300)
        f.write(b"\xff" * 300)
    assert arr[1] == b"y" * 1000
    with pytest.raises(JournalError, match="damaged"):
        arr[0]


def test_load_is_memoized_but_not_pickled(tmp_path):
    ref = store(b"v" * 100_000, tmp_path)
    first = ref.load()
    os.remove(ref.path)
    assert ref.load() is first  # once per process
    assert len(cloudpickle.dumps(ref)) < 1024  # the memo does not travel
    with pytest.raises(JournalError, match="missing"):
        ship(ref).load()

    arr = store_array([b"e" * 100_000], tmp_path)
    e = arr.element(0)
    assert e.load() is e.load()
    assert len(cloudpickle.dumps(e)) < 1024


def test_pickled_refs_stay_small(tmp_path):
    ref = store(b"\0" * 50_000_000, tmp_path)
    assert ref.load() == b"\0" * 50_000_000
    assert len(cloudpickle.dumps(ref)) < 1024
    assert len(cloudpickle.dumps(lambda: resolve(ref))) < 2048  # a task capturing the ref

    arr = store_array(range(100_000), tmp_path)
    assert len(arr) == 100_000 and arr[99_999] == 99_999 and arr[-100_000] == 0
    assert len(cloudpickle.dumps(arr)) < 1024
    assert len(cloudpickle.dumps(arr.element(54_321))) < 1024
    assert os.path.getsize(arr.index_path) == 8 * 100_001
    os.remove(ref.path)  # pytest keeps recent tmp_paths; do not leave 50 MB behind


def test_len_does_not_read_files(tmp_path):
    arr = store_array(list(range(1000)), tmp_path)
    os.remove(arr.path)
    os.remove(arr.index_path)
    assert len(ship(arr)) == 1000


# --- indexing -----------------------------------------------------------------------------------

def test_negative_index_and_index_error(tmp_path):
    arr = store_array(["a", "b", "c"], tmp_path)
    assert arr[-1] == "c" and arr[-3] == "a"
    assert arr.element(-2).index == 1 and arr.element(-2).load() == "b"
    for bad in (3, -4, 100):
        with pytest.raises(IndexError):
            arr[bad]
        with pytest.raises(IndexError):
            arr.element(bad)
    with pytest.raises(TypeError):
        arr["0"]


def test_numpy_integer_index(tmp_path):
    np = pytest.importorskip("numpy")
    arr = store_array(["a", "b"], tmp_path)
    assert arr[np.int64(1)] == "b"


# --- resolve --------------------------------------------------------------------------------------

def test_resolve(tmp_path):
    arr = store_array([10, 20], tmp_path)
    assert resolve(arr.element(1)) == 20
    assert resolve(5) == 5
    assert resolve(arr) is arr  # an ArrayRef is passed on; tasks index it themselves


# --- errors ---------------------------------------------------------------------------------------

def test_missing_file_message(tmp_path):
    ref = store({"a": 1}, tmp_path)
    os.remove(ref.path)
    with pytest.raises(JournalError) as info:
        ship(ref).load()
    msg = str(info.value)
    assert isinstance(info.value, MpipipeError)
    assert msg == f"the reference points to {ref.path}, which is missing; store the value again"
    assert "\n" not in msg

    arr = store_array([1, 2], tmp_path)
    os.remove(arr.path)
    with pytest.raises(JournalError, match="which is missing; store the value again"):
        arr.element(1).load()
    with pytest.raises(JournalError, match="missing"):
        list(arr)


def test_truncated_files(tmp_path):
    ref = store(list(range(1000)), tmp_path)
    with open(ref.path, "r+b") as f:
        f.truncate(10)
    with pytest.raises(JournalError, match=r"truncated.*store the value again"):
        ship(ref).load()

    arr = store_array([b"a" * 100, b"b" * 100], tmp_path)
    with open(arr.path, "r+b") as f:
        f.truncate(150)
    assert arr[0] == b"a" * 100
    with pytest.raises(JournalError, match="truncated"):
        arr[1]
    with pytest.raises(JournalError, match="truncated"):
        list(arr)
    with open(arr.index_path, "r+b") as f:
        f.truncate(8)
    with pytest.raises(JournalError, match=f"{arr.index_path}.*truncated"):
        arr[0]


def test_damaged_value_is_caught_by_the_digest(tmp_path):
    ref = store([1, 2, 3], tmp_path)
    data = bytearray(open(ref.path, "rb").read())
    data[-3] ^= 1
    with open(ref.path, "wb") as f:
        f.write(data)
    with pytest.raises(JournalError, match="damaged"):
        ship(ref).load()


@pytest.mark.parametrize("bad", [5, None, "abc", b"abc", {"a": 1}])
def test_store_array_rejects_non_sequences(tmp_path, bad):
    with pytest.raises(PlanError, match="store_array"):
        store_array(bad, tmp_path)
    assert files(tmp_path) == []


def test_unwritable_folder(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(JournalError, match="reference folder"):
        store(1, blocker / "refs")


def test_unpicklable_input_is_a_plan_error_and_leaves_no_files(tmp_path):
    import threading

    with pytest.raises(PlanError, match=r"^element 1 passed to store_array\(\) cannot be pickled \(TypeError"):
        store_array([1, threading.Lock()], tmp_path)
    with pytest.raises(PlanError, match="the value passed to store"):
        store({"lock": threading.Lock()}, tmp_path)
    assert files(tmp_path) == []


def test_failing_generator_leaves_no_files(tmp_path):
    def items():
        yield 1
        raise RuntimeError("source broke")

    with pytest.raises(RuntimeError, match="source broke"):
        store_array(items(), tmp_path)
    assert files(tmp_path) == []


# --- another process ----------------------------------------------------------------------------

def test_refs_load_in_another_process(tmp_path):
    np = pytest.importorskip("numpy")
    value = {"weights": np.arange(10_000, dtype=np.int32), "name": "model"}
    ref = store(value, tmp_path / "shared")
    arr = store_array([{"i": i, "sq": i * i} for i in range(50)], tmp_path / "shared")
    payload = tmp_path / "task.pkl"
    payload.write_bytes(cloudpickle.dumps((ref, arr.element(7), arr.element(-1), arr)))
    script = textwrap.dedent("""
        import pickle, sys
        from mpipipe.refs import resolve
        ref, e7, elast, arr = pickle.load(open(sys.argv[1], "rb"))
        v = resolve(ref)
        out = (int(v["weights"].sum()), v["name"], resolve(e7), elast.load(), len(arr), arr[3], e7.digest)
        sys.stdout.buffer.write(pickle.dumps(out))
    """)
    proc = subprocess.run([sys.executable, "-c", script, str(payload)], capture_output=True, timeout=60,
                          cwd=str(tmp_path), env={**os.environ, "PYTHONPATH": ROOT})
    assert proc.returncode == 0, proc.stderr.decode()
    out = pickle.loads(proc.stdout)
    assert out == (int(value["weights"].sum()), "model", {"i": 7, "sq": 49}, {"i": 49, "sq": 2401}, 50,
                   {"i": 3, "sq": 9}, arr.element(7).digest)


# --- files someone else could have written ---------------------------------------------------------------

NOBODY = 65534


class _Planted:
    """Unpickling this creates `marker`: proof that the file was loaded."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return open, (self.marker, "w")


def test_a_ref_file_owned_by_someone_else_is_not_loaded(tmp_path):
    ref = store({"a": 1}, tmp_path / "refs")
    os.chown(ref.path, NOBODY, NOBODY)
    with pytest.raises(PlanError, match=re.escape(ref.path) + ".*belongs to"):
        ship(ref).load()


@pytest.mark.parametrize("how", ["writable folder", "writable file", "owned by nobody"])
def test_a_planted_array_element_is_never_unpickled(tmp_path, how):
    folder = tmp_path / "refs"
    arr = store_array(["x", "y"], folder)
    marker = tmp_path / "marker"
    data = pickle.dumps(_Planted(str(marker)))
    with open(arr.path, "wb") as f:
        f.write(data + data)
    with open(arr.index_path, "wb") as f:
        f.write(struct.pack("<3Q", 0, len(data), 2 * len(data)))
    if how == "writable folder":
        os.chmod(folder, 0o777)
    elif how == "writable file":
        os.chmod(arr.path, 0o666)
    else:
        os.chown(arr.index_path, NOBODY, NOBODY)  # the offsets choose which bytes are unpickled
    for load in (lambda: arr[0], lambda: arr.element(1).load(), lambda: list(arr)):
        with pytest.raises(PlanError, match="is not loaded"):
            load()
    assert not marker.exists()


def test_store_refuses_a_folder_others_can_write_and_replaces_a_planted_file(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    os.chmod(shared, 0o777)
    with pytest.raises(JournalError, match="not safe to use"):
        store(1, shared)
    ref = store({"b": 2}, tmp_path / "refs")
    os.chown(ref.path, NOBODY, NOBODY)
    again = store({"b": 2}, tmp_path / "refs")  # same content, same name: written anew, now the user's own
    assert again.path == ref.path and os.stat(ref.path).st_uid == os.geteuid()
    assert os.stat(ref.path).st_mode & 0o077 == 0 and os.stat(tmp_path / "refs").st_mode & 0o777 == 0o700
    assert again.load() == {"b": 2}


def test_an_array_ref_has_the_shape_mapping_consumers_ask_for(tmp_path):
    from mpipipe.refs import store_array

    ref = store_array([1, 2, 3], directory=str(tmp_path / "refs"))
    assert ref.shape == (3,) and ref[2] == 3
