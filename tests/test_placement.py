"""Placement by requirements: GPU tasks only on GPU ranks, capacity, time limits, impossible requirements."""
import json
import os

import pytest

from helpers import mpiexec, python
from journal_tools import records

from mpipipe.errors import PlanError, RequirementError
from mpipipe.execution.hostprobe import apply_override, parse_host, parse_overrides
from mpipipe.execution.placement import Placement
from mpipipe import ComputeNode, Context
from mpipipe.requirements import parse
from mpipipe.resources import NodeResources, Resources, requirement_of

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pipelines", "placement.py")
GPU_HOSTS = "1,2=cpu(cores=4, mem=16GiB) & cuda(mem=16GiB) * 2"


def _host(cores=2, memory=8 << 30, accelerators=()):
    return {"host": "h", "cores": cores, "memory": memory, "accelerators": [dict(a) for a in accelerators]}


# --- pure parts ---------------------------------------------------------------------------

def test_resources_in_every_form_become_the_same_requirement():
    want = parse("cpu(cores=2, mem=4GiB) & cuda(mem=8GiB) * 2")
    assert requirement_of("cpu(cores=2, mem=4GiB) & cuda(mem=8GiB) * 2") == want
    assert requirement_of(Resources(cpus=2, memory=4 << 30, gpus=2, gpu_memory=8 << 30, gpu_kind="cuda")) == want
    assert requirement_of({"cpus": 2, "memory": "4GiB", "gpus": 2, "gpu_memory": "8GiB", "gpu_kind": "cuda"}) == want
    assert requirement_of(want) == want
    assert requirement_of({"time": "1h"}).alternatives[0].duration == 3600


def test_unknown_resource_keys_are_rejected_with_the_valid_ones():
    with pytest.raises(RequirementError) as e:
        requirement_of({"cpu": 2, "gpus": 1})
    assert "'cpu'" in str(e.value) and "valid keys: cpus, memory, gpus" in str(e.value)
    with pytest.raises(RequirementError):
        requirement_of({"cpus": -1})
    with pytest.raises(RequirementError):
        requirement_of({"memory": "lots"})


def test_a_bad_resource_spec_is_a_plan_error_naming_the_node():
    with pytest.raises(PlanError) as e:
        ComputeNode(Context(), lambda t: None, name="train", resources="cuda(mem=8GB")
    assert "train" in str(e.value) and "^" in str(e.value)
    with pytest.raises(PlanError) as e:
        ComputeNode(Context(), lambda t: None, name="train", resources={"gpu": 1})
    assert "train" in str(e.value) and "gpus" in str(e.value)


def test_dynamic_resources_are_called_with_the_task_inputs():
    seen = []
    res = NodeResources(lambda inputs: seen.append(inputs) or {"cpus": len(inputs[0])}, "n")
    assert res.for_task((("a", "b", "c"),)) == parse("cpu(cores=3)")
    assert seen == [(("a", "b", "c"),)]


def test_host_overrides_parse_ranks_and_devices():
    ov = parse_overrides("1,3-4=cpu(cores=8, mem=64GiB) & cuda(mem=16GiB) * 2; 2=mps(mem=32GiB)")
    assert sorted(ov) == [1, 2, 3, 4]
    assert ov[1]["cores"] == 8 and [a["kind"] for a in ov[1]["accelerators"]] == ["cuda", "cuda"]
    assert ov[2]["accelerators"] == [{"kind": "mps", "memory": 32 << 30}]
    merged = apply_override(_host(cores=2), ov[1])
    assert merged["cores"] == 8 and [a["index"] for a in merged["accelerators"]] == [0, 1]
    for bad in ("cpu(cores=2)", "0=cpu(cores=2)", "1=gpu(mem=1GiB)", "1=cpu(cores=2) | cpu(cores=4)"):
        with pytest.raises(RequirementError):
            parse_overrides(bad)
    assert parse_host("duration=2h & cpu(cores=2)")["max_duration"] == 7200


def test_placement_tracks_free_devices_cores_and_memory():
    two_gpus = [{"kind": "cuda", "memory": 16 << 30}, {"kind": "cuda", "memory": 16 << 30}]
    p = Placement({1: _host(4, 16 << 30, two_gpus), 2: _host(2, 8 << 30)}, slots=4)
    gpu = parse("cuda(mem=8GiB)")
    a = p.place(1, gpu)
    b = p.place(1, gpu)
    assert a and b and {a.devices, b.devices} == {(0,), (1,)}
    assert p.place(1, gpu) is None  # both devices taken
    assert p.place(2, gpu) is None  # no device at all
    p.release(a)
    c = p.place(1, gpu)
    assert c is not None and c.devices == a.devices and c.device_ids == (str(a.devices[0]),)
    cores = parse("cpu(cores=2, mem=4GiB)")
    x = p.place(2, cores)
    assert x is not None and x.threads == 2 and x.memory == 4 << 30
    assert p.place(2, cores) is None  # the rank's 2 cores are taken
    p.release(x)
    assert p.place(2, cores) is not None
    assert not p.servable(parse("cuda(mem=32GiB)"))
    with pytest.raises(RequirementError) as e:
        p.check("huge", parse("cuda(mem=32GiB)"))
    assert "huge" in str(e.value) and "rank 1" in str(e.value) and "rank 2" in str(e.value)


def test_unified_memory_counts_against_host_memory():
    mps = [{"kind": "mps", "memory": 32 << 30}]
    p = Placement({1: _host(8, 32 << 30, mps)}, slots=2)
    assert p.place(1, parse("cpu(mem=30GiB) & mps(mem=8GiB)")) is None
    a = p.place(1, parse("cpu(mem=16GiB) & gpu(mem=8GiB)"))
    assert a is not None and a.memory == 24 << 30


def _on(host, cores=2, memory=8 << 30, accelerators=(), pools=None):
    """A host as the probe describes it: ranks with equal pool keys on one host share the figures."""
    return dict(_host(cores, memory, accelerators), host=host, host_id=f"{host}/boot",
                pools=pools or {"cores": "cpus 0-1", "memory": "host"})


def test_ranks_on_one_host_share_its_cores_memory_and_devices():
    """Two ranks on a 2-core host never run two cpu(cores=2) tasks at once; a rank alone on its host has it all."""
    gpu = [{"kind": "cuda", "memory": 16 << 30, "index": 0, "device": "0"}]
    p = Placement({1: _on("h2", accelerators=gpu), 2: _on("h2", accelerators=gpu), 3: _on("h3")}, slots=1)
    two = parse("cpu(cores=2)")
    a = p.place(1, two)
    assert a is not None and p.place(2, two) is None  # the host's 2 cores are held by rank 1's task
    assert p.place(3, two) is not None
    p.release(a)
    assert p.place(2, two) is not None
    g = p.place(1, parse("cuda(mem=8GiB)"))
    assert g is not None and p.place(2, parse("cuda(mem=8GiB)")) is None  # one device on the host
    p.release(g)
    assert p.place(2, parse("cuda(mem=8GiB)")) is not None
    big = p.place(1, parse("cpu(mem=6GiB)"))
    assert big is not None and p.place(2, parse("cpu(mem=6GiB)")) is None  # 8 GiB of memory on the host
    assert "(cores shared with rank 2)" in p.hosts_text()


def test_a_task_without_cores_gets_its_share_of_the_host():
    p = Placement({1: _on("h2", cores=8), 2: _on("h2", cores=8), 3: _on("h3", cores=8)}, slots=2)
    assert p.place(1, parse("cpu(mem=1GiB)")).threads == 2  # 8 cores, 2 ranks x 2 workers
    assert p.place(3, parse("cpu(mem=1GiB)")).threads == 4


def test_own_shares_and_overrides_by_rank_are_not_pooled():
    own = {"cores": "rank", "memory": "rank"}  # SLURM's cpus per task: each rank's own
    p = Placement({1: _on("n1", cores=1, pools=own), 2: _on("n1", cores=1, pools=own)}, slots=1)
    assert p.place(1, parse("cpu(cores=1)")) and p.place(2, parse("cpu(cores=1)"))
    assert not p.servable(parse("cpu(cores=2)"))  # no rank may have more than its own
    ranked = apply_override(_on("n1"), parse_overrides("1=cpu(cores=2)")[1])
    q = Placement({1: ranked, 2: _on("n1")}, slots=1)
    assert q.place(1, parse("cpu(cores=2)")) and q.place(2, parse("cpu(cores=2)"))


# --- runs -----------------------------------------------------------------------------------

def _values(stdout):
    return json.loads(stdout.strip().splitlines()[-1])


@pytest.mark.mpi
@pytest.mark.timeout(180)
def test_gpu_tasks_run_only_on_gpu_ranks_under_mpiexec(tmp_path):
    done = mpiexec(4, SCRIPT, "--data-root", str(tmp_path), "--hosts", GPU_HOSTS, timeout=150)
    assert done.returncode == 0, done.stderr
    v = _values(done.stdout)
    for name in ("gpu", "two_gpus", "dynamic"):
        assert {r["rank"] for r in v[name]} <= {1, 2}, (name, v[name])
    assert all(r["cuda"] in ("0", "1") for r in v["gpu"])
    assert all(r["cuda"] == "0,1" and r["threads"] == "2" for r in v["two_gpus"])
    assert {r["rank"] for r in v["cpu"]} == {1, 2, 3}  # CPU tasks anywhere (12 of them, 3 ranks)
    assert all(r["threads"] == "1" and r["cuda"] == "" for r in v["cpu"])
    assert all(r["given"]["cpus"] == 2 for r in v["internal"])
    assert all(r["resources"] == {} and r["cuda"] is None for r in v["plain"])
    groups = {}
    for r in v["chunked"]:  # size_per_task=3: 7 tasks in placements of 3, 3 and 1, each on one worker
        groups.setdefault(r["resources"].get("group") or id(r), set()).add((r["rank"], r["pid"]))
    assert sorted(len(g) for g in groups.values()) == [1, 1, 1]
    assert sorted(sum(1 for r in v["chunked"] if (r["resources"].get("group") or id(r)) == k)
                  for k in groups) == [1, 3, 3]
    assert len({(r["rank"], r["pid"]) for r in v["mapped"]}) == 1  # scope="map": one placement for the node
    ok = [r for r in records(str(tmp_path)) if r.get("s") == "ok" and r.get("n") in ("gpu", "two_gpus")]
    assert ok and {r["r"] for r in ok} <= {1, 2}


@pytest.mark.mpi
@pytest.mark.timeout(180)
def test_an_impossible_requirement_fails_before_anything_runs(tmp_path):
    done = mpiexec(4, SCRIPT, "--data-root", str(tmp_path), "--hosts", GPU_HOSTS, "--impossible", timeout=150)
    assert done.returncode == 2, done.stderr
    line = [ln for ln in done.stderr.splitlines() if "mpipipe: error:" in ln]
    assert len(line) == 1 and "'huge' needs cuda(mem=80GiB) * 2" in line[0] and "rank 3" in line[0]
    assert "Traceback" not in done.stderr
    assert not [r for r in records(str(tmp_path)) if r.get("s")]  # no task ran


@pytest.mark.timeout(120)
def test_a_task_past_its_time_limit_is_stopped_and_retried(tmp_path):
    done = python(SCRIPT, "--data-root", str(tmp_path), "--num-executors", "1", "--time-limit", timeout=90)
    assert done.returncode == 0, done.stderr
    assert _values(done.stdout)["slow"] == [{"rank": 1, "attempt": 1}]
    failed = [r for r in records(str(tmp_path)) if r.get("s") == "failed"]
    assert len(failed) == 1 and "time limit of 1 s" in failed[0]["e"]


def test_a_resources_function_takes_the_nodes_inputs_by_name():
    """resources=lambda prep: ... gets the outputs of the input node named prep (one list of paths)."""
    from mpipipe import ComputeNode, Context

    ctx = Context()
    prep = ComputeNode(ctx, lambda t: None, npartitions=2, name="prep")
    seen = []

    def need(prep):
        seen.append(prep)
        return {"cpus": len(prep)}

    node = ComputeNode(ctx, lambda t: None, inputs=[prep], name="fit", resources=need)
    req = node.resources.for_task((("/out/prep/part-00000", "/out/prep/part-00001"),))
    assert seen == [["/out/prep/part-00000", "/out/prep/part-00001"]]
    assert "cores=2" in str(req)


def test_a_data_step_takes_its_default_engine_share_from_its_host():
    """DuckDB's default threads and memory: this rank's share of its own host (the executors there), not the
    machine divided by the whole world's executors."""
    import pyarrow as pa

    from mpipipe.logical.dataset import ArrowTableDataSet
    from mpipipe.logical.node import Context, DataSourceNode, SqlEngineNode

    ctx = Context()
    src = DataSourceNode(ctx, ArrowTableDataSet(pa.table({"x": [1, 2]})))
    node = SqlEngineNode(ctx, (src,), "select * from {0}")

    class Task:
        resources = None
        world_size = 9  # 8 executors in the world, but only 2 on this task's host

        @staticmethod
        def host_share():
            return 3, 10 << 30

    assert node.task_resources(Task()) == (3, int((10 << 30) * 0.7))
