"""Modules scheduled from asyncio code, for the module tests: prints one JSON line per result."""
import asyncio
import json
import os
import time

import mpipipe
from mpipipe.refs import store_array


class Square(mpipipe.Module):
    transient = ("verbose", "fail_index")  # neither changes a successful result

    def __init__(self, n, sleep=0.0, fail_index=-1, tag="a", version="1", verbose=False):
        self.n = n
        self.sleep = sleep
        self.fail_index = fail_index
        self.tag = tag
        self.verbose = verbose
        self._version = version

    def name(self):
        return f"square-{self.tag}"

    def version(self):
        return self._version

    def array(self):
        return [10 * i for i in range(self.n)]

    def run(self, iteration_value=None, iteration_index=0):
        if iteration_index == self.fail_index:
            raise ValueError(f"shard {iteration_index} refuses")
        if self.sleep:
            time.sleep(self.sleep)
        return {"index": iteration_index, "square": iteration_value ** 2, "pid": os.getpid()}


class Total(mpipipe.Module):
    """A single run that takes a big array by reference and reads only one element per shard."""

    def __init__(self, ref):
        self.ref = ref

    def array(self):
        return self.ref

    def run(self, iteration_value=None, iteration_index=0):
        return int(sum(iteration_value))


async def main(args):
    launcher = mpipipe.WorldLauncher()
    if args["platform_config"]:  # the world's platform described as a _target_ mapping (JSON text here)
        from mpipipe.launchers import instantiate

        launcher = mpipipe.WorldLauncher(platform=instantiate(json.loads(args["platform_config"])))
    if args["mode"] == "array":
        out = await launcher.schedule(Square(args["shards"], args["sleep"], args["fail_index"],
                                             version=args["version"], verbose=args["verbose"]))
        print(json.dumps({"results": out}))
    elif args["mode"] == "gather":
        a, b = await asyncio.gather(launcher.schedule(Square(args["shards"], args["sleep"], tag="left")),
                                    launcher.schedule(Square(args["shards"], args["sleep"], tag="right")))
        print(json.dumps({"left": a, "right": b}))
    elif args["mode"] == "failing":
        try:
            await launcher.schedule(Square(args["shards"], fail_index=args["fail_index"]))
        except mpipipe.ModuleFailed as e:
            print(json.dumps({"results": e.results, "failures": [
                {"index": f.index, "error": f.error, "traceback": f.traceback, "log": f.log, "attempts": f.attempts}
                for f in e.failures]}))
    elif args["mode"] == "ref":
        launcher.join()
        ref = store_array([list(range(i, i + 1000)) for i in range(args["shards"])])  # in the job directory
        assert ref.path.startswith(os.path.abspath(args["data_root"])), ref.path
        print(json.dumps({"results": await launcher.schedule(Total(ref))}))


if __name__ == "__main__":
    driver = mpipipe.Driver()
    driver.add_argument("--mode", default="array")
    driver.add_argument("--shards", type=int, default=10)
    driver.add_argument("--sleep", type=float, default=0.0)
    driver.add_argument("--fail-index", type=int, default=-1)
    driver.add_argument("--version", default="1")
    driver.add_argument("--platform-config", default=None)
    driver.add_argument("--verbose", action="store_true")
    args = driver.get_arguments()
    args["data_root"] = driver.builtin_arguments().get("data_root", "mpipipe-jobs")
    asyncio.run(main(args))
