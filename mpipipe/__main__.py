"""`python -m mpipipe ...`: the `mpipipe` command, for an environment whose bin/ is not on PATH."""
from mpipipe.cli import main

if __name__ == "__main__":
    main(prog_name="mpipipe")
