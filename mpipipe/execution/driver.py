"""smallpond's `execution.driver.Driver`: mpipipe's Driver (mpipipe.driver) under smallpond's module path.

It also takes smallpond's spelling of the common flags (`--num_executors`,
`--data_root`, `--job_id`, `--max_fail`, `--fail_fast`) and its `run(plan)`
returns an ExecutionPlan (`successful`, `final_output`, `get_output(name)`) on
rank 0. Run as a script, this file is the executor a smallpond-style
Platform.start_job() starts: `python .../driver.py --connect HOST:PORT ...`
joins the job whose rank 0 is waiting at that address.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any, Dict, List, Optional

if __name__ == "__main__":  # run as a file: its folder is sys.path[0] and would shadow nothing useful
    sys.path[:] = [p for p in sys.path if not p.rstrip("/").endswith("mpipipe/execution")]

from mpipipe.driver import Driver as _Driver  # noqa: E402

# smallpond's flag -> (mpipipe's dest, argparse keywords)
SMALLPOND_FLAGS: Dict[str, Any] = {
    "--num_executors": ("num_executors", {"type": int}),
    "--data_root": ("data_root", {}),
    "--job_id": ("job_id", {}),
    "--max_fail": ("max_retries", {"type": int}),
    "--max_fail_count": ("max_retries", {"type": int}),
    "--fail_fast": ("fail_fast", {"action": "store_true"}),
    "--fail_fast_on_failure": ("fail_fast", {"action": "store_true"}),
}


class Driver(_Driver):
    """mpipipe's Driver with smallpond's flag spellings and return value."""

    def __init__(self, description: Optional[str] = None, args: Optional[List[str]] = None) -> None:
        super().__init__(description, args)
        taken = {s for a in self.parser._actions for s in a.option_strings}
        for flag, (dest, kw) in SMALLPOND_FLAGS.items():
            if flag not in taken:
                self.parser.add_argument(flag, dest=dest, default=None, help=argparse.SUPPRESS, **kw)

    def get_user_arguments(self, to_dict: bool = True) -> Any:
        args = self.get_arguments()
        return args if to_dict else argparse.Namespace(**args)

    def get_driver_arguments(self, to_dict: bool = True) -> Any:
        args = self.builtin_arguments()
        return args if to_dict else argparse.Namespace(**args)

    def run(self, plan: Any, launchers: Optional[Dict[str, Any]] = None, **_smallpond: Any) -> Any:
        """Run the plan; on rank 0 returns an ExecutionPlan wrapping mpipipe's JobResult (other ranks exit)."""
        from mpipipe.execution.manager import ExecutionPlan

        result = super().run(plan, launchers)
        return ExecutionPlan(plan, result) if result is not None else None


def main(argv: Optional[List[str]] = None) -> int:
    """An executor that joins a job by connecting to its rank 0 (see mpipipe.platform.base.CallbackWorld)."""
    from mpipipe.platform.base import serve_callback

    return serve_callback(list(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    raise SystemExit(main())
