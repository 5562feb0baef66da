"""The logical plan: nodes that say what to compute, not where.

Its names load their module on first use (mpipipe.lazy): a worker that runs a
ComputeNode imports mpipipe.logical.plan, and with it this package, without
the data nodes and datasets.
"""
from typing import TYPE_CHECKING

from mpipipe.lazy import lazy_names

_DATASETS = ("ArrowTableDataSet", "CsvDataSet", "DataSet", "FileSet", "Fragment", "JsonDataSet", "PandasDataSet",
             "ParquetDataSet", "PartitionedDataSet", "SqlQueryDataSet")

__all__ = [
    "ArrowBatchNode", "ArrowComputeNode", "ArrowStreamNode", "ArrowTableDataSet", "ColumnPartitionNode", "ComputeNode",
    "ConsolidateNode", "Context", "CsvDataSet", "DataNode", "DataSet", "DataSetPartitionNode", "DataSinkNode",
    "DataSourceNode", "EvenlyDistributedPartitionNode", "FileSet", "Fragment", "HashPartitionNode", "JsonDataSet",
    "LimitNode", "LoadPartitionedDataSetNode", "LogicalPlan", "Node", "PandasBatchNode", "PandasComputeNode",
    "PandasDataSet", "ParquetDataSet", "PartitionNode", "PartitionedDataSet", "ProjectionNode", "PythonScriptNode",
    "RepeatPartitionNode", "RootNode", "ShuffleNode", "SqlEngineNode", "SqlQueryDataSet", "UnionNode",
    "UserDefinedPartitionNode", "UserPartitionedDataSourceNode",
]

__getattr__, __dir__ = lazy_names("mpipipe.logical", globals(),
                                  {name: "mpipipe.logical." + ("dataset" if name in _DATASETS else "node")
                                   for name in __all__})

if TYPE_CHECKING:  # what the names are, for type checkers and editors
    from mpipipe.logical.dataset import (ArrowTableDataSet, CsvDataSet, DataSet, FileSet, Fragment, JsonDataSet,
                                         PandasDataSet, ParquetDataSet, PartitionedDataSet, SqlQueryDataSet)
    from mpipipe.logical.node import (ArrowBatchNode, ArrowComputeNode, ArrowStreamNode, ColumnPartitionNode,
                                      ComputeNode, ConsolidateNode, Context, DataNode, DataSetPartitionNode,
                                      DataSinkNode, DataSourceNode, EvenlyDistributedPartitionNode, HashPartitionNode,
                                      LimitNode, LoadPartitionedDataSetNode, LogicalPlan, Node, PandasBatchNode,
                                      PandasComputeNode, PartitionNode, ProjectionNode, PythonScriptNode,
                                      RepeatPartitionNode, RootNode, ShuffleNode, SqlEngineNode, UnionNode,
                                      UserDefinedPartitionNode, UserPartitionedDataSourceNode)
