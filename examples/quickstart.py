"""Quickstart: count words over sharded text, on any platform, with the same script.

    python examples/quickstart.py                                   # local processes
    python examples/quickstart.py --platform mpi --num-executors 4  # launches mpiexec itself
    mpiexec -n 4 python examples/quickstart.py                      # inside an MPI world
    python examples/quickstart.py -i 'books/*.txt' -n 16            # your own text files

Three nodes: make_text writes one text shard per partition (skipped when -i is
given), count_words counts each shard (pointwise: shard p feeds count p with no
barrier), merge_counts adds the counts up into one word_counts.tsv.
"""
import collections
import glob
import os
import random

import mpipipe
from mpipipe import ComputeNode, Context, Driver, LogicalPlan

WORDS = ("alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma tau "
         "upsilon phi chi psi omega").split()


def make_text(task):
    """Writes a deterministic shard: the same partition always gets the same words."""
    rng = random.Random(task.partition)
    n = task.args["words_per_shard"]
    with open(os.path.join(task.output_dir, "shard.txt"), "w") as f:
        for start in range(0, n, 12):
            f.write(" ".join(rng.choice(WORDS) for _ in range(min(12, n - start))) + "\n")
    return n


def count_words(task):
    files = task.input_paths and [os.path.join(d, "shard.txt") for d in task.input_paths]
    if not files:  # reading the user's own files: partition p takes every n-th file
        files = task.args["files"][task.partition::task.npartitions]
    counts = collections.Counter()
    for path in files:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                counts.update(line.split())
    with open(os.path.join(task.output_dir, "counts.tsv"), "w") as f:
        for word, n in sorted(counts.items()):
            f.write(f"{word}\t{n}\n")
    return sum(counts.values())


def merge_counts(task):
    total = collections.Counter()
    for d in task.input_paths:
        with open(os.path.join(d, "counts.tsv")) as f:
            for line in f:
                word, n = line.rstrip("\n").split("\t")
                total[word] += int(n)
    with open(os.path.join(task.output_dir, "word_counts.tsv"), "w") as f:
        for word, n in sorted(total.items(), key=lambda kv: (-kv[1], kv[0])):
            f.write(f"{word}\t{n}\n")
    return sum(total.values())


def build_plan(npartitions, words_per_shard, input_paths):
    ctx = Context()
    if input_paths:
        files = sorted(p for pattern in input_paths for p in glob.glob(pattern))
        if not files:
            raise mpipipe.PlanError(f"no file matches {' '.join(input_paths)}; give existing text files with -i")
        counts = ComputeNode(ctx, count_words, npartitions=min(npartitions, len(files)), args={"files": files})
    else:
        text = ComputeNode(ctx, make_text, npartitions=npartitions, args={"words_per_shard": words_per_shard})
        counts = ComputeNode(ctx, count_words, inputs=[text], npartitions=npartitions, pointwise=True)
    merged = ComputeNode(ctx, merge_counts, inputs=[counts], npartitions=1)
    return LogicalPlan(ctx, merged)


def main():
    driver = Driver(description=__doc__.splitlines()[0])
    driver.add_argument("-n", "--npartitions", type=int, default=8, help="text shards / counting tasks")
    driver.add_argument("-w", "--words-per-shard", type=int, default=20000, help="words in each generated shard")
    driver.add_argument("-i", "--input_paths", nargs="*", default=None, help="text files or globs to count instead")
    args = driver.get_arguments()
    plan = build_plan(args["npartitions"], args["words_per_shard"], args["input_paths"])
    result = driver.run(plan)
    if result is not None:
        out = os.path.join(result.outputs()[0], "word_counts.tsv")
        print(f"counted {result.values()[0]:,} words; word counts: {out}")


if __name__ == "__main__":
    main()
