"""The Driver: parses the command line (the user's flags and mpipipe's) and runs a plan.

mpipipe's flags are declared in mpipipe.flags; the user's are added with
add_argument() and returned by get_arguments().
"""
from __future__ import annotations

import argparse
from typing import Any, Dict, List, Optional, Set

from mpipipe import context, flags
from mpipipe.config import build_config
from mpipipe.console import console_logging, install_error_hook
from mpipipe.errors import MpipipeError
from mpipipe.flags import BUILTIN_FLAGS, SLURM_DESTS, SLURM_FLAGS  # noqa: F401 - part of this module's face
from mpipipe.jobdir import default_job_id
from mpipipe.jobmanager import JobManager, JobResult, report_error, start_executors_early
from mpipipe.logical.intermediates import choose_intermediates
from mpipipe.logical.plan import LogicalPlan


class Driver:
    def __init__(self, description: Optional[str] = None, args: Optional[List[str]] = None) -> None:
        self.parser = flags.builtin_parser(description=description)
        self._argv = args
        self._parsed: Optional[argparse.Namespace] = None
        self._group = self.parser._action_groups[-1]
        self._builtin_dests = set(BUILTIN_FLAGS) | set(SLURM_DESTS) | {"launcher_overrides"}
        self._user_options: Set[str] = set()
        self._slurm_added = False
        install_error_hook()

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        """Add a flag of the user's script (same signature as argparse's)."""
        action = self.parser.add_argument(*args, **kwargs)
        self._user_options.update(action.option_strings)
        return action

    def _add_slurm_flags(self) -> None:
        if not self._slurm_added:
            self._slurm_added = True
            flags.add_slurm_flags(self.parser, self._user_options)

    def _add_set_flag(self) -> None:
        """--set, added at parse time (like the SLURM flags) so that a script's own --set keeps working."""
        if "--set" in self._user_options or any(a.dest == "launcher_overrides" for a in self.parser._actions):
            return
        flags.add_set_flag(self._group)

    def _parse(self) -> argparse.Namespace:
        if self._parsed is None:
            self._add_set_flag()
            self._add_slurm_flags()
            self._parsed = self.parser.parse_args(self._argv)
            ns = vars(self._parsed)
            # launchers, executors and from_config() made from here on see the command line's options too
            context.use_command_line({k: ns[k] for k in BUILTIN_FLAGS + SLURM_DESTS if ns.get(k) is not None},
                                     {k: v for k, v in ns.items() if k not in self._builtin_dests},
                                     ns.get("launcher_overrides") or ())
            try:  # the script's flags are known: its executors may boot while it builds its plan
                start_executors_early(build_config(self.builtin_arguments(), init=context.init_options()))
            except MpipipeError:
                pass  # run() reports it
        return self._parsed

    def get_arguments(self) -> Dict[str, Any]:
        """The user's own flags as a dict (mpipipe's flags are left out)."""
        ns = vars(self._parse())
        return {k: v for k, v in ns.items() if k not in self._builtin_dests}

    def builtin_arguments(self) -> Dict[str, Any]:
        ns = vars(self._parse())
        return {k: ns[k] for k in BUILTIN_FLAGS + SLURM_DESTS if ns.get(k) is not None}

    def run(self, plan: LogicalPlan, launchers: Optional[Dict[str, Any]] = None) -> Optional[JobResult]:
        """Run the plan on the chosen platform; returns on rank 0 only (other ranks exit here).

        `launchers` maps node names to launchers for a launcher per step ("" is the default; None or a
        world launcher keeps a node on the world's executors)."""
        builtins = self.builtin_arguments()
        debug = bool(builtins.get("debug"))
        try:
            config = build_config(builtins, init=context.init_options())
            debug = config.debug
            console_logging(config.log_level)
            user_args = self.get_arguments()
            if not config.job_id:  # the platform needs the job directory before the world exists (SLURM)
                config = config.with_(job_id=default_job_id(user_args))
            steps = None
            if launchers:  # the launchers load only for a run that maps steps to them
                from mpipipe.launchers.plan_steps import step_launchers

                steps = step_launchers(launchers)
            choose_intermediates(plan, config.shuffle_format)
            return JobManager(config, user_args).run(plan, steps)
        except MpipipeError as e:
            report_error(e, debug)
