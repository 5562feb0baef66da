"""What travels to other processes: the user's code keeps its file names (remote tracebacks show the user's
file and line), a value that cannot be pickled is one error line naming the node and the attribute, and a
script that only calls mpipipe.init() still obeys mpipipe's flags."""
import json
import os
import sys
import textwrap

import pytest

from helpers import FLAKY, REPO, env_for_tests, python, run

PIPELINES = os.path.join(REPO, "tests", "pipelines")


def test_code_keeps_its_file_name_and_line_across_processes(tmp_path):
    """A function defined in a script (sent by value) raises in another process with the script's file, line
    number and line text in the traceback: cloudpickle alone renames the file to <dynamic-code> (3.1.3+)."""
    script = tmp_path / "user_script.py"
    script.write_text(textwrap.dedent('''
        import subprocess, sys
        from mpipipe import pickling

        def outer(x):
            def inner(y):
                return 1 / y  # the failing line
            return inner(x)

        blob = pickling.dumps(outer)
        code = ("import pickle, sys, traceback\\nf = pickle.loads(sys.stdin.buffer.read())\\n"
                "try:\\n    f(0)\\nexcept ZeroDivisionError:\\n    traceback.print_exc()")
        done = subprocess.run([sys.executable, "-c", code], input=blob, capture_output=True)
        sys.stdout.write(done.stderr.decode())
    '''))
    done = run([sys.executable, str(script)], timeout=60, check=True)
    assert f'File "{script}", line 7, in inner' in done.stdout, done.stdout
    assert "return 1 / y  # the failing line" in done.stdout
    assert f'File "{script}", line 8, in outer' in done.stdout
    assert "<dynamic-code>" not in done.stdout


def test_remote_traceback_of_a_failed_task_names_the_users_file_and_line(tmp_path):
    done = python(FLAKY, "--data-root", str(tmp_path), "--mode", "exception", "--fail-partition", "1",
                  "--fail-attempts", "-1", "--max-retries", "0", "--num-executors", "1", timeout=120)
    assert done.returncode == 1
    assert f'File "{FLAKY}", line' in done.stderr, done.stderr
    assert "<dynamic-code>" not in done.stderr
    with open(FLAKY) as f:
        source = [line.strip() for line in f]
    shown = [line.strip() for line in done.stderr.splitlines()]
    # the line after the frame header is the user's source text (read back from the file)
    frames = [i for i, line in enumerate(shown) if line.startswith(f'File "{FLAKY}", line')]
    assert any(shown[i + 1] in source and shown[i + 1] for i in frames)


@pytest.mark.parametrize("what,attribute", [("global", "fn (global 'LOCK') (a _thread.lock)"),
                                            ("closure", "fn (closure variable 'conn') (a socket.socket)")])
def test_an_unpicklable_value_is_one_line_naming_node_and_attribute(tmp_path, what, attribute):
    script = os.path.join(PIPELINES, "unpicklable.py")
    done = python(script, "--data-root", str(tmp_path), "--what", what, "--num-executors", "1", timeout=120)
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"mpipipe: error: node 'uses_{what}': {attribute} cannot be pickled"), lines[0]
    assert "Traceback" not in done.stderr
    debug = python(script, "--data-root", str(tmp_path), "--what", what, "--num-executors", "1", "--debug",
                   timeout=120)
    assert debug.returncode == 2 and "Traceback" in debug.stderr


def _init_only(tmp_path, *args, env=None):
    return python(os.path.join(PIPELINES, "init_only.py"), "--data-root", str(tmp_path / "jobs"), *args,
                  env=env_for_tests(env), cwd=str(tmp_path), timeout=120)


def test_init_reads_mpipipes_flags_and_leaves_the_scripts_own(tmp_path):
    plain = _init_only(tmp_path, "--rows", "5")
    assert plain.returncode == 0, plain.stderr
    got = json.loads(plain.stdout)
    assert got["total"] == 10 and got["num_executors"] == 1 and got["max_retries"] == 2
    # the command line wins over init(num_executors=1); the script still sees its own --rows
    flagged = _init_only(tmp_path, "--rows", "6", "--num-executors", "2", "--max-retries", "4")
    assert flagged.returncode == 0, flagged.stderr
    got2 = json.loads(flagged.stdout)
    assert (got2["total"], got2["num_executors"], got2["max_retries"]) == (15, 2, 4)
    assert "2 executor(s)" in flagged.stderr
    assert got["job_id"] != got2["job_id"]  # other arguments, another job
    # SP_* is below the command line and above init()
    env = _init_only(tmp_path, "--rows", "5", env={"SP_MAX_RETRIES": "7", "SP_NUM_EXECUTORS": "3"})
    assert json.loads(env.stdout)["max_retries"] == 7 and json.loads(env.stdout)["num_executors"] == 3
    both = _init_only(tmp_path, "--rows", "5", "--max-retries", "1", env={"SP_MAX_RETRIES": "7"})
    assert json.loads(both.stdout)["max_retries"] == 1


@pytest.mark.parametrize("args,message", [
    (["--platform", "nosuch"], "mpipipe: error: unknown platform 'nosuch'"),
    (["--num-executors", "abc"], "mpipipe: error: argument --num-executors: invalid int value: 'abc'"),
    (["--log-level", "LOUD"], "mpipipe: error: argument --log-level: invalid choice"),
])
def test_init_rejects_bad_flag_values(tmp_path, args, message):
    done = _init_only(tmp_path, *args)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), done.stderr
    assert not (tmp_path / "jobs").exists()  # nothing ran
