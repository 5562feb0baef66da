"""The pure builders of the SLURM platform: sbatch options, the batch script, srun's argv.

Each is a function of its inputs only (no SLURM, no files but write_script),
so tests compare what they return. Every command is an argv list; options are
"--name=value" items that need no shell quoting. The same options are written
as `#SBATCH` lines into the batch script, quoted the way sbatch reads them
(double quotes, backslash escapes), so the script can be resubmitted by hand.
"""
from __future__ import annotations

import json
import os
import shlex
import sys
from typing import Any, Dict, List, Optional

from mpipipe.config import slurm_time_seconds
from mpipipe.errors import ConfigError
from mpipipe.platform.slurm_options import SlurmOptions
from mpipipe.atomic import atomic_write

BATCH_MODULE = "mpipipe.platform.slurm_batch"


def world_tasks(options: SlurmOptions, num_executors: Optional[int]) -> int:
    """How many ranks (1 scheduler + executors) the job asks for."""
    if num_executors:
        ntasks = num_executors + 1
        if options.nodes and options.ntasks_per_node and options.nodes * options.ntasks_per_node < ntasks:
            raise ConfigError(
                f"--num-executors {num_executors} needs {ntasks} tasks, but --nodes {options.nodes} x "
                f"--ntasks-per-node {options.ntasks_per_node} gives {options.nodes * options.ntasks_per_node}; "
                "raise one of them or drop --num-executors")
        return ntasks
    if options.ntasks_per_node:
        return (options.nodes or 1) * options.ntasks_per_node
    return max(2, options.nodes or 1)  # one task per node, and at least a scheduler and one executor


def output_template(slurm_dir: str, name: str = "slurm-%j.out") -> str:
    """--output for sbatch: % is a pattern character (doubled); a backslash turns patterns off entirely."""
    if "\\" in slurm_dir:
        return os.path.join(slurm_dir, "slurm.out")
    return os.path.join(slurm_dir.replace("%", "%%"), name)


def output_path(template: str, job_id: str) -> str:
    """The file SLURM writes for job `job_id` given an --output template from output_template()."""
    if "\\" in template:
        return template
    return template.replace("%%", "\0").replace("%j", job_id).replace("\0", "%")


def sbatch_options(options: SlurmOptions, *, job_name: str, output: str, cwd: str, comment: Optional[str] = None,
                   ntasks: Optional[int] = None, array: Optional[str] = None,
                   dependency: Optional[str] = None, world: bool = True) -> List[str]:
    """The sbatch options of one submission, each one argv item "--name=value" (no shell quoting needed)."""
    o = options
    opts = [f"--job-name={job_name}", f"--output={output}", "--open-mode=append", f"--chdir={cwd}"]
    if comment:
        opts.append(f"--comment={comment}")
    if array:
        opts.append(f"--array={array}")
    if dependency:
        opts.append(f"--dependency={dependency}")
    if ntasks:
        opts.append(f"--ntasks={ntasks}")
    if world and o.nodes:
        opts.append(f"--nodes={o.nodes}")
    if world and o.ntasks_per_node:
        opts.append(f"--ntasks-per-node={o.ntasks_per_node}")
    for name, value in (("cpus-per-task", o.cpus_per_task), ("partition", o.partition), ("account", o.account),
                        ("qos", o.qos), ("time", o.time), ("mem", o.mem), ("gres", o.gres), ("gpus", o.gpus),
                        ("gpus-per-node", o.gpus_per_node),
                        ("constraint", o.constraint), ("exclude", o.exclude)):
        if value is not None:
            opts.append(f"--{name}={value}")
    opts.append("--requeue" if o.requeue else "--no-requeue")
    if o.signal:
        opts.append(f"--signal=B:USR1@{o.signal}")
    for line in o.extra:
        opts.extend(shlex.split(line))
    return opts


def check_signal(options: SlurmOptions) -> None:
    if options.signal and options.time:
        limit = slurm_time_seconds(options.time)
        if limit is not None and options.signal >= limit:
            raise ConfigError(
                f"the warning signal comes {options.signal} s before the time limit, but --time {options.time} is "
                f"{limit} s; use a smaller --slurm-signal (e.g. {max(1, limit // 2)}) or a longer --time")


def sbatch_line(option: str) -> str:
    """One `#SBATCH` line for an option, quoted the way sbatch reads these lines (double quotes, backslash)."""
    name, eq, value = option.partition("=")
    if not eq:
        return f"#SBATCH {option}"
    if value and not any(c.isspace() or c in '"\'\\#' for c in value):
        return f"#SBATCH {option}"
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'#SBATCH {name}="{escaped}"'


def sbatch_argv(options: List[str], script: str) -> List[str]:
    """The submission: options on the command line too (they win over the script's #SBATCH lines)."""
    return ["sbatch", "--parsable"] + list(options) + [script]


def srun_argv(plugin: str, ntasks: Optional[int], cpus_per_task: Optional[int], argv: List[str],
              step_name: Optional[str] = None) -> List[str]:
    cmd = ["srun", f"--mpi={plugin}", "--kill-on-bad-exit=1"]
    if ntasks:
        cmd.append(f"--ntasks={ntasks}")
    if cpus_per_task:
        cmd.append(f"--cpus-per-task={cpus_per_task}")  # since SLURM 22.05 srun does not inherit sbatch's
    if step_name:
        cmd.append(f"--job-name={step_name}")
    return cmd + list(argv)


def _package_parent() -> str:
    import mpipipe

    return os.path.dirname(os.path.dirname(os.path.abspath(mpipipe.__file__)))


def batch_script(spec: Dict[str, Any], options: List[str], python: str = sys.executable,
                 package_parent: Optional[str] = None) -> str:
    """The batch script: a shebang, #SBATCH lines, and main(SPEC) with every argv as a JSON literal."""
    lines: List[str] = []
    polyglot = any(c.isspace() for c in python) or len(python) > 120
    lines.append("#!/bin/sh" if polyglot else f"#!{python}")
    lines.append("# Written by mpipipe (--platform slurm). The options are also on sbatch's command line;")
    lines.append("# these lines let `sbatch` resubmit this file by hand.")
    lines += [sbatch_line(o) for o in options if "\n" not in o and "\r" not in o]
    if polyglot:  # the interpreter's path does not fit a shebang: sh runs it, Python reads a string here
        lines.append(f"''''exec {shlex.quote(python)} \"$0\" \"$@\" # '''")
    lines += [
        "import json",
        "import sys",
        "",
        f"sys.path.insert(0, {package_parent or _package_parent()!r})",
        f"from {BATCH_MODULE} import main",
        "",
        f"SPEC = json.loads({json.dumps(spec, sort_keys=True)!r})",
        "sys.exit(main(SPEC))",
        "",
    ]
    return "\n".join(lines)


def write_script(path: str, text: str) -> None:
    """The batch script, executable and readable by its owner only from the moment it exists."""
    atomic_write(path, text, mode=0o700)


def array_range(size: int, throttle: Optional[int]) -> str:
    return f"0-{size - 1}" + (f"%{throttle}" if throttle else "")
