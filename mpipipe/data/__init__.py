"""Data descriptions below both the plan and the task bodies (see fragment.py)."""
