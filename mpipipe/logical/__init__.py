"""The logical plan: nodes that say what to compute, not where."""
from mpipipe.logical.dataset import (ArrowTableDataSet, CsvDataSet, DataSet, FileSet, Fragment, JsonDataSet,
                                     PandasDataSet, ParquetDataSet, PartitionedDataSet, SqlQueryDataSet)
from mpipipe.logical.node import (ArrowBatchNode, ArrowComputeNode, ArrowStreamNode, ColumnPartitionNode, ComputeNode,
                                  ConsolidateNode, Context, DataNode, DataSetPartitionNode, DataSinkNode,
                                  DataSourceNode, EvenlyDistributedPartitionNode, HashPartitionNode, LimitNode,
                                  LoadPartitionedDataSetNode, LogicalPlan, Node, PandasBatchNode, PandasComputeNode,
                                  PartitionNode, ProjectionNode, PythonScriptNode, RepeatPartitionNode, RootNode,
                                  ShuffleNode, SqlEngineNode, UnionNode, UserDefinedPartitionNode,
                                  UserPartitionedDataSourceNode)

__all__ = [
    "ArrowBatchNode", "ArrowComputeNode", "ArrowStreamNode", "ArrowTableDataSet", "ColumnPartitionNode", "ComputeNode",
    "ConsolidateNode", "Context", "CsvDataSet", "DataNode", "DataSet", "DataSetPartitionNode", "DataSinkNode",
    "DataSourceNode", "EvenlyDistributedPartitionNode", "FileSet", "Fragment", "HashPartitionNode", "JsonDataSet",
    "LimitNode", "LoadPartitionedDataSetNode", "LogicalPlan", "Node", "PandasBatchNode", "PandasComputeNode",
    "PandasDataSet", "ParquetDataSet", "PartitionNode", "PartitionedDataSet", "ProjectionNode", "PythonScriptNode",
    "RepeatPartitionNode", "RootNode", "ShuffleNode", "SqlEngineNode", "SqlQueryDataSet", "UnionNode",
    "UserDefinedPartitionNode", "UserPartitionedDataSourceNode",
]
