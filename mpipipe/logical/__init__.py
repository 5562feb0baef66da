"""The logical plan: nodes that say what to compute, not where."""
from mpipipe.logical.node import ComputeNode, Context, LogicalPlan, Node

__all__ = ["ComputeNode", "Context", "LogicalPlan", "Node"]
