"""Modules written the stopes way (StopesModule, a dataclass config, Requirements), for stopes_pipeline.py.

Only the package name in the import lines differs from stopes code.
"""
import hashlib
import json
import os
import typing as tp
from dataclasses import dataclass, field

from mpipipe.code.stopes_module import Requirements, StopesModule


@dataclass
class EmbedTextConfig:
    lang: str = "???"
    shards: int = 3
    lines_per_shard: int = 50
    dim: int = 8
    output_dir: str = "???"
    verbose: bool = field(default=False, metadata={"transient": True})  # not part of the cache key


class EmbedText(StopesModule):
    """One "embedding" file per shard of a language: a vector per line, from a hash (no model needed)."""

    def __init__(self, config: EmbedTextConfig):
        super().__init__(config, EmbedTextConfig)

    def array(self):
        return [f"{self.config.lang}-shard-{i:03d}" for i in range(self.config.shards)]

    def requirements(self):
        return Requirements(cpus_per_task=1, mem_gb=1, timeout_min=10)

    def name(self):
        return f"embed.{self.config.lang}"

    def comment(self):
        return f"embedding {self.config.shards} shard(s) of {self.config.lang}"

    def run(self, iteration_value: tp.Optional[tp.Any] = None, iteration_index: int = 0):
        os.makedirs(self.config.output_dir, exist_ok=True)
        path = os.path.join(self.config.output_dir, f"{iteration_value}.jsonl")
        with open(path + ".tmp", "w") as f:
            for line in range(self.config.lines_per_shard):
                digest = hashlib.sha256(f"{iteration_value}:{line}".encode()).digest()
                f.write(json.dumps([b / 255 for b in digest[: self.config.dim]]) + "\n")
        os.replace(path + ".tmp", path)  # a killed run leaves no half file under the final name
        return path


@dataclass
class MergeConfig:
    inputs: tp.List[str] = field(default_factory=list)
    output: str = "???"


class MergeEmbeddings(StopesModule):
    """A single run: counts the vectors of every input and writes the total."""

    def __init__(self, config: MergeConfig):
        super().__init__(config, MergeConfig)

    def requirements(self):
        return Requirements(cpus_per_task=1, timeout_min=5)

    def run(self, iteration_value: tp.Optional[tp.Any] = None, iteration_index: int = 0):
        total = 0
        for path in self.config.inputs:
            with open(path) as f:
                total += sum(1 for _ in f)
        os.makedirs(os.path.dirname(self.config.output) or ".", exist_ok=True)
        with open(self.config.output, "w") as f:
            json.dump({"vectors": total, "files": len(self.config.inputs)}, f)
        return self.config.output
