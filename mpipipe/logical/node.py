"""Every node of a plan under one module, as smallpond's `logical.node` has them.

The base classes live in mpipipe.logical.plan; the data steps in datanode,
bucketing, transform and sink; smallpond's extra names are added here or in those
modules. Import from here in code ported from smallpond.
"""
from mpipipe.logical.bucketing import (ColumnPartitionNode, HashPartitionNode, LoadPartitionedDataSetNode,
                                       ShuffleNode, UserDefinedPartitionNode)
from mpipipe.logical.datanode import (DataNode, DataSetPartitionNode, DataSourceNode, EvenlyDistributedPartitionNode,
                                      PartitionNode, RepeatPartitionNode, UserPartitionedDataSourceNode)
from mpipipe.logical.plan import (ComputeNode, Context, LogicalPlan, Node, NodeInfo, code_fingerprint)
from mpipipe.logical.sink import DataSinkNode, RootNode
from mpipipe.logical.transform import (ArrowBatchNode, ArrowComputeNode, ArrowStreamNode, ConsolidateNode, LimitNode,
                                       PandasBatchNode, PandasComputeNode, ProjectionNode, PythonScriptNode,
                                       SqlEngineNode, UnionNode)

__all__ = [
    "ArrowBatchNode", "ArrowComputeNode", "ArrowStreamNode", "ColumnPartitionNode", "ComputeNode", "ConsolidateNode",
    "Context", "DataNode", "DataSetPartitionNode", "DataSinkNode", "DataSourceNode", "EvenlyDistributedPartitionNode",
    "HashPartitionNode", "LimitNode", "LoadPartitionedDataSetNode", "LogicalPlan", "Node", "NodeInfo",
    "PandasBatchNode", "PandasComputeNode", "PartitionNode", "ProjectionNode", "PythonScriptNode",
    "RepeatPartitionNode", "RootNode", "ShuffleNode", "SqlEngineNode", "UnionNode", "UserDefinedPartitionNode",
    "UserPartitionedDataSourceNode", "code_fingerprint",
]
