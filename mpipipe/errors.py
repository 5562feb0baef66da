"""The one error hierarchy: anything a user can cause raises a subclass of MpipipeError.

Messages say what was found, what was expected and what to do; the CLI prints
them as one line (no traceback unless --debug).
"""
from __future__ import annotations


class MpipipeError(Exception):
    """Base of every error a user can cause; printed without a traceback."""

    exit_code = 2


class ConfigError(MpipipeError):
    """A bad option, flag, environment variable or init() argument."""


class PlatformError(MpipipeError):
    """The platform could not be resolved, launched or joined."""


class PlanError(MpipipeError):
    """The plan is malformed (names, dependencies, partition counts)."""


class RequirementError(MpipipeError):
    """A requirement string or resource specification is malformed or cannot be met."""


class JournalError(MpipipeError):
    """The job's journal or directory cannot be used (locked, mismatched, unwritable)."""


class TaskFailedError(MpipipeError):
    """One or more tasks failed after all their attempts."""

    exit_code = 1


class JobInterrupted(MpipipeError):
    """The job was stopped by a signal; its journal was flushed and it can resume."""

    exit_code = 130
