#!/usr/bin/env python3
"""Run smallpond's own tests of its data API against mpipipe, with only the package name changed.

    python scripts/smallpond_tests.py SMALLPOND_CHECKOUT [--work DIR] [--deps DIR] [--timeout 600] [-k EXPR]
    python scripts/smallpond_tests.py --git-dir SMALLPOND.git --ref v0.15.0 ...

What it does, and nothing more:
1. takes smallpond's tests/, examples/ and benchmarks/ folders from a checkout (or from a git directory at a
   ref, v0.15.0 by default: `git archive`), into the work folder;
2. renames the package: `import smallpond`, `from smallpond.X import`, `smallpond.X` become mpipipe's
   (a word `smallpond` in prose stays); nothing else in the files changes, conftest.py and the TestFabric
   base class included;
3. runs pytest on the chosen files in the work folder against this checkout's mpipipe, with a time limit
   per test (smallpond's CI uses 600 s), and writes a summary: each test passed/failed/skipped, with a
   one-line reason for each failure, and the pass rate (skips not counted). After a test that failed (one
   over its time limit, say), the processes it left running are stopped (a pytest plugin of this script),
   so that they do not slow down the tests after it.

smallpond's conftest.py imports Ray to start a cluster whose address it passes to `init(ray_address=...)`.
mpipipe has no Ray (it ignores that address, with a warning): when `ray` is not installed, a stand-in
package whose `ray.init()` starts nothing is put on the path; the summary says which one ran.

smallpond's tests also need loguru, psutil, fsspec, GPUtil, filelock and pytest-benchmark. Install them where
the tests can import them (`pip install --target DIR loguru psutil fsspec GPUtil filelock pytest-benchmark`,
then `--deps DIR`); the script warns of what is missing. There is no network access in the script itself.

Which files (DATA_API_FILES): the tests that exercise smallpond's data API (DataFrame and Session,
datasets, io.arrow, logical plans and the planner, nodes run by a scheduler and executors, partitioning,
and the example programs). Left out: test_scheduler and test_workqueue (smallpond's file-based queue and
its executor probing), test_session (smallpond's queue and staging folders), test_driver (skipped by
smallpond unless ENABLE_DRIVER_TEST; needs gensort), test_bench, test_deltalake, test_filesystem
(io.filesystem), and test_common/test_utility (helpers, not the data API: `--files test_common.py
test_utility.py` runs them). `--files` runs any of them.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from typing import Dict, List, Optional, Tuple

DATA_API_FILES = ["test_dataframe.py", "test_dataset.py", "test_arrow.py", "test_logical.py", "test_execution.py",
                  "test_partition.py", "test_plan.py"]
FOLDERS = ["tests", "examples", "benchmarks"]
TEST_DEPS = {"loguru": "loguru", "psutil": "psutil", "fsspec": "fsspec", "GPUtil": "GPUtil", "filelock": "filelock",
             "pytest_benchmark": "pytest-benchmark", "pandas": "pandas", "numpy": "numpy"}
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# `import smallpond`, `from smallpond.x import ...`, `smallpond.init(...)`, "smallpond.execution.workqueue"
PACKAGE_NAME = re.compile(r"\bsmallpond(?=\.[A-Za-z_]|\s*$|\s+import\b|\s*,)", re.MULTILINE)

RAY_STAND_IN = '''"""A stand-in for Ray in smallpond's conftest.py (put here by scripts/smallpond_tests.py): mpipipe
does not use Ray, so ray.init() starts nothing and returns an address mpipipe ignores."""


class _Context:
    address_info = {"gcs_address": "ray-stand-in:0"}


def init(*args, **kwargs):
    return _Context()


def shutdown():
    pass
'''


CLEANUP_PLUGIN = '''"""A pytest plugin of scripts/smallpond_tests.py: after a test that failed (a time limit, say), the
processes it started and left running are stopped, so that they do not slow down the tests after it."""
import os
import signal

import pytest


def _descendants():
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, stack = set(), [os.getpid()]
    while stack:
        for pid in children.get(stack.pop(), []):
            if pid not in out:
                out.add(pid)
                stack.append(pid)
    return out


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    before = _descendants() if os.path.isdir("/proc") else set()
    item._smallpond_failed = []
    yield
    if item._smallpond_failed and os.path.isdir("/proc"):
        for pid in _descendants() - before:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    if outcome.get_result().failed and hasattr(item, "_smallpond_failed"):
        item._smallpond_failed.append(call.when)
'''


def take_files(source: Optional[str], git_dir: Optional[str], ref: str, work: str) -> str:
    """Copy smallpond's test, example and benchmark folders into `work`; returns where they came from."""
    # files are written over the ones of an earlier run; the data smallpond's tests generate (tests/data) is
    # kept, what they wrote (tests/runtime) is not
    shutil.rmtree(os.path.join(work, "tests", "runtime"), ignore_errors=True)
    if git_dir:
        archive = subprocess.run(["git", "--git-dir", git_dir, "archive", "--format=tar", ref] + FOLDERS,
                                 capture_output=True, check=False, timeout=120)
        if archive.returncode != 0:
            sys.exit(f"smallpond_tests: git archive {ref} in {git_dir} failed: "
                     f"{archive.stderr.decode(errors='replace').strip()}")
        subprocess.run(["tar", "-x", "-C", work], input=archive.stdout, check=True, timeout=120)
        commit = subprocess.run(["git", "--git-dir", git_dir, "rev-parse", ref + "^{commit}"], capture_output=True,
                                text=True, timeout=30).stdout.strip()
        return f"{git_dir} at {ref} ({commit})"
    assert source is not None
    if not os.path.isdir(os.path.join(source, "tests")):
        sys.exit(f"smallpond_tests: {source} has no tests/ folder; give a smallpond checkout, or --git-dir and --ref")
    for name in FOLDERS:
        if os.path.isdir(os.path.join(source, name)):
            shutil.copytree(os.path.join(source, name), os.path.join(work, name), dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("__pycache__", "runtime", "data"))
    return source


def rename_package(work: str) -> int:
    """smallpond -> mpipipe in the package's name only; returns how many names were changed."""
    changed = 0
    for name in FOLDERS:
        for folder, _dirs, files in os.walk(os.path.join(work, name)):
            for f in files:
                if not f.endswith(".py"):
                    continue
                path = os.path.join(folder, f)
                with open(path, encoding="utf-8") as fh:
                    text = fh.read()
                new, n = PACKAGE_NAME.subn("mpipipe", text)
                if n:
                    with open(path, "w", encoding="utf-8") as fh:
                        fh.write(new)
                    changed += n
    return changed


def python_path(work: str, deps: List[str], stand_ins: Optional[str]) -> str:
    parts = [work, REPO] + deps + ([stand_ins] if stand_ins else [])
    old = os.environ.get("PYTHONPATH")
    return os.pathsep.join(parts + ([old] if old else []))


def missing_modules(python: str, env: Dict[str, str], names: List[str]) -> List[str]:
    code = ("import importlib.util, sys\n"
            f"print(' '.join(n for n in {names!r} if importlib.util.find_spec(n) is None))")
    out = subprocess.run([python, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    return out.stdout.split()


def reason_of(element: ET.Element) -> str:
    """One line: the first line of the last exception shown (`E   ...`: after a chain of exceptions, the one
    the test ended with), else the start of the message."""
    message = element.get("message") or ""
    text = element.text or ""
    blocks: List[List[str]] = []
    previous = False
    for line in text.splitlines():
        is_e = line.startswith("E   ")
        if is_e and line[4:].strip():
            if not previous:
                blocks.append([])
            blocks[-1].append(line[4:].strip())
        previous = is_e
    if blocks:
        last = blocks[-1]
        line = last[0] if last[0] != "assert False" or len(last) < 2 else f"assert False: {last[1]}"
        return line[:200]
    first = message.strip().splitlines()[0] if message.strip() else (text.strip().splitlines() or [""])[-1]
    return first[:200]


def count_tests(path: str) -> int:
    """How many test functions a file defines (what a file that cannot be collected would have run)."""
    import ast

    try:
        with open(path, encoding="utf-8") as fh:
            tree = ast.parse(fh.read())
    except (OSError, SyntaxError):
        return 1
    return max(1, sum(1 for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name.startswith("test")))


def read_results(junit: str, work: str) -> List[Tuple[str, str, str, int]]:
    """(test id, outcome, reason, how many tests) for each test case of a JUnit XML report; a file that could
    not be collected counts as all of its tests failed."""
    rows = []
    for case in ET.parse(junit).getroot().iter("testcase"):
        classname, name = case.get("classname") or "", case.get("name") or ""
        test_id, weight = f"{classname}::{name}", 1
        if not classname and name.startswith("tests."):  # a collection error names the module
            path = os.path.join(work, *name.split(".")) + ".py"
            weight = count_tests(path)
            test_id = f"{os.path.relpath(path, work)} ({weight} tests, not collected)"
        outcome, reason = "passed", ""
        for child in case:
            if child.tag in ("failure", "error"):
                outcome, reason = "failed", reason_of(child)
                break
            if child.tag == "skipped":
                message = (child.get("message") or "").strip()
                outcome, reason = "skipped", message.splitlines()[0][:200] if message else ""
        rows.append((test_id, outcome, reason, weight))
    return rows


def write_summary(rows: List[Tuple[str, str, str, int]], path: str, header: List[str]) -> str:
    passed = sum(w for _, o, _, w in rows if o == "passed")
    failed = sum(w for _, o, _, w in rows if o == "failed")
    skipped = sum(w for _, o, _, w in rows if o == "skipped")
    ran = passed + failed
    rate = f"{100.0 * passed / ran:.1f}%" if ran else "n/a"
    lines = header + ["", f"passed {passed} of {ran} ({rate}); failed {failed}; skipped {skipped}", ""]
    lines += [f"{outcome:7} {test_id}" + (f"  -- {reason}" if reason else "") for test_id, outcome, reason, _ in rows]
    text = "\n".join(lines) + "\n"
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)
    return text


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", nargs="?", help="a smallpond checkout (a folder with tests/ and examples/)")
    parser.add_argument("--git-dir", help="a smallpond git directory (bare or .git), read at --ref")
    parser.add_argument("--ref", default="v0.15.0", help="with --git-dir: the tag or commit (default v0.15.0)")
    parser.add_argument("--work", help="where the renamed tests run (default: a new temporary folder)")
    parser.add_argument("--deps", action="append", default=[], help="a folder of the tests' own dependencies "
                        "(pip install --target DIR loguru psutil fsspec GPUtil filelock pytest-benchmark); may repeat")
    parser.add_argument("--files", nargs="+", default=DATA_API_FILES, help="test files of tests/ to run")
    parser.add_argument("-k", dest="keyword", help="pytest -k expression")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per test (smallpond's CI: 600)")
    parser.add_argument("--total-timeout", type=int, default=4 * 3600, help="seconds for the whole run")
    parser.add_argument("--summary", help="where the summary goes (default: WORK/summary.txt)")
    parser.add_argument("--python", default=sys.executable, help="the interpreter that runs pytest")
    args = parser.parse_args(argv)
    if bool(args.source) == bool(args.git_dir):
        parser.error("give a smallpond checkout folder, or --git-dir (with --ref), not both")

    work = os.path.abspath(args.work or tempfile.mkdtemp(prefix="smallpond-tests-"))
    os.makedirs(work, exist_ok=True)
    origin = take_files(os.path.abspath(args.source) if args.source else None, args.git_dir, args.ref, work)
    renamed = rename_package(work)

    env = dict(os.environ)
    env["PYTHONPATH"] = python_path(work, [os.path.abspath(d) for d in args.deps], None)
    stand_ins = None
    if missing_modules(args.python, env, ["ray"]):
        stand_ins = os.path.join(work, "_stand_ins")
        os.makedirs(os.path.join(stand_ins, "ray"), exist_ok=True)
        with open(os.path.join(stand_ins, "ray", "__init__.py"), "w", encoding="utf-8") as fh:
            fh.write(RAY_STAND_IN)
        env["PYTHONPATH"] = python_path(work, [os.path.abspath(d) for d in args.deps], stand_ins)
    harness = os.path.join(work, "_harness")
    os.makedirs(harness, exist_ok=True)
    with open(os.path.join(harness, "smallpond_tests_cleanup.py"), "w", encoding="utf-8") as fh:
        fh.write(CLEANUP_PLUGIN)
    env["PYTHONPATH"] += os.pathsep + harness
    missing = missing_modules(args.python, env, list(TEST_DEPS))
    if missing:  # the tests that import them fail, and the summary says so
        print(f"smallpond_tests: warning: smallpond's tests need {', '.join(missing)}; install them with `pip "
              f"install --target DIR {' '.join(TEST_DEPS[m] for m in missing)}` and pass --deps DIR", file=sys.stderr)
    junit = os.path.join(work, "junit.xml")
    cmd = [args.python, "-m", "pytest", "-p", "no:cacheprovider", "-p", "smallpond_tests_cleanup", "-o", "addopts=",
           "-rN", "-q", "--durations=0",
           "--durations-min=5", "--continue-on-collection-errors", f"--timeout={args.timeout}", f"--junitxml={junit}"]
    if args.keyword:
        cmd += ["-k", args.keyword]
    cmd += [os.path.join("tests", f) for f in args.files]
    print(f"smallpond_tests: {origin}; {renamed} package names renamed; running in {work}:\n  {' '.join(cmd)}",
          flush=True)
    if os.path.exists(junit):
        os.remove(junit)
    proc = subprocess.Popen(cmd, cwd=work, env=env, start_new_session=True)
    try:
        proc.wait(timeout=args.total_timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        proc.wait()
        print(f"smallpond_tests: the run took more than {args.total_timeout} s and was stopped", file=sys.stderr)
    if not os.path.exists(junit):
        print("smallpond_tests: pytest wrote no report (see its output above)", file=sys.stderr)
        return 1
    rows = read_results(junit, work)
    header = [f"smallpond's tests from {origin}, package renamed to mpipipe ({renamed} names), run in {work}",
              f"mpipipe from {REPO}; ray: {'stand-in (not installed)' if stand_ins else 'installed'}; "
              f"files: {' '.join(args.files)}; timeout {args.timeout} s per test"]
    summary = args.summary or os.path.join(work, "summary.txt")
    print(write_summary(rows, summary, header))
    print(f"smallpond_tests: summary written to {summary}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
