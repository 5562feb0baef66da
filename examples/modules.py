"""Modules scheduled from asyncio code: two arrays side by side, then a module that merges them.

    python examples/modules.py                                   # local worker processes
    python examples/modules.py --platform mpi --num-executors 3  # the same under mpiexec
    python examples/modules.py --launchers launchers.toml        # launchers described in a file

Run it twice: the second run finds every result in the cache and runs nothing.
Each run writes its own file and returns its path: results are small, data goes
to files.
"""
import asyncio
import json
import os
import random

import mpipipe
from mpipipe.launchers import from_config


class MakeShard(mpipipe.Module):
    """Writes one file of seeded random words per array element."""

    def __init__(self, out_dir, shards, words_per_shard, seed=0):
        self.out_dir = out_dir
        self.shards = shards
        self.words_per_shard = words_per_shard
        self.seed = seed

    def name(self):
        return "make-shard"

    def array(self):
        return list(range(self.shards))

    def run(self, iteration_value=None, iteration_index=0):
        rng = random.Random(self.seed * 1_000_003 + iteration_value)
        vocabulary = [f"w{i:03d}" for i in range(200)]
        path = os.path.join(self.out_dir, f"shard-{iteration_value:03d}.txt")
        os.makedirs(self.out_dir, exist_ok=True)
        with open(path + ".tmp", "w") as f:
            f.write(" ".join(rng.choice(vocabulary) for _ in range(self.words_per_shard)))
        os.replace(path + ".tmp", path)
        return path

    def validate(self, result, iteration_value=None, iteration_index=0):
        return os.path.exists(result)  # a cached path whose file is gone is made again


class CountWords(mpipipe.Module):
    """Counts the words of one shard file per element; the files come from MakeShard's results."""

    def __init__(self, paths, out_dir):
        self.paths = paths
        self.out_dir = out_dir

    def name(self):
        return "count-words"

    def array(self):
        return self.paths

    def run(self, iteration_value=None, iteration_index=0):
        counts = {}
        with open(iteration_value) as f:
            for word in f.read().split():
                counts[word] = counts.get(word, 0) + 1
        path = os.path.join(self.out_dir, f"counts-{iteration_index:03d}.json")
        os.makedirs(self.out_dir, exist_ok=True)
        with open(path, "w") as f:
            json.dump(counts, f)
        return path

    def validate(self, result, iteration_value=None, iteration_index=0):
        return os.path.exists(result)


class Merge(mpipipe.Module):
    """A single run: adds the per-shard counts up and writes the top words."""

    def __init__(self, count_files, out_path):
        self.count_files = count_files
        self.out_path = out_path

    def run(self, iteration_value=None, iteration_index=0):
        total = {}
        for path in self.count_files:
            with open(path) as f:
                for word, n in json.load(f).items():
                    total[word] = total.get(word, 0) + n
        top = sorted(total.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
        with open(self.out_path, "w") as f:
            f.write("".join(f"{w}\t{n}\n" for w, n in top))
        return {"words": sum(total.values()), "distinct": len(total), "top": top[0][0]}


async def pipeline(launcher, out, shards, words):
    # two independent arrays run at the same time on the same executors
    left, right = await asyncio.gather(
        launcher.schedule(MakeShard(os.path.join(out, "left"), shards, words, seed=1)),
        launcher.schedule(MakeShard(os.path.join(out, "right"), shards, words, seed=2)),
    )
    counts = await launcher.schedule(CountWords(left + right, os.path.join(out, "counts")))
    return await launcher.schedule(Merge(counts, os.path.join(out, "top_words.tsv")))


def main():
    driver = mpipipe.Driver(description=__doc__.splitlines()[0])
    driver.add_argument("--out", default="modules-out", help="output folder")
    driver.add_argument("--shards", type=int, default=8, help="files per array")
    driver.add_argument("--words", type=int, default=20000, help="words per file")
    driver.add_argument("--launchers", default=None,
                        help="a TOML/JSON file describing the launcher (a _target_ mapping); default: the "
                             "executors of this job's platform")
    args = driver.get_arguments()
    launcher = from_config(args["launchers"]) if args["launchers"] else mpipipe.WorldLauncher()
    summary = asyncio.run(pipeline(launcher, os.path.abspath(args["out"]), args["shards"], args["words"]))
    print(f"{summary['words']} words, {summary['distinct']} distinct, most frequent {summary['top']}; "
          f"top words in {os.path.join(os.path.abspath(args['out']), 'top_words.tsv')}")


if __name__ == "__main__":
    main()
