"""Notebooks: a job id from the notebook (or one per kernel session, resumable by name), and one summary line per
action. The rule is tested with the kernel's namespace and environment faked; a real notebook runs through
nbclient and ipykernel when they are installed (the test extra has them)."""
from __future__ import annotations

import json
import logging
import os
import sys
import textwrap
import types

import pytest

from helpers import env_for_tests, run
from mpipipe import notebook
from mpipipe.jobdir import default_job_id
from mpipipe.notebook import notebook_job_id, notebook_path


def test_the_notebook_file_names_the_job_in_the_documented_order(tmp_path):
    conn = tmp_path / "kernel-4f1e9a2c-0000-4000-8000-000000000000.json"
    conn.write_text(json.dumps({"shell_port": 1, "jupyter_session": "/home/u/from_connection.ipynb"}))
    vsc = {"__vsc_ipynb_file__": "/home/u/work/Sales Report (v2).ipynb", "__session__": "/home/u/other.ipynb"}
    assert notebook_path(vsc, {"JPY_SESSION_NAME": "/x/env.ipynb"}, str(conn)) == vsc["__vsc_ipynb_file__"]
    assert notebook_path({"__session__": "/home/u/other.ipynb"}, {"JPY_SESSION_NAME": "/x/env.ipynb"},
                         str(conn)) == "/home/u/other.ipynb"
    assert notebook_path({}, {"JPY_SESSION_NAME": "/x/env.ipynb"}, str(conn)) == "/x/env.ipynb"
    assert notebook_path({}, {}, str(conn)) == "/home/u/from_connection.ipynb"
    assert notebook_path({}, {"JPY_SESSION_NAME": "  "}, None) is None

    job, named = notebook_job_id(vsc, {}, None)
    assert named and job.startswith("Sales_Report_v2-") and len(job.split("-")[-1]) == 8
    assert notebook_job_id(vsc, {}, None) == (job, True)  # the same notebook, the same job: it resumes
    moved = notebook_job_id({"__vsc_ipynb_file__": "/home/u/old/Sales Report (v2).ipynb"}, {}, None)[0]
    assert moved != job and moved.startswith("Sales_Report_v2-")  # one name in two folders: two jobs
    assert notebook_job_id({}, {}, "C:\\Users\\u\\kernel.json")[0].startswith("notebook-")
    assert notebook_job_id({"__vsc_ipynb_file__": "c:\\Users\\u\\Q3.ipynb"}, {}, None)[0].startswith("Q3-")


def test_without_a_notebook_name_the_job_is_the_kernel_sessions(tmp_path):
    first = notebook_job_id({}, {}, str(tmp_path / "kernel-aaaa.json"))
    again = notebook_job_id({}, {}, str(tmp_path / "kernel-aaaa.json"))
    other = notebook_job_id({}, {}, str(tmp_path / "kernel-bbbb.json"))
    assert first == again and not first[1] and first[0].startswith("notebook-")
    assert other[0] != first[0]


class FakeShell:
    def __init__(self, user_ns):
        self.kernel = object()
        self.user_ns = user_ns


@pytest.fixture
def fake_kernel(monkeypatch):
    """This process looks like a Jupyter kernel whose namespace the test fills."""
    user_ns: dict = {}
    module = types.ModuleType("IPython")
    module.get_ipython = lambda: FakeShell(user_ns)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "IPython", module)
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    monkeypatch.setattr(sys, "argv", ["/venv/lib/ipykernel_launcher.py", "-f", "/run/kernel-cafe.json"])
    return user_ns


def test_default_job_id_in_a_kernel_comes_from_the_notebook(fake_kernel, monkeypatch):
    assert notebook.in_notebook()
    monkeypatch.setenv("JPY_SESSION_NAME", "/home/u/prices.ipynb")
    job = default_job_id({"argv": ["-f", "/run/kernel-cafe.json"]})
    assert job.startswith("prices-") and job == default_job_id({})  # the kernel's argv plays no part
    fake_kernel["__vsc_ipynb_file__"] = "/home/u/vscode.ipynb"
    assert default_job_id({}).startswith("vscode-")


def test_a_kernel_session_id_says_once_how_to_resume_it(fake_kernel, caplog):
    caplog.set_level(logging.INFO, logger="mpipipe")
    job = default_job_id({})
    assert job == notebook_job_id({}, {}, "/run/kernel-cafe.json")[0]
    assert default_job_id({}) == job
    hints = [r.getMessage() for r in caplog.records if "does not say which notebook" in r.getMessage()]
    assert hints == [f"[mpipipe] this kernel does not say which notebook it runs: its job is {job}, this kernel "
                     f"session's; to resume it after a restart, pass mpipipe.init(job_id={job!r})"]


def test_a_script_is_named_as_before(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["/home/u/pipeline.py"])
    assert not notebook.in_notebook()
    assert default_job_id({}).startswith("pipeline-")


# --- a real notebook --------------------------------------------------------------------------------------

RUNNER = textwrap.dedent("""
    import json, sys
    import nbformat
    from nbclient import NotebookClient

    path, out = sys.argv[1], sys.argv[2]
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=240, kernel_name="python3", resources={"metadata": {"path": sys.argv[3]}}).execute()
    json.dump([c.get("outputs", []) for c in nb.cells], open(out, "w"))
""")


def _write_notebook(path: str, cells) -> None:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in cells]
    nbformat.write(nb, path)


def _execute(tmp_path, name: str, cells, env_extra) -> list:
    pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    path = str(tmp_path / name)
    _write_notebook(path, cells)
    runner = tmp_path / "runner.py"
    runner.write_text(RUNNER)
    out = str(tmp_path / (name + ".outputs.json"))
    env = env_for_tests(env_extra)
    if "JPY_SESSION_NAME" not in env_extra:
        env.pop("JPY_SESSION_NAME", None)
    done = run([sys.executable, str(runner), path, out, str(tmp_path)], env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    with open(out) as f:
        return json.load(f)


def _stderr_lines(outputs) -> list:
    return [ln for o in outputs if o.get("output_type") == "stream" and o.get("name") == "stderr"
            for ln in o["text"].splitlines()]


def _displays_left(outputs) -> list:
    """What display outputs still show (a progress display is cleared once its summary line is there)."""
    shown = []
    for o in outputs:
        if o.get("output_type") == "display_data":
            data = o.get("data", {})
            text = data.get("text/html") or data.get("text/plain") or ""
            if text.strip():
                shown.append(text)
    return shown


def test_a_notebook_is_named_by_its_file_and_each_action_prints_one_line(tmp_path):
    data_root = str(tmp_path / "jobs")
    nb_path = str(tmp_path / "sales report.ipynb")
    cells = [
        f"import mpipipe\nsp = mpipipe.init(data_root={data_root!r}, num_executors=1)\n"
        "df = sp.from_items([{'a': i} for i in range(30)]).repartition(3)",
        "print(df.count())",
        "print(df.map('a + 1 AS b').count())",
    ]
    outputs = _execute(tmp_path, "sales report.ipynb", cells, {"JPY_SESSION_NAME": nb_path})
    assert outputs[0] == [] or not _stderr_lines(outputs[0])
    job = notebook_job_id({}, {"JPY_SESSION_NAME": nb_path}, None)[0]
    assert job.startswith("sales_report-")
    for cell in outputs[1:]:
        lines = _stderr_lines(cell)
        assert len(lines) == 1, lines
        assert lines[0].startswith(f"[mpipipe] job {job} succeeded in ") and os.path.join(data_root, job) in lines[0]
        assert not _displays_left(cell)
        assert [o["text"] for o in cell if o.get("name") == "stdout"] == ["30\n"]
    assert "4 reused from the journal" in _stderr_lines(outputs[2])[0]  # the second action reuses the first's
    assert os.path.isdir(os.path.join(data_root, job))


def test_a_kernel_that_cannot_tell_its_notebook_gets_a_session_job_and_a_hint(tmp_path):
    data_root = str(tmp_path / "jobs")
    cells = [f"import mpipipe\nsp = mpipipe.init(data_root={data_root!r}, num_executors=1)\n"
             "print(sp.from_items([1, 2, 3]).count())"]
    outputs = _execute(tmp_path, "untitled.ipynb", cells, {})
    lines = _stderr_lines(outputs[0])
    assert len(lines) == 2, lines
    assert lines[0].startswith("[mpipipe] this kernel does not say which notebook it runs: its job is notebook-")
    job = lines[0].split("its job is ")[1].split(",")[0]
    assert f"mpipipe.init(job_id='{job}')" in lines[0]
    assert lines[1].startswith(f"[mpipipe] job {job} succeeded in ")
    # another kernel session resumes that job when given its id by name
    cells = [f"import mpipipe\nsp = mpipipe.init(data_root={data_root!r}, num_executors=1, job_id={job!r})\n"
             "print(sp.from_items([1, 2, 3]).count())"]
    again = _stderr_lines(_execute(tmp_path, "again.ipynb", cells, {})[0])
    assert len(again) == 1 and again[0].startswith(f"[mpipipe] job {job} succeeded in ") and " 0 tasks ran" in again[0]
