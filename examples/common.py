"""What the data examples (groupby.py, sort.py, dedup.py) share: flags, and generating their input once.

Only plan-building code lives here; no task body uses it, so the executors
never need to import this module.
"""
import os
import shutil
import tempfile

from mpipipe import PlanError


def add_flags(driver, name, rows, columns):
    """The flags every data example takes; returns nothing, read them with driver.get_arguments()."""
    driver.add_argument("-i", "--input", nargs="+", default=None, metavar="PATH",
                        help=f"Parquet files, globs or folders with columns {columns} (default: generate input)")
    driver.add_argument("-o", "--output", default=None, help=f"output folder (default: <data-root>/example-output/{name})")
    driver.add_argument("--partitions", type=int, default=4, help="output partitions (= output files)")
    driver.add_argument("--splits", type=int, default=None,
                        help="row ranges the input is split into before partitioning (default: --partitions)")
    driver.add_argument("--rows", type=int, default=rows, help="rows to generate (without -i)")
    driver.add_argument("--files", type=int, default=4, help="files to generate (without -i)")
    driver.add_argument("--seed", type=int, default=0, help="seed of the generated input")
    driver.add_argument("--gen-dir", default=None, help="where generated input goes (default: <data-root>/example-data)")


def check_positive(args, *flags):
    for flag in flags:
        if args[flag] is not None and args[flag] < 1:
            raise PlanError(f"--{flag.replace('_', '-')} must be at least 1, got {args[flag]}")


def data_root(driver):
    """The folder holding job directories for this run (--data-root, SP_DATA_ROOT, init(), or the default)."""
    from mpipipe.config import build_config
    from mpipipe.session import init_options

    return build_config(driver.builtin_arguments(), init=init_options()).data_root


def output_folder(driver, args, name):
    return args["output"] or os.path.join(data_root(driver), "example-output", name)


def sink_type(driver, output):
    """"link" when the output folder is on the file system of the job directories: the sink then hard-links
    the files the last step wrote (a job never writes into a file it committed), so no step copies data;
    "copy" elsewhere, where a link would be a symbolic link into the job directory."""
    def device(path):
        path = os.path.abspath(path)
        while not os.path.exists(path):
            path = os.path.dirname(path)
        return os.stat(path).st_dev

    return "link" if device(output) == device(data_root(driver)) else "copy"


def input_paths(driver, args, name, write_files):
    """The user's -i paths, or a generated folder: write_files(folder) fills it, once, with the same data every time."""
    if args["input"]:
        return args["input"]
    check_positive(args, "rows", "files")
    folder = os.path.join(args["gen_dir"] or os.path.join(data_root(driver), "example-data"),
                          f"{name}-{args['rows']}rows-{args['files']}files-seed{args['seed']}")
    generate_once(folder, write_files)
    return [folder]


def generate_once(folder, write_files):
    """Create `folder`, filled by write_files(tmp_folder), exactly once however many processes run this at once.

    Under mpiexec every rank runs the script, and every rank needs the input
    before it builds the plan (a source lists its files then). So each rank
    that does not see the folder writes a private copy (the same bytes: the
    generator is seeded) and renames it into place. The first rename wins;
    the others fail, since the folder then exists and is not empty, and their
    copies are dropped. Nobody sees a half-written folder, and the winner's
    files never change afterwards (their sizes and times are part of the job's
    fingerprints, so a re-run reuses its finished tasks).
    """
    if os.path.isdir(folder):
        return
    parent = os.path.dirname(os.path.abspath(folder))
    tmp = None
    try:
        os.makedirs(parent, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(folder)}.tmp-", dir=parent)
        write_files(tmp)
        if not os.listdir(tmp):
            raise PlanError(f"generating {folder} wrote no file")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp made it private
        try:
            os.rename(tmp, folder)
        except OSError:
            if not os.path.isdir(folder):  # not another process's folder: a real problem
                raise
    except OSError as e:
        raise PlanError(f"cannot write the generated input to {folder}: {e.strerror or e}; "
                        "choose another --gen-dir or --data-root") from None
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def random_strings(rng, n, length, alphabet=b"abcdefghijklmnopqrstuvwxyz"):
    """n random strings of `length` characters from `alphabet`, as an Arrow string array."""
    import numpy as np
    import pyarrow as pa

    chars = np.frombuffer(alphabet, dtype=np.uint8)[rng.integers(0, len(alphabet), size=(n, length))]
    return pa.array(chars.view(f"S{length}").ravel(), pa.binary()).cast(pa.string())


def file_sizes(rows, files):
    """Rows in each of `files` files, as even as can be."""
    return [(f + 1) * rows // files - f * rows // files for f in range(files)]
