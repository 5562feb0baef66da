"""stopes' docs examples (module overview and composition), with only the package name changed in imports.

    python stopes_seed_job.py --launcher local|mpi|world|slurm [KEY=VALUE ...] [mpipipe flags]

The launcher config is examples/conf/launcher/<name>.yaml; KEY=VALUE items override the pipeline's config
(OmegaConf's dotlist, e.g. launcher.max_parallel=2). Prints one JSON line with the results.
"""
import asyncio
import json
import os
import sys
import typing as tp
from dataclasses import dataclass, field

import hydra
from omegaconf import OmegaConf

import mpipipe
from mpipipe.code.stopes_module import StopesModule
from mpipipe.core.stopes_module import Requirements

CONF = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "examples", "conf", "launcher")


@dataclass
class MyModuleConfig:
    lang: str = "en"
    shards: tp.List[str] = field(default_factory=lambda: ["a", "b", "c"])
    output_dir: str = "???"


class MyModule(StopesModule):
    def __init__(self, config: MyModuleConfig):
        super().__init__(config, MyModuleConfig)
        self.prefix = f"{self.config.lang}:"  # computed in __init__, used by run (shared, not modified)

    def array(self):
        return list(self.config.shards)

    def requirements(self):
        return Requirements(cpus_per_task=1, mem_gb=1, timeout_min=5)

    def name(self):
        return f"my_module.{self.config.lang}"

    def comment(self):
        return f"stopes docs example for {self.config.lang}"

    def run(
        self,
        iteration_value: tp.Optional[tp.Any] = None,
        iteration_index: int = 0,
    ):
        os.makedirs(self.config.output_dir, exist_ok=True)
        path = os.path.join(self.config.output_dir, f"{self.config.lang}-{iteration_index}.txt")
        with open(path, "w") as f:
            f.write(f"{self.prefix}{iteration_value}\n")
        return {"path": path, "value": iteration_value, "index": iteration_index,
                "job": os.environ.get("SLURM_JOB_ID"), "pid": os.getpid()}


class Pipeline:
    def __init__(self, config):
        self.config = config
        self.launcher = hydra.utils.instantiate(config.launcher)

    async def run(self):
        launcher = self.launcher
        embed_module = StopesModule.build(self.config.embed_text, lang="en")
        embedded_files = await self.launcher.schedule(embed_module)

        src_embeddings, tgt_embeddings = await asyncio.gather(
            launcher.schedule(
                StopesModule.build(self.config.embed_text, lang="bn")
            ),
            launcher.schedule(
                StopesModule.build(self.config.embed_text, lang="hi")
            ),
        )
        return {"en": embedded_files, "bn": src_embeddings, "hi": tgt_embeddings,
                "launcher": type(launcher).__name__, "submitted": list(getattr(launcher, "submitted", []))}


if __name__ == "__main__":
    driver = mpipipe.Driver()
    driver.add_argument("--launcher", default="local")
    driver.add_argument("--out", required=True)
    driver.add_argument("overrides", nargs="*")
    args = driver.get_arguments()
    config = OmegaConf.create({
        "launcher": OmegaConf.load(os.path.join(CONF, f"{args['launcher']}.yaml")),
        "embed_text": {"_target_": "__main__.MyModule", "lang": "???", "output_dir": args["out"]},
    })
    config = OmegaConf.merge(config, OmegaConf.from_dotlist(args["overrides"]))
    out = asyncio.run(Pipeline(config).run())
    print(json.dumps(out), flush=True)
    sys.exit(0)
