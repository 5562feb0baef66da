"""The host probe within an allocation: affinity, cgroup v1/v2 limits, SLURM's figures and GPUs, pool keys,
host-name overrides, and what a task learns of its host. Fake /sys/fs/cgroup trees and environments."""
import json

import pytest

from mpipipe.errors import RequirementError
from mpipipe.execution import hostprobe as hp
from mpipipe.execution.task import Task, TaskContext, host_view


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


# --- CPU lists and /proc/self/cgroup -----------------------------------------------------------------------

def test_cpu_lists_parse_and_format():
    assert hp.parse_cpu_list("0-3,8,10-11\n") == [0, 1, 2, 3, 8, 10, 11]
    assert hp.parse_cpu_list("") == []
    assert hp.format_cpu_list([11, 0, 1, 2, 3, 8, 10]) == "0-3,8,10-11"
    assert hp.format_cpu_list([5]) == "5"


def test_proc_cgroup_lines_of_v1_and_v2():
    text = "12:cpu,cpuacct:/slurm/uid_0/job_7\n4:memory:/slurm/uid_0/job_7/step_0\n0::/user.slice/a.scope\n"
    paths = hp.read_proc_cgroup(text)
    assert paths["cpu"] == paths["cpuacct"] == "/slurm/uid_0/job_7"
    assert paths["memory"] == "/slurm/uid_0/job_7/step_0"
    assert paths[""] == "/user.slice/a.scope"


# --- cgroup v2 ---------------------------------------------------------------------------------------------

def test_cgroup_v2_takes_the_tightest_limit_on_the_way_to_the_root(tmp_path):
    _write(tmp_path / "cgroup.controllers", "cpu memory")
    _write(tmp_path / "job" / "cpu.max", "300000 100000")
    _write(tmp_path / "job" / "memory.max", str(4 << 30))
    _write(tmp_path / "job" / "step" / "cpu.max", "max 100000")
    _write(tmp_path / "job" / "step" / "memory.max", str(3 << 30))
    limits = hp.cgroup_limits(str(tmp_path), "0::/job/step\n")
    assert limits.cpu_quota == 3.0 and limits.cpu_group == "/job"
    assert limits.memory == 3 << 30 and limits.memory_group == "/job/step"


def test_cgroup_v2_without_limits_and_a_path_the_mount_does_not_show(tmp_path):
    _write(tmp_path / "cgroup.controllers", "cpu memory")
    _write(tmp_path / "cpu.max", "max 100000")
    _write(tmp_path / "memory.max", "max")
    assert hp.cgroup_limits(str(tmp_path), "0::/docker/abc\n") == hp.CgroupLimits()
    _write(tmp_path / "memory.max", str(1 << 30))  # a container sees its own cgroup as the root
    assert hp.cgroup_limits(str(tmp_path), "0::/docker/abc\n").memory == 1 << 30


def test_cgroup_v2_in_a_hybrid_mount(tmp_path):
    _write(tmp_path / "unified" / "cgroup.controllers", "cpu")
    _write(tmp_path / "unified" / "g" / "cpu.max", "150000 100000")
    assert hp.cgroup_limits(str(tmp_path), "0::/g\n").cpu_quota == 1.5


# --- cgroup v1 ---------------------------------------------------------------------------------------------

def test_cgroup_v1_quota_and_memory_limit(tmp_path):
    cpu = tmp_path / "cpu,cpuacct"  # a joint mount, as systemd makes it
    _write(cpu / "cpu.cfs_quota_us", "-1")
    _write(cpu / "cpu.cfs_period_us", "100000")
    _write(cpu / "a" / "cpu.cfs_quota_us", "50000")
    _write(cpu / "a" / "cpu.cfs_period_us", "100000")
    _write(tmp_path / "memory" / "memory.limit_in_bytes", "9223372036854771712")  # no limit
    _write(tmp_path / "memory" / "a" / "memory.limit_in_bytes", str(768 << 20))
    limits = hp.cgroup_limits(str(tmp_path), "3:cpu,cpuacct:/a\n2:memory:/a\n0::/\n")
    assert limits.cpu_quota == 0.5 and limits.cpu_group == "/a"
    assert limits.memory == 768 << 20 and limits.memory_group == "/a"


def test_cgroup_v1_without_limits(tmp_path):
    _write(tmp_path / "cpu" / "cpu.cfs_quota_us", "-1")
    _write(tmp_path / "cpu" / "cpu.cfs_period_us", "100000")
    _write(tmp_path / "memory" / "memory.limit_in_bytes", "9223372036854771712")
    assert hp.cgroup_limits(str(tmp_path), "1:cpu:/\n4:memory:/x\n") == hp.CgroupLimits()
    assert hp.cgroup_limits(str(tmp_path / "nothing"), "") == hp.CgroupLimits()


# --- SLURM -------------------------------------------------------------------------------------------------

def test_slurm_share_per_task_and_per_node():
    assert hp.slurm_share({}) is None
    s = hp.slurm_share({"SLURM_JOB_ID": "7", "SLURM_CPUS_PER_TASK": "1", "SLURM_CPUS_ON_NODE": "4",
                        "SLURM_MEM_PER_NODE": "4000"})
    assert (s.cores, s.cores_per_rank, s.memory, s.memory_per_rank) == (1, True, 4000 << 20, False)
    s = hp.slurm_share({"SLURM_JOB_ID": "7", "SLURM_CPUS_ON_NODE": "4", "SLURM_MEM_PER_CPU": "1000"})
    assert (s.cores, s.cores_per_rank, s.memory, s.memory_per_rank) == (4, False, 4000 << 20, False)
    s = hp.slurm_share({"SLURM_JOB_ID": "7", "SLURM_CPUS_PER_TASK": "2", "SLURM_MEM_PER_CPU": "512",
                        "SLURM_JOB_GPUS": "2,3"})
    assert (s.cores, s.memory, s.memory_per_rank, s.gpus) == (2, 1024 << 20, True, ("2", "3"))


def test_the_allocation_is_the_tightest_of_affinity_cgroup_and_slurm():
    """The figures of the issue: a 2-core, 23.5 GiB machine; the job had 1 CPU per task and 4 GB."""
    machine = int(23.5 * (1 << 30))
    plain = hp.allocation([0, 1], machine, hp.CgroupLimits(), None)
    assert (plain["cores"], plain["memory"]) == (2, machine)
    assert plain["pools"] == {"cores": "cpus 0-1", "memory": "host"}
    slurm = hp.slurm_share({"SLURM_JOB_ID": "9", "SLURM_CPUS_PER_TASK": "1", "SLURM_MEM_PER_NODE": "4096"})
    a = hp.allocation([0, 1], machine, hp.CgroupLimits(), slurm)
    assert (a["cores"], a["memory"]) == (1, 4 << 30)
    assert a["pools"] == {"cores": "rank", "memory": "slurm job 9"}  # cpus per task: each rank's own
    assert "SLURM_CPUS_PER_TASK=1" in a["limits"]["cores"]
    quota = hp.allocation([0, 1, 2, 3], machine, hp.CgroupLimits(1.5, "/g", 1 << 30, "/g"), None)
    assert (quota["cores"], quota["memory"]) == (1, 1 << 30)
    assert quota["pools"] == {"cores": "cpus 0-3 cgroup /g", "memory": "cgroup /g"}
    bound = hp.allocation([3], machine, hp.CgroupLimits(), None)  # a rank bound to one core
    assert bound["cores"] == 1 and bound["pools"]["cores"] == "cpus 3"
    on_node = hp.allocation([0, 1, 2, 3], machine, hp.CgroupLimits(),
                            hp.slurm_share({"SLURM_JOB_ID": "9", "SLURM_CPUS_ON_NODE": "2"}))
    assert on_node["cores"] == 2 and on_node["pools"]["cores"] == "slurm job 9"  # shared by the job's ranks


def test_equal_limits_keep_the_broader_pool():
    """Two cgroups whose limits equal the machine still share the machine."""
    a = hp.allocation([0, 1], 8 << 30, hp.CgroupLimits(2.0, "/a", 8 << 30, "/a"), None)
    assert a["pools"] == {"cores": "cpus 0-1", "memory": "host"}


# --- GPUs --------------------------------------------------------------------------------------------------

SMI = [("0", "GPU-aaa", 16 << 30), ("1", "GPU-bbb", 16 << 30), ("2", "GPU-ccc", 40 << 30), ("3", "GPU-ddd", 40 << 30)]


def test_gpus_from_nvidia_smi_cuda_visible_devices_and_slurm():
    assert [d["index"] for d in hp.cuda_devices({}, SMI, None)] == ["0", "1", "2", "3"]
    assert hp.cuda_devices({}, [], None) == []
    seen = hp.cuda_devices({"CUDA_VISIBLE_DEVICES": "2,3"}, SMI, None)
    assert [(d["index"], d["device"], d["memory"]) for d in seen] == [("2", "2", 40 << 30), ("3", "3", 40 << 30)]
    assert hp.cuda_devices({"CUDA_VISIBLE_DEVICES": ""}, SMI, None) == []
    assert hp.cuda_devices({"CUDA_VISIBLE_DEVICES": "-1"}, SMI, None) == []
    # SLURM with ConstrainDevices: CUDA calls them 0,1; they are the node's 2 and 3
    env = {"SLURM_JOB_ID": "5", "SLURM_JOB_GPUS": "2,3", "CUDA_VISIBLE_DEVICES": "0,1"}
    seen = hp.cuda_devices(env, SMI, hp.slurm_share(env))
    assert [(d["index"], d["device"], d["memory"]) for d in seen] == [("0", "2", 40 << 30), ("1", "3", 40 << 30)]
    # no nvidia-smi: SLURM's GPUs still count, their memory unknown
    env = {"SLURM_JOB_ID": "5", "SLURM_STEP_GPUS": "1", "SLURM_JOB_GPUS": "0,1"}
    assert [(d["index"], d["memory"]) for d in hp.cuda_devices(env, [], hp.slurm_share(env))] == [("1", 0)]
    assert hp.cuda_devices({"CUDA_VISIBLE_DEVICES": "0"}, [], None) == []  # no evidence of a GPU at all


# --- pools, and overrides by rank and by host name ---------------------------------------------------------

def _desc(host="h2", cores=2, memory=4 << 30, pools=None, accelerators=()):
    d = {"host": host, "host_id": host + "/boot", "cores": cores, "memory": memory,
         "accelerators": [dict(a) for a in accelerators]}
    if pools is not False:
        d["pools"] = pools or {"cores": "cpus 0-1", "memory": "host"}
    return d


def test_ranks_that_see_the_same_cores_share_them():
    gpu = [{"kind": "cuda", "memory": 16 << 30, "index": "0", "device": "0"}]
    hosts = {1: _desc(accelerators=gpu), 2: _desc(accelerators=gpu), 3: _desc("h3"),
             4: _desc("h3", pools={"cores": "rank", "memory": "rank"}), 5: _desc(pools=False)}
    keys = {r: hp.pool_keys(r, d) for r, d in hosts.items()}
    assert keys[1] == keys[2]  # one host, the same cores, the same memory, the same device
    assert keys[1][0] != keys[3][0]  # another host
    assert keys[4][0] == ("rank", 4, "cores")  # SLURM's cpus per task: its own
    assert keys[5][0] == ("rank", 5, "cores")  # no pool keys (older mpipipe, a hand-made host): its own
    assert hp.pool_members(hosts, 1) == [1, 2] and hp.pool_members(hosts, 3) == [3]
    assert hp.pool_members(hosts, 9) == [9]
    assert hp.pool_members(hosts, 4, "cores") == [4] and hp.pool_members(hosts, 4, "memory") == [4]
    assert hp.host_members(hosts, 3) == [3, 4] and hp.host_members(hosts, 1) == [1, 2, 5]


def test_overrides_by_rank_and_by_host_name():
    parts = hp.parse_override_parts("1,3-4=cpu(cores=8); node2,gpu*=cpu(mem=2GiB) & cuda(mem=16GiB) * 2")
    assert parts[0][:2] == ([1, 3, 4], []) and parts[1][:2] == ([], ["node2", "gpu*"])
    assert sorted(hp.parse_overrides("1,3-4=cpu(cores=8); node2=cpu(cores=2)")) == [1, 3, 4]
    assert hp.host_override("node2=cpu(cores=4); 1=cpu(cores=2)", "node2.cluster.example")["cores"] == 4
    assert hp.host_override("gpu*=cpu(cores=4)", "gpu07")["cores"] == 4
    assert hp.host_override("node2=cpu(cores=4)", "node3") is None
    for bad in ("cpu(cores=2)", "0=cpu(cores=2)", "no de=cpu(cores=2)", "=cpu(cores=2)", "node2=cpu(cores"):
        with pytest.raises(RequirementError):
            hp.parse_overrides(bad)


def test_a_host_entry_is_shared_by_the_hosts_ranks_a_rank_entry_is_the_ranks_own():
    override = hp.parse_host("cpu(cores=8, mem=2GiB) & cuda(mem=16GiB)")
    shared = {r: hp.apply_override(_desc(), override, scope="host") for r in (1, 2)}
    assert shared[1]["cores"] == 8 and shared[1]["memory"] == 2 << 30 and shared[1]["overridden"] == "host"
    assert hp.pool_keys(1, shared[1]) == hp.pool_keys(2, shared[2])
    own = {r: hp.apply_override(_desc(), override) for r in (1, 2)}
    assert hp.pool_keys(1, own[1])[0] != hp.pool_keys(2, own[2])[0]
    assert hp.pool_keys(1, own[1])[2] != hp.pool_keys(2, own[2])[2]
    memory_only = hp.apply_override(_desc(), hp.parse_host("cpu(mem=2GiB)"), scope="host")
    assert memory_only["cores"] == 2 and memory_only["pools"]["cores"] == "cpus 0-1"  # cores still probed


def test_probe_reports_pools_and_where_the_figures_come_from():
    desc = hp.probe(env={})
    assert desc["cores"] >= 1 and desc["memory"] > 0 and desc["host_id"].startswith(desc["host"])
    assert set(desc["pools"]) == {"cores", "memory"} and set(desc["limits"]) == {"cores", "memory"}
    json.dumps(desc)


# --- what a task learns of its host ------------------------------------------------------------------------

def test_a_task_knows_the_executors_that_share_its_host(tmp_path):
    hosts = {"1": _desc("h2"), "2": _desc("h2"), "3": _desc("h3", cores=4, memory=8 << 30)}
    (tmp_path / "job.json").write_text(json.dumps({"hosts": hosts}))
    task = Task(1, 0, 0, 0, "k", (), str(tmp_path / "out"))

    def ctx(rank):
        return TaskContext(task, "n", 1, rank, 4, "h", str(tmp_path))

    assert ctx(1).host_executors == 2 and ctx(1).host_share() == (1, 2 << 30)
    assert ctx(3).host_executors == 1 and ctx(3).host_share() == (4, 8 << 30)
    assert ctx(3).host_offer["host"] == "h3"
    # SLURM's cpus per task: each rank's cores are its own, the node's memory is the job's
    own = {"cores": "rank", "memory": "slurm job 7"}
    hosts = {"1": _desc("n1", cores=1, memory=4 << 30, pools=own), "2": _desc("n1", cores=1, memory=4 << 30, pools=own)}
    (tmp_path / "job.json").write_text(json.dumps({"hosts": hosts}))
    other = tmp_path / "again"
    other.mkdir()
    (other / "job.json").write_text(json.dumps({"hosts": hosts}))
    slurm = TaskContext(task, "n", 1, 2, 3, "n1", str(other))
    assert slurm.host_executors == 2 and slurm.host_share() == (1, 2 << 30)


def test_without_job_json_a_task_counts_the_launchers_ranks_here(tmp_path, monkeypatch):
    monkeypatch.delenv("MPI_LOCALNRANKS", raising=False)
    monkeypatch.delenv("OMPI_COMM_WORLD_LOCAL_SIZE", raising=False)
    monkeypatch.delenv("PMIX_LOCAL_SIZE", raising=False)
    assert host_view(str(tmp_path / "none"), 1, 5)["executors"] == 4
    monkeypatch.setenv("MPI_LOCALNRANKS", "2")
    view = host_view(str(tmp_path / "none"), 1, 5)
    assert view["executors"] == view["core_sharers"] == 2 and view["offer"]["cores"] >= 1


def test_an_executor_applies_its_hosts_entry_and_leaves_a_bad_option_to_rank_0(monkeypatch):
    import socket

    from mpipipe.execution.executor import host_description

    monkeypatch.setenv("SP_HOSTS", f"{socket.gethostname()}=cpu(cores=3, mem=1GiB); 1=cpu(cores=9)")
    desc = host_description()
    assert (desc["cores"], desc["memory"], desc["overridden"]) == (3, 1 << 30, "host")  # rank entries: rank 0's
    monkeypatch.setenv("SP_HOSTS", "no de=cpu(cores=2)")  # rank 0 stops the job with the error
    assert "overridden" not in host_description()
