"""The sort as users write it under mpiexec -n 4 (3 executors), its shuffle in files and over MPI side by side,
beside DuckDB alone and Polars: user_sort.py --launch mpi --executors 3 --shuffle both (see user_pipelines.py).
Flags given here come after those, so they win (e.g. --reps 5, --executors 4)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import user_pipelines  # noqa: E402

if __name__ == "__main__":
    sys.argv[1:1] = ["--launch", "mpi", "--executors", "3", "--shuffle", "both"]
    user_pipelines.main("sort", label="shuffle_mpi")
