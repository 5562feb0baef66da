"""A pipeline written the stopes way: Hydra config, a launcher from it, modules built from config nodes.

    python examples/stopes_pipeline.py                                   # launcher=local (conf/stopes_pipeline.yaml)
    python examples/stopes_pipeline.py launcher=slurm launcher.partition=debug
    mpiexec -n 4 python examples/stopes_pipeline.py launcher=mpi
    python examples/stopes_pipeline.py --num-executors 3 --set launcher.cache_dir=/tmp/cache

Hydra reads `key=value` overrides; mpipipe's own flags (--platform, --num-executors, --data-root, ...) and
`--set KEY=VALUE` are taken off the command line first (hydra_argv()), `--set` becoming Hydra's `++KEY=VALUE`.
It prints one JSON line: the merged file and what it holds.
"""
import asyncio
import json

import hydra
from omegaconf import DictConfig

from mpipipe.code.stopes_module import StopesModule
from mpipipe.launchers import hydra_argv


class EmbedAndMerge:
    """The shape of stopes' global mining pipeline: two languages embedded side by side, then a merge."""

    def __init__(self, config: DictConfig):
        self.config = config
        self.launcher = hydra.utils.instantiate(config.launcher)

    async def run(self):
        src_embeddings, tgt_embeddings = await asyncio.gather(
            self.launcher.schedule(
                StopesModule.build(self.config.embed_text, lang=self.config.src_lang)
            ),
            self.launcher.schedule(
                StopesModule.build(self.config.embed_text, lang=self.config.tgt_lang)
            ),
        )
        merged = await self.launcher.schedule(
            StopesModule.build(self.config.merge, inputs=src_embeddings + tgt_embeddings)
        )
        with open(merged) as f:
            print(json.dumps({"merged": merged, **json.load(f)}), flush=True)


@hydra.main(config_path="conf", config_name="stopes_pipeline", version_base=None)
def main(config: DictConfig) -> None:
    asyncio.run(EmbedAndMerge(config).run())


if __name__ == "__main__":
    hydra_argv()  # mpipipe's flags off the command line; Hydra gets the rest
    main()
