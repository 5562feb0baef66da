"""The SLURM platform without a cluster: options and their layers, the argv and batch-script builders, parsers.

Every builder is a pure function of its inputs, so these tests compare lists
and strings. The batch script is also run for real (with a stand-in for
mpipipe.platform.slurm_batch) to check that the argv embedded in it comes back
unchanged, including names with spaces and quotes and an interpreter whose
path has a space.
"""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import time

import pytest

from mpipipe.config import JobConfig, build_config, slurm_time_seconds
from mpipipe.driver import SLURM_DESTS, Driver
from mpipipe.errors import ConfigError, PlatformError
from mpipipe.execution.journal import encode, encode_ok_batch
from mpipipe.platform import registry
from mpipipe.platform import slurm as S
from mpipipe.platform import slurm_commands as sc
from mpipipe.platform.mpi import WORLD_MARKERS
from mpipipe.platform.slurm_batch import clean_stale_shm
from mpipipe.platform.slurm_options import SITE_KEYS, SlurmOptions, resolve
from mpipipe.platform.slurm_watch import JournalProgress, filtered_output

TRICKY = "it's a \"quoted\" name with spaces"


@pytest.fixture
def no_site_config(tmp_path, monkeypatch):
    """No site config file and no SLURM or MPI environment from outside the test."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg-state"))
    for var in list(os.environ):
        if var.startswith(("SP_", "SLURM_")) or var in WORLD_MARKERS:
            monkeypatch.delenv(var)
    return tmp_path


# --- options: command line > SP_SLURM_* > init() > site config > defaults ------------------------------


def test_defaults(no_site_config):
    opts = resolve(build_config({}, env={}, init={}))
    assert opts == SlurmOptions()
    assert (opts.mpi, opts.signal, opts.requeue, opts.poll_interval, opts.extra) == ("auto", 120, True, 5.0, ())


def write_site(folder, name, text):
    path = folder / "xdg-config" / "mpipipe" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_layers_option_by_option(no_site_config):
    write_site(no_site_config, "slurm.toml",
               'partition = "site"\naccount = "site-acct"\nqos = "site-qos"\ntime = "2:00:00"\nnodes = 3\n'
               'ntasks-per-node = 4\nextra = ["--mail-type=END"]\nrequeue = false\n')
    cfg = build_config({"slurm_partition": "cli"},
                       env={"SP_SLURM_PARTITION": "env", "SP_SLURM_ACCOUNT": "env-acct", "SP_SLURM_NODES": "5"},
                       init={"slurm_account": "init-acct", "slurm_qos": "init-qos"})
    opts = resolve(cfg)
    assert opts.partition == "cli"  # CLI > env
    assert opts.account == "env-acct"  # env > init
    assert opts.qos == "init-qos"  # init > site
    assert opts.nodes == 5 and opts.ntasks_per_node == 4 and opts.time == "2:00:00"
    assert opts.extra == ("--mail-type=END",) and opts.requeue is False
    assert opts.signal == 120  # default


def test_site_config_json_and_explicit_path(no_site_config, monkeypatch):
    path = no_site_config / "my site.json"
    path.write_text(json.dumps({"partition": "gpu", "gres": "gpu:2", "signal": 300, "mem": "64G", "mpi": "pmix"}))
    opts = resolve(build_config({}, env={"SP_SLURM_CONFIG": str(path)}, init={}))
    assert (opts.partition, opts.gres, opts.signal, opts.mem, opts.mpi) == ("gpu", "gpu:2", 300, "64G", "pmix")
    opts = resolve(build_config({"slurm_config": str(path), "slurm_partition": "cpu"}, env={}, init={}))
    assert opts.partition == "cpu"


def test_default_json_site_config_when_there_is_no_toml(no_site_config):
    write_site(no_site_config, "slurm.json", '{"account": "from-json"}')
    assert resolve(build_config({}, env={}, init={})).account == "from-json"


def test_unknown_site_keys_are_rejected_with_the_valid_ones(no_site_config):
    path = write_site(no_site_config, "slurm.toml", 'partition = "x"\npartishun = "y"\n')
    with pytest.raises(ConfigError) as info:
        resolve(build_config({}, env={}, init={}))
    message = str(info.value)
    assert "partishun" in message and str(path) in message
    for key in SITE_KEYS:
        assert key in message


@pytest.mark.parametrize("text, expected", [
    ('nodes = 0', "nodes"), ('time = "soon"', "SLURM time"), ('mem = "lots"', "size"),
    ('extra = ["mail-type=END"]', "sbatch options"), ('requeue = "maybe"', "true/false"),
    ('mpi = "pmi 2"', "plugin"), ('partition = ""', "non-empty"), ("nodes = [", "not valid TOML"),
])
def test_bad_site_values_name_the_key_and_file(no_site_config, text, expected):
    write_site(no_site_config, "slurm.toml", text + "\n")
    with pytest.raises(ConfigError, match=expected):
        resolve(build_config({}, env={}, init={}))


def test_explicit_site_config_must_exist_default_may_not(no_site_config):
    resolve(build_config({}, env={}, init={}))  # no ~/.config/mpipipe/slurm.toml: fine
    with pytest.raises(ConfigError, match="does not exist"):
        resolve(build_config({}, env={"SP_SLURM_CONFIG": str(no_site_config / "nope.toml")}, init={}))


def test_a_broken_site_config_never_stops_other_platforms(no_site_config):
    write_site(no_site_config, "slurm.toml", "this is not toml\n")
    assert build_config({}, env={}, init={}).platform is None  # only the SLURM platform reads it


def test_env_values_are_converted_and_checked():
    cfg = build_config({}, env={"SP_SLURM_NODES": "2", "SP_SLURM_SIGNAL": "0", "SP_SLURM_REQUEUE": "off",
                                "SP_SLURM_POLL_INTERVAL": "0.5", "SP_SLURM_EXTRA": "--mail-type=END\n#SBATCH --x=1",
                                "SP_DETACH": "1", "SP_SLURM_TIME": "1-12"}, init={})
    assert (cfg.slurm_nodes, cfg.slurm_signal, cfg.slurm_requeue, cfg.slurm_poll_interval) == (2, 0, False, 0.5)
    assert cfg.slurm_extra == ("--mail-type=END", "--x=1") and cfg.detach is True and cfg.slurm_time == "1-12"
    assert build_config({}, env={"SP_SLURM_EXTRA": '["--a=1", "--b=2"]'}, init={}).slurm_extra == ("--a=1", "--b=2")
    with pytest.raises(ConfigError, match="slurm_nodes"):
        build_config({}, env={"SP_SLURM_NODES": "two"}, init={})
    with pytest.raises(ConfigError, match="unknown option"):
        build_config({}, env={}, init={"slurm_partishun": "x"})


@pytest.mark.parametrize("text, seconds", [("30", 1800), ("1", 60), ("5:30", 330), ("1:00:00", 3600),
                                           ("2-0", 172800), ("1-2:3", 93780), ("1-02:03:04", 93784),
                                           ("UNLIMITED", None)])
def test_slurm_time_seconds(text, seconds):
    assert slurm_time_seconds(text) == seconds


def test_fresh_applies_to_the_first_start_of_a_requeued_job_only():
    assert build_config({"fresh": True}, env={}, init={}).fresh is True
    assert build_config({"fresh": True}, env={"SLURM_RESTART_COUNT": "0"}, init={}).fresh is True
    assert build_config({"fresh": True}, env={"SLURM_RESTART_COUNT": "2"}, init={}).fresh is False


def test_the_default_warning_fits_a_short_time_limit(no_site_config):
    assert resolve(build_config({"slurm_time": "1"}, env={}, init={})).signal == 30
    assert resolve(build_config({"slurm_time": "3"}, env={}, init={})).signal == 90
    assert resolve(build_config({"slurm_time": "1:00:00"}, env={}, init={})).signal == 120
    assert resolve(build_config({"slurm_time": "1", "slurm_signal": 50}, env={}, init={})).signal == 50


def test_warning_must_come_before_the_time_limit(no_site_config):
    with pytest.raises(ConfigError, match="--slurm-signal"):
        S.check_signal(SlurmOptions(time="1", signal=120))
    S.check_signal(SlurmOptions(time="1", signal=30))
    S.check_signal(SlurmOptions(time=None, signal=30))


# --- the Driver's flags ----------------------------------------------------------------------------------


def test_slurm_flags_and_their_aliases():
    d = Driver(args=["--platform", "slurm", "--nodes", "2", "--ntasks-per-node", "4", "--time", "1:00:00",
                     "--partition", "debug", "--slurm-account", "acct", "--qos", "low", "--cpus-per-task", "2",
                     "--mem", "8G", "--gres", "gpu:1", "--gpus", "2", "--constraint", "a100", "--exclude", "n1",
                     "--job-name", TRICKY, "--slurm-extra=--mail-type=END", "--slurm-extra=--begin=now",
                     "--slurm-mpi", "pmix", "--slurm-signal", "90", "--no-slurm-requeue",
                     "--slurm-poll-interval", "1.5", "--slurm-config", "/x y.toml", "--detach"])
    assert d.get_arguments() == {}
    assert d.builtin_arguments() == {
        "platform": "slurm", "slurm_nodes": 2, "slurm_ntasks_per_node": 4, "slurm_time": "1:00:00",
        "slurm_partition": "debug", "slurm_account": "acct", "slurm_qos": "low", "slurm_cpus_per_task": 2,
        "slurm_mem": "8G", "slurm_gres": "gpu:1", "slurm_gpus": "2", "slurm_constraint": "a100",
        "slurm_exclude": "n1", "slurm_job_name": TRICKY, "slurm_extra": ["--mail-type=END", "--begin=now"],
        "slurm_mpi": "pmix", "slurm_signal": 90, "slurm_requeue": False, "slurm_poll_interval": 1.5,
        "slurm_config": "/x y.toml", "detach": True,
    }
    cfg = build_config(d.builtin_arguments(), env={}, init={})
    assert cfg.slurm_extra == ("--mail-type=END", "--begin=now") and cfg.slurm_job_name == TRICKY


def test_a_script_that_has_its_own_time_flag_keeps_it():
    d = Driver(args=["--time", "7", "--slurm-time", "10:00", "--nodes", "3"])
    d.add_argument("--time", type=int)
    assert d.get_arguments() == {"time": 7}
    assert d.builtin_arguments() == {"slurm_time": "10:00", "slurm_nodes": 3}


def test_help_all_lists_the_slurm_flags(capsys):
    with pytest.raises(SystemExit):
        Driver(args=["--help-all"]).get_arguments()
    out = capsys.readouterr().out
    assert "SLURM options" in out and "SP_SLURM_<NAME>" in out
    for flag in ("--partition", "--slurm-partition", "--nodes", "--ntasks-per-node", "--time", "--detach",
                 "--slurm-extra", "--slurm-mpi", "--slurm-signal", "--slurm-requeue", "--slurm-config", "slurm,"):
        assert flag in out, flag
    assert len(SLURM_DESTS) == len(set(SLURM_DESTS))


# --- detection ---------------------------------------------------------------------------------------------


def test_auto_detection_order(no_site_config, monkeypatch):
    assert registry.detect()[0] == "local"
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    name, why = registry.detect()
    assert name == "slurm" and "42" in why
    assert registry.choose(JobConfig())[0] is S.SlurmPlatform
    monkeypatch.setenv("PMI_RANK", "0")  # inside the world srun started: the MPI platform
    assert registry.detect()[0] == "mpi"
    assert registry.load_platform("slurm") is S.SlurmPlatform


def test_in_world_only_inside_an_mpi_world(no_site_config, monkeypatch):
    platform = S.SlurmPlatform(JobConfig())
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    assert not platform.in_world()
    monkeypatch.setenv("PMI_SIZE", "3")
    assert platform.in_world()


def test_mpi_plugin_from_the_library_version():
    assert S.plugin_for_library("Open MPI v5.0.5, package: Open MPI ...") == "pmix"
    assert S.plugin_for_library("MPICH Version:      5.0.2\nMPICH Release date: ...") == "pmi2"
    assert S.plugin_for_library("Intel(R) MPI Library 2021.10") == "pmi2"
    assert S.plugin_for_library("Something else") is None
    plugin, why = S.detect_mpi_plugin()  # this virtualenv has the MPICH wheel
    assert plugin == "pmi2" and "mpich" in why


def test_mpi_plugin_option_wins(no_site_config):
    assert S.SlurmPlatform(JobConfig(slurm_mpi="pmix")).mpi_plugin() == ("pmix", "--slurm-mpi")


# --- builders ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("opts, executors, ntasks", [
    (SlurmOptions(), None, 2), (SlurmOptions(nodes=3), None, 3), (SlurmOptions(nodes=2, ntasks_per_node=4), None, 8),
    (SlurmOptions(ntasks_per_node=5), None, 5), (SlurmOptions(nodes=2, ntasks_per_node=4), 5, 6),
    (SlurmOptions(), 7, 8),
])
def test_world_tasks(opts, executors, ntasks):
    assert S.world_tasks(opts, executors) == ntasks


def test_world_tasks_that_do_not_fit():
    with pytest.raises(ConfigError, match="needs 9 tasks"):
        S.world_tasks(SlurmOptions(nodes=2, ntasks_per_node=4), 8)


def test_sbatch_options_with_everything():
    opts = SlurmOptions(partition="debug", account="acct", qos="low", time="1:00:00", nodes=2, ntasks_per_node=4,
                        cpus_per_task=2, mem="8G", gres="gpu:1", gpus="2", constraint="a100&ib", exclude="n[1-2]",
                        job_name=TRICKY, extra=('--mail-type=END --mail-user="me@x"', "--begin=now+1"),
                        signal=90, requeue=True)
    got = S.sbatch_options(opts, job_name=TRICKY, output="/d a/slurm/slurm-%j.out", cwd="/w d",
                           comment="mpipipe:/d a", ntasks=8)
    assert got == [
        f"--job-name={TRICKY}", "--output=/d a/slurm/slurm-%j.out", "--open-mode=append", "--chdir=/w d",
        "--comment=mpipipe:/d a", "--ntasks=8", "--nodes=2", "--ntasks-per-node=4", "--cpus-per-task=2",
        "--partition=debug", "--account=acct", "--qos=low", "--time=1:00:00", "--mem=8G", "--gres=gpu:1",
        "--gpus=2", "--constraint=a100&ib", "--exclude=n[1-2]", "--requeue", "--signal=B:USR1@90",
        "--mail-type=END", "--mail-user=me@x", "--begin=now+1",
    ]


def test_sbatch_options_minimal_and_array():
    got = S.sbatch_options(SlurmOptions(requeue=False, signal=0), job_name="j", output="o", cwd="/c")
    assert got == ["--job-name=j", "--output=o", "--open-mode=append", "--chdir=/c", "--no-requeue"]
    got = S.sbatch_options(SlurmOptions(nodes=4, ntasks_per_node=2, signal=0), job_name="a", output="o", cwd="/c",
                           ntasks=1, array="0-9%3", dependency="afterany:12", world=False)
    assert got == ["--job-name=a", "--output=o", "--open-mode=append", "--chdir=/c", "--array=0-9%3",
                   "--dependency=afterany:12", "--ntasks=1", "--requeue"]


def test_sbatch_argv_puts_the_script_last():
    assert S.sbatch_argv(["--ntasks=3"], "/j d/slurm/batch.py") == ["sbatch", "--parsable", "--ntasks=3",
                                                                    "/j d/slurm/batch.py"]


def test_sbatch_lines_are_quoted_the_way_sbatch_reads_them():
    assert S.sbatch_line("--requeue") == "#SBATCH --requeue"
    assert S.sbatch_line("--ntasks=3") == "#SBATCH --ntasks=3"
    assert S.sbatch_line('--job-name=a "b" c\\d') == '#SBATCH --job-name="a \\"b\\" c\\\\d"'
    assert S.sbatch_line("--comment=x#y") == '#SBATCH --comment="x#y"'
    assert S.sbatch_line("--job-name=it's") == '#SBATCH --job-name="it\'s"'


def test_output_template_escapes_percent_and_avoids_patterns_after_a_backslash():
    assert S.output_template("/j/slurm") == "/j/slurm/slurm-%j.out"
    assert S.output_template("/j 50%/slurm") == "/j 50%%/slurm/slurm-%j.out"
    assert S.output_path("/j 50%%/slurm/slurm-%j.out", "17") == "/j 50%/slurm/slurm-17.out"
    assert S.output_template("/j\\x/slurm") == "/j\\x/slurm/slurm.out"
    assert S.output_path("/j\\x/slurm/slurm.out", "17") == "/j\\x/slurm/slurm.out"


def test_srun_argv():
    argv = ["/py", "s p.py", "--x", "a'b"]
    assert S.srun_argv("pmi2", 5, None, argv) == ["srun", "--mpi=pmi2", "--kill-on-bad-exit=1", "--ntasks=5"] + argv
    assert S.srun_argv("pmix", None, 4, argv, "step") == ["srun", "--mpi=pmix", "--kill-on-bad-exit=1",
                                                          "--cpus-per-task=4", "--job-name=step"] + argv


def test_launch_command_outside_and_inside_an_allocation(no_site_config, monkeypatch):
    root = str(no_site_config / "da ta")
    cfg = build_config({"job_id": TRICKY, "data_root": root, "num_executors": 3, "slurm_partition": "debug",
                        "slurm_time": "10"}, env={}, init={})
    argv = [sys.executable, "/s p/pipe.py", "--platform", "slurm"]
    job_dir = os.path.join(root, TRICKY)
    cmd = S.SlurmPlatform(cfg).launch_command(argv)
    assert cmd[:2] == ["sbatch", "--parsable"] and cmd[-1] == os.path.join(job_dir, "slurm", "batch.py")
    assert f"--output={job_dir}/slurm/slurm-%j.out" in cmd and "--ntasks=4" in cmd and "--partition=debug" in cmd
    assert f"--comment=mpipipe:{job_dir}" in cmd and f"--job-name={TRICKY}" in cmd
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    platform = S.SlurmPlatform(cfg)
    assert platform.launch_command(argv) == ["srun", "--mpi=pmi2", "--kill-on-bad-exit=1", "--ntasks=4",
                                             f"--job-name=mpipipe-{os.getpid()}"] + argv
    assert platform.launch_env() == {"MPIPIPE_WORLD_SIZE": "4"}
    mpiexec = S.SlurmPlatform(cfg.with_(slurm_mpi="mpiexec", mpiexec="/opt/mpi/bin/mpiexec"))
    assert mpiexec.launch_command(argv) == ["/opt/mpi/bin/mpiexec", "-n", "4"] + argv


def test_a_task_of_a_step_without_mpi_is_told_what_to_do(no_site_config, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    monkeypatch.setenv("SLURM_STEP_ID", "0")
    monkeypatch.setenv("SLURM_STEP_NUM_TASKS", "4")
    with pytest.raises(PlatformError, match="--mpi=pmi2"):
        S.SlurmPlatform(JobConfig()).start_job(["x"])


def fake_batch_package(folder):
    """A stand-in mpipipe.platform.slurm_batch whose main() prints the SPEC it was given."""
    pkg = folder / "mpipipe" / "platform"
    pkg.mkdir(parents=True)
    (folder / "mpipipe" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "slurm_batch.py").write_text("import json\ndef main(spec):\n    print(json.dumps(spec))\n    return 7\n")
    return str(folder)


@pytest.mark.parametrize("python_dir", ["plain", "with space"])
def test_batch_script_runs_and_gives_back_the_spec(tmp_path, python_dir):
    if python_dir == "plain":
        python = sys.executable
    else:
        folder = tmp_path / "py thon"
        folder.mkdir()
        python = str(folder / "python3")
        os.symlink(sys.executable, python)
    spec = {"kind": "world", "argv": ["srun", "--mpi=pmi2", sys.executable, "/a b/it's \"x\".py", "--x", "$(y);`z`",
                                      "é ü", ""], "env": {"K": "v w"}, "exit_dir": "/d'q\"/slurm", "requeue": True}
    options = [f"--job-name={TRICKY}", "--output=/a b/slurm-%j.out", "--requeue"]
    text = S.batch_script(spec, options, python=python, package_parent=fake_batch_package(tmp_path))
    lines = text.splitlines()
    assert lines[0] == ("#!/bin/sh" if " " in python else f"#!{python}")
    assert f'#SBATCH --job-name="{TRICKY.replace(chr(34), chr(92) + chr(34))}"' in lines
    assert "#SBATCH --requeue" in lines
    first_code = next(i for i, ln in enumerate(lines) if ln and not ln.startswith("#"))
    assert all(ln.startswith("#SBATCH") for ln in lines[3:first_code])  # sbatch reads them: before any command
    script = tmp_path / "batch one.py"
    S.write_script(str(script), text)
    assert os.stat(script).st_mode & 0o777 == 0o700
    done = subprocess.run([str(script)], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 7, done.stderr
    assert json.loads(done.stdout) == spec


# --- job arrays --------------------------------------------------------------------------------------------


def test_plan_chunks():
    assert S.plan_chunks(7, 3) == [(0, 3), (3, 3), (6, 1)]
    assert S.plan_chunks(3, 1001) == [(0, 3)]
    assert S.plan_chunks(2002, 1001) == [(0, 1001), (1001, 1001)]
    with pytest.raises(ConfigError):
        S.plan_chunks(0, 10)
    assert S.array_range(3, 2) == "0-2%2" and S.array_range(5, None) == "0-4"


def test_array_chunk_submission(tmp_path):
    array = S.SlurmArray(["/py", "-c", "x y"], 7, str(tmp_path / "w d"), throttle=2, max_array_size=3,
                         options=SlurmOptions(partition="p", time="5", signal=30), cwd="/c")
    argv, text = array.chunk_submission(3, 3, after="100")
    work = str(tmp_path / "w d")
    assert argv == ["sbatch", "--parsable", "--job-name=mpipipe-array", f"--output={work}/logs/slurm-%A_%a.out",
                    "--open-mode=append", "--chdir=/c", "--array=0-2%2", "--dependency=afterany:100", "--ntasks=1",
                    "--partition=p", "--time=5", "--requeue", "--signal=B:USR1@30", f"{work}/batch-3.py"]
    line = next(ln for ln in text.splitlines() if ln.startswith("SPEC = json.loads("))
    spec = json.loads(ast.literal_eval(line[len("SPEC = json.loads("):-1]))
    assert spec["kind"] == "array" and spec["offset"] == 3 and spec["count"] == 7
    assert spec["argv"] == ["/py", "-c", "x y"] and spec["exit_dir"] == f"{work}/exit"


def test_array_maps_squeue_lines_to_global_indices(tmp_path, monkeypatch):
    array = S.SlurmArray(["x"], 7, str(tmp_path), max_array_size=3)
    array.chunks = [S.ArrayChunk("10", 0, 3), S.ArrayChunk("11", 3, 3), S.ArrayChunk("12", 6, 1)]
    calls = []

    def fake_run(argv, timeout=60.0, check=True):
        calls.append(argv)
        return subprocess.CompletedProcess(argv, 0, "10_0|10|0|COMPLETED|None|n1\n10_1|10|1|RUNNING|None|n1\n"
                                                    "11_2|11|2|PENDING|Dependency|\n12_0|12|0|FAILED|None|n2\n", "")

    monkeypatch.setattr(sc, "run", fake_run)
    assert array.states() == {0: "COMPLETED", 1: "RUNNING", 5: "PENDING", 6: "FAILED"}
    assert len(calls) == 1 and calls[0][-2] == "--jobs=10,11,12"  # one squeue for every array


# --- parsers ----------------------------------------------------------------------------------------------


def test_squeue_argv_and_parse():
    assert sc.squeue_argv(["3", "12"]) == ["squeue", "--noheader", "--array", "--states=all", "--jobs=3,12",
                                           "--format=%i|%F|%K|%T|%r|%N"]
    got = sc.parse_squeue("3|3|N/A|COMPLETED|None|vm\n12_4|12|4|PENDING|JobArrayTaskLimit|\njunk\n")
    assert got["3"] == sc.QueueEntry("3", "3", None, "COMPLETED", "None", "vm") and not got["3"].active
    assert got["12_4"].task == 4 and got["12_4"].active


def test_queue_states_is_one_call_and_tolerates_forgotten_ids(monkeypatch):
    calls = []

    def fake_run(argv, timeout=60.0, check=True):
        calls.append(argv)
        return subprocess.CompletedProcess(argv, 1, "", "slurm_load_jobs error: Invalid job id specified")

    monkeypatch.setattr(sc, "run", fake_run)
    assert sc.queue_states(["5"]) == {} and len(calls) == 1
    assert sc.queue_states([]) == {} and len(calls) == 1


def test_exit_code_and_scancel_argv():
    assert sc.exit_code_of({"ExitCode": "0:0"}) == 0
    assert sc.exit_code_of({"ExitCode": "2:0"}) == 2
    assert sc.exit_code_of({"ExitCode": "0:9"}) == 137
    assert sc.exit_code_of({}) is None
    assert sc.scancel_argv(["1", "2"]) == ["scancel", "1", "2"]
    assert sc.scancel_argv(["1"], "TERM") == ["scancel", "--signal=TERM", "1"]
    assert sc.requeue_argv("9") == ["scontrol", "requeue", "9"]


def write_journal(path, records, mode="ab"):
    with open(path, mode) as f:
        for rec in records:
            f.write(encode(rec))


def test_journal_progress_counts_distinct_tasks_of_the_jobs_nodes(tmp_path):
    (tmp_path / "job.json").write_text(json.dumps({"nodes": [{"fingerprint": "fa"}, {"fingerprint": "fb"}]}))
    journal = tmp_path / "journal.log"
    write_journal(journal, [{"type": "run", "total": 4}, {"s": "ok", "k": "fa:0"}, {"s": "failed", "k": "fa:1"},
                            {"s": "ok", "k": "old:0"}])
    p = JournalProgress(str(tmp_path))
    p.update()
    assert (p.done, p.total, p.failed, p.runs) == (1, 4, 1, 1)
    with open(journal, "ab") as f:  # a torn line at the end: read when it is complete
        f.write(encode({"s": "ok", "k": "fa:1"})[:10])
    p.update()
    assert p.done == 1
    with open(journal, "ab") as f:
        f.write(encode({"s": "ok", "k": "fa:1"})[10:])
    write_journal(journal, [{"type": "end", "status": "interrupted"}, {"type": "run", "total": 4},
                            {"s": "ok", "k": "fa:1"}, {"s": "ok", "k": "fb:0"}])
    p.update()
    assert (p.done, p.total, p.failed, p.runs, p.ended) == (3, 4, 0, 2, None)
    with open(journal, "ab") as f:  # a batch record: its tasks count one by one, a repeat once
        f.write(encode_ok_batch("fb", "b", 1, [{"p": q, "a": 0, "t0": 1.0, "t1": 2.0, "o": None, "log": None}
                                                   for q in (0, 1, 2)]))
    p.update()
    assert p.done == 4  # fa:0, fa:1, fb:0..2: five, capped at the run's total of four
    assert p._ok["fb"] == {"0", "1", "2"}
    os.replace(journal, tmp_path / "journal.log.old")  # --fresh moves it aside
    write_journal(journal, [{"type": "run", "total": 4}], mode="wb")
    p.update()
    assert (p.done, p.runs) == (0, 1)


def test_filtered_output_drops_progress_lines(tmp_path):
    out = tmp_path / "slurm-1.out"
    out.write_text("[mpipipe slurm] 10:00:00 SLURM job 1 started on vm\n"
                   "[mpipipe] 4/17 tasks done (0 from journal), 2 running, 0 failed, 0 retried | 1 tasks/s\n"
                   "counted 5 words\n[mpipipe] job j succeeded in 1s\n")
    assert filtered_output(str(out), keep_batch_lines=False) == ["counted 5 words", "[mpipipe] job j succeeded in 1s"]
    assert filtered_output(str(out), keep_batch_lines=True)[0].startswith("[mpipipe slurm]")


def test_clean_stale_shm_removes_only_old_segments(tmp_path):
    old, new, other = (tmp_path / "mpich_shm_abc_0"), (tmp_path / "mpich_vci_abc_0"), (tmp_path / "keep_me")
    for f in (old, new, other):
        f.write_text("x")
    past = time.time() - 3600
    os.utime(old, (past, past))
    os.utime(other, (past, past))
    assert clean_stale_shm(min_age=10, folder=str(tmp_path)) == ["mpich_shm_abc_0"]
    assert not old.exists() and new.exists() and other.exists()


def test_submissions_and_index(no_site_config, monkeypatch):
    job_dir = str(no_site_config / "jobs" / TRICKY)
    os.makedirs(os.path.join(job_dir, "slurm"))
    S.record_submission(job_dir, {"id": "77", "kind": "world", "time": 1.0, "output": "o"})
    assert S.submissions(job_dir) == [{"id": "77", "kind": "world", "time": 1.0, "output": "o"}]
    monkeypatch.setattr(sc, "job_comment", lambda job_id: None)  # SLURM forgot it: the index answers
    assert S.find_job_dir("77") == job_dir
    assert S.find_job_dir("78") is None
