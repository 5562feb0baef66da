"""DirectLauncher under the module path experimaestro code imports it from (`...launchers.direct`)."""
from __future__ import annotations

from mpipipe.launchers.world import DirectLauncher

__all__ = ["DirectLauncher"]
