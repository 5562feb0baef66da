"""The requirement language's parser, where experimaestro users import it from (`launcherfinder.parser`)."""
from __future__ import annotations

from mpipipe.requirements import RequirementSyntaxError, parse

__all__ = ["RequirementSyntaxError", "parse"]
