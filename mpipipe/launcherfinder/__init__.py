"""What a launchers.py file imports: the requirement language, host specifications and find_launcher().

Code written for experimaestro's ``experimaestro.launcherfinder`` (and its ``.parser`` and ``.specs``
submodules, here too) runs with only its import
lines changed. A launchers.py defines ``find_launcher(requirements, tags)``,
matches the parsed requirement against the hosts it knows, and returns a
launcher::

    from mpipipe.launcherfinder import HostRequirement, HostSpecification, CudaSpecification, CPUSpecification

    def find_launcher(requirements: HostRequirement, tags=()):
        if match := requirements.match(HostSpecification(accelerators=[])):
            return DirectLauncher()
        ...

The parsing and matching live in mpipipe.requirements; loading the file and
calling it in mpipipe.launchers.finder.
"""
from __future__ import annotations

from mpipipe.launchers.finder import find_launcher
from mpipipe.requirements import (
    ACCELERATOR_KINDS,
    AcceleratorRequest,
    AcceleratorSpecification,
    CPUSpecification,
    CudaSpecification,
    HostRequirement,
    HostSimpleRequirement,
    HostSpecification,
    Match,
    MPSSpecification,
    Requirement,
    RequirementSyntaxError,
    parse,
    to_requirement,
)

__all__ = [
    "ACCELERATOR_KINDS", "AcceleratorRequest", "AcceleratorSpecification", "CPUSpecification", "CudaSpecification",
    "HostRequirement", "HostSimpleRequirement", "HostSpecification", "MPSSpecification", "Match",
    "MatchRequirement", "Requirement", "RequirementSyntaxError", "find_launcher", "parse", "to_requirement",
]

#: experimaestro's name for what `requirements.match(host)` returns (`score`, `requirement`).
MatchRequirement = Match

