"""Host and requirement specifications, where experimaestro users import them from (`launcherfinder.specs`)."""
from __future__ import annotations

from mpipipe.requirements import (AcceleratorSpecification, CPUSpecification, CudaSpecification, HostRequirement,
                                  HostSimpleRequirement, HostSpecification, Match, MPSSpecification)

MatchRequirement = Match

__all__ = ["AcceleratorSpecification", "CPUSpecification", "CudaSpecification", "HostRequirement",
           "HostSimpleRequirement", "HostSpecification", "MPSSpecification", "Match", "MatchRequirement"]
