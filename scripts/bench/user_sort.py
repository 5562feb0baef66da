"""The sort as users write it (scripts/bench/user/), beside DuckDB alone and Polars: see user_pipelines.py."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import user_pipelines  # noqa: E402

if __name__ == "__main__":
    user_pipelines.main("sort")
