"""The install is reproducible: constraints.txt pins every package that setup.cfg asks for, in every extra."""
import configparser
import os
import re

from helpers import REPO


def _names(spec_lines, python=None):
    """The distribution names of requirement lines; with `python` ("3.11"), only those whose environment
    marker holds for that Python (tomli; python_version < "3.11" is not needed on 3.11)."""
    out = set()
    for line in spec_lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if python is not None and ";" in line:
            from packaging.markers import Marker

            if not Marker(line.split(";", 1)[1]).evaluate({"python_version": python, "python_full_version": python}):
                continue
        out.add(re.split(r"[<>=!~\[; ]", line, maxsplit=1)[0].lower().replace("_", "-"))
    return out


def test_constraints_pin_every_requirement_of_every_extra():
    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(REPO, "setup.cfg"))
    with open(os.path.join(REPO, "constraints.txt")) as f:
        made = re.search(r"with Python (\d+\.\d+)", f.read())
    python = made.group(1) if made else "3.11"
    wanted = _names(cfg["options"]["install_requires"].splitlines(), python)
    for extra in cfg["options.extras_require"]:
        wanted |= _names(cfg["options.extras_require"][extra].splitlines(), python)
    pins = {}
    with open(os.path.join(REPO, "constraints.txt")) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            m = re.match(r"^([A-Za-z0-9._-]+)==([^ ;]+)\s*(;.*)?$", line)
            assert m, f"constraints.txt: not an exact pin: {line!r}"
            pins[m.group(1).lower().replace("_", "-")] = m.group(2)
    missing = sorted(n for n in wanted if n not in pins)
    assert not missing, f"not pinned in constraints.txt (run make lock): {missing}"
    assert "mpipipe" not in pins


# --- what a package index and an installer read -------------------------------------------------------------

def _setup_cfg() -> configparser.ConfigParser:
    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(REPO, "setup.cfg"))
    return cfg


def _toml(path: str) -> dict:
    import sys

    if sys.version_info >= (3, 11):
        import tomllib
    else:
        import tomli as tomllib
    with open(path, "rb") as f:
        return tomllib.load(f)


def test_pyproject_names_the_build_backend_and_configures_the_checkers():
    py = _toml(os.path.join(REPO, "pyproject.toml"))
    assert py["build-system"]["build-backend"] == "setuptools.build_meta"
    assert any(r.startswith("setuptools") for r in py["build-system"]["requires"])
    assert "project" not in py  # the metadata stays in setup.cfg, in one place
    assert py["tool"]["mypy"]["packages"] == ["mpipipe"] and py["tool"]["mypy"]["python_version"] == "3.10"
    assert py["tool"]["ruff"]["target-version"] == "py310"


def test_classifiers_python_versions_and_requirements():
    cfg = _setup_cfg()
    classifiers = set(cfg["metadata"]["classifiers"].split("\n")) - {""}
    for version in ("3.10", "3.11", "3.12", "3.13"):
        assert f"Programming Language :: Python :: {version}" in classifiers
    assert "Typing :: Typed" in classifiers
    assert cfg["options"]["python_requires"] == ">=3.10"
    requires = [r.strip() for r in cfg["options"]["install_requires"].splitlines() if r.strip()]
    assert any(re.fullmatch(r"tomli[^;]*;\s*python_version\s*<\s*\"3\.11\"", r) for r in requires), requires
    assert any(r.startswith("rich") for r in requires)
    assert {"mypy", "ruff"} <= _names(cfg["options.extras_require"]["test"].splitlines())


def test_a_wheel_carries_the_metadata_the_marker_and_py_typed(tmp_path):
    """Built from a copy of the sources: the wheel's METADATA has the classifiers and the tomli marker, and the
    package its py.typed, __main__ and console script. With the installed setuptools when it can build wheels
    by itself, else in pip's isolated build environment (what `pip install .` does)."""
    import importlib.util
    import shutil
    import sys
    import zipfile

    import pytest
    import setuptools

    from helpers import run

    src = tmp_path / "src"
    src.mkdir()
    for name in ("setup.cfg", "setup.py", "pyproject.toml", "README.md"):
        shutil.copy(os.path.join(REPO, name), src / name)
    shutil.copytree(os.path.join(REPO, "mpipipe"), src / "mpipipe", ignore=shutil.ignore_patterns("__pycache__"))
    version = tuple(int(p) for p in re.findall(r"\d+", setuptools.__version__)[:2])
    local = version >= (70, 1) or importlib.util.find_spec("wheel") is not None
    argv = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check", "-q",
            "-w", str(tmp_path / "dist"), str(src)]
    done = run(argv + (["--no-build-isolation"] if local else []), timeout=600)
    if done.returncode != 0 and not local and re.search(r"No matching distribution|Could not find a version|"
                                                        r"Failed to establish", done.stderr):
        pytest.skip("no package index to fetch setuptools and wheel from for the isolated build")
    assert done.returncode == 0, done.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("mpipipe-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        meta = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
        entry = z.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
    assert {"mpipipe/py.typed", "mpipipe/__main__.py", "mpipipe/cli.py"} <= names
    assert re.search(r"^Requires-Dist: tomli[^;\n]*; python_version < \"3\.11\"$", meta, re.M), meta
    assert "Classifier: Typing :: Typed" in meta and "Classifier: Programming Language :: Python :: 3.13" in meta
    assert "Requires-Python: >=3.10" in meta
    assert "mpipipe = mpipipe.cli:main" in entry


# --- type checking and lint: files that are clean stay clean -----------------------------------------------------

def test_ci_runs_the_type_check_and_the_linter_before_the_tests():
    """make check runs mypy over the package and ruff over the package, tests and scripts; CI runs it first."""
    with open(os.path.join(REPO, "Makefile")) as f:
        makefile = f.read()
    recipe = re.search(r"^check:.*\n((?:\t.*\n)+)", makefile, re.M)
    assert recipe, "no check target in the Makefile"
    assert "mypy mpipipe" in recipe.group(1) and "ruff check mpipipe tests scripts" in recipe.group(1)
    with open(os.path.join(REPO, ".ci", "run")) as f:
        ci = f.read()
    assert 0 <= ci.find("make check") < ci.find("make test")


CLEAN = ("mpipipe/__main__.py", "mpipipe/cli.py", "mpipipe/console.py", "mpipipe/flags.py", "mpipipe/fmt.py",
         "mpipipe/execution/progress.py", "mpipipe/report/")


def test_mypy_finds_nothing_in_the_files_kept_clean():
    import shutil
    import sys

    import pytest

    from helpers import run

    if shutil.which("mypy", path=os.path.dirname(sys.executable)) is None:
        pytest.skip("mypy is not installed (it comes with the test extra: pip install -e '.[test]')")
    done = run([sys.executable, "-m", "mypy"], cwd=REPO, timeout=600)
    errors = [ln for ln in done.stdout.splitlines() if ": error:" in ln]
    mine = [ln for ln in errors if ln.startswith(CLEAN)]
    assert not mine, "\n".join(mine)


def test_ruff_finds_nothing_in_the_files_kept_clean():
    import shutil
    import sys

    import pytest

    from helpers import run

    ruff = shutil.which("ruff", path=os.path.dirname(sys.executable)) or shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed (pip install ruff)")
    files = [*CLEAN, "tests/test_progress.py", "tests/test_cli.py", "tests/test_report.py", "tests/test_packaging.py",
             "tests/chromium.py"]
    done = run([ruff, "check", "--output-format", "concise", *files], cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
