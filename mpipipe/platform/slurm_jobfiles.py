"""Where a SLURM job's records live in its job directory, and reading the exit record.

Both the submitting side that waits for a job (slurm_watch) and the platform
with `mpipipe status` (slurm) read the exit record the batch script writes when
the job ends; it lives here so that neither needs the other.
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, Optional

SLURM_DIR = "slurm"  # <job_dir>/slurm: batch script, output files, exit codes, submissions
SUBMISSIONS = "submissions.jsonl"


def read_exit(job_dir: str, job_id: str) -> Optional[Dict[str, Any]]:
    """The exit record the batch script wrote when the job ended (None while it runs or if it never got there)."""
    path = os.path.join(job_dir, SLURM_DIR, f"{job_id}.exit.json")
    try:
        with open(path) as f:
            rec = json.load(f)
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) else None
