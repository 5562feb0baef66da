"""The logical plan: nodes that say what to compute, not where."""
from mpipipe.logical.datanode import (ColumnPartitionNode, DataNode, DataSetPartitionNode, DataSourceNode,
                                      EvenlyDistributedPartitionNode, HashPartitionNode, UserDefinedPartitionNode)
from mpipipe.logical.dataset import (ArrowTableDataSet, CsvDataSet, DataSet, Fragment, JsonDataSet, PandasDataSet,
                                     ParquetDataSet)
from mpipipe.logical.node import ComputeNode, Context, LogicalPlan, Node
from mpipipe.logical.sink import DataSinkNode
from mpipipe.logical.transform import (ArrowComputeNode, ArrowStreamNode, ConsolidateNode, LimitNode,
                                       PandasComputeNode, ProjectionNode, PythonScriptNode, SqlEngineNode, UnionNode)

__all__ = [
    "ArrowComputeNode", "ArrowStreamNode", "ArrowTableDataSet", "ColumnPartitionNode", "ComputeNode",
    "ConsolidateNode", "Context", "CsvDataSet", "DataNode", "DataSet", "DataSetPartitionNode", "DataSinkNode",
    "DataSourceNode", "EvenlyDistributedPartitionNode", "Fragment", "HashPartitionNode", "JsonDataSet", "LimitNode",
    "LogicalPlan", "Node", "PandasComputeNode", "PandasDataSet", "ParquetDataSet", "ProjectionNode",
    "PythonScriptNode", "SqlEngineNode", "UnionNode", "UserDefinedPartitionNode",
]
