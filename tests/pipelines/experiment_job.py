"""Tasks written the experimaestro way, run by mpipipe's experiment() on the direct (local) launcher.

Prints one JSON line: each task's result, when the `with` body ended, and (with --fail) the failures
that leaving the block raised.
"""
import argparse
import json
import os
import time

from mpipipe import Meta, Param, Task, experiment
from mpipipe.experiment import ExperimentFailed
from mpipipe.connectors.local import LocalConnector
from mpipipe.launchers.direct import DirectLauncher


class Square(Task):
    """Writes x*x to <out>/<x>.txt after `delay` seconds (delay and out do not change the result)."""

    x: Param[int]
    out: Meta[str]
    delay: Meta[float] = 0.0

    def execute(self):
        started = time.time()
        time.sleep(self.delay)
        with open(os.path.join(self.out, f"{self.x}.txt"), "w") as f:
            f.write(str(self.x * self.x))
        return {"x": self.x, "square": self.x * self.x, "pid": os.getpid(), "started": started, "ended": time.time()}


class Total(Task):
    """Sums the files its parts wrote: it can only run after them."""

    parts: Param[list]

    def execute(self):
        return sum(int(open(os.path.join(p.out, f"{p.x}.txt")).read()) for p in self.parts)


class Broken(Task):
    reason: Param[str] = "no"

    def execute(self):
        raise RuntimeError(f"broken on purpose: {self.reason}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--fail", action="store_true")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    launcher = DirectLauncher(connector=LocalConnector.instance())
    report = {}
    try:
        with experiment(args.workdir, "squares", launcher=launcher) as xp:
            parts = [Square(x=x, out=args.out, delay=1.5) for x in (2, 3)]
            for part in parts:
                part.submit()
            total = Total.C(parts=parts).submit()
            if args.fail:
                broken = Broken(reason="test").submit()
                Total(parts=[broken]).submit()
            report["body_ended"] = time.time()
            report["experiment"] = repr(xp)
        report["after_block"] = time.time()
    except ExperimentFailed as e:
        report["failed"] = str(e)
        report["failures"] = [[type(task).__name__, type(error).__name__] for task, error in e.failures]
    report["squares"] = [part.result() for part in parts]
    report["total"] = total.result()
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
