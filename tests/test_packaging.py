"""The install is reproducible: constraints.txt pins every package that setup.cfg asks for, in every extra."""
import configparser
import os
import re

from helpers import REPO


def _names(spec_lines):
    out = set()
    for line in spec_lines:
        line = line.strip()
        if line and not line.startswith("#"):
            out.add(re.split(r"[<>=!~\[; ]", line, maxsplit=1)[0].lower().replace("_", "-"))
    return out


def test_constraints_pin_every_requirement_of_every_extra():
    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(REPO, "setup.cfg"))
    wanted = _names(cfg["options"]["install_requires"].splitlines())
    for extra in cfg["options.extras_require"]:
        wanted |= _names(cfg["options.extras_require"][extra].splitlines())
    pins = {}
    with open(os.path.join(REPO, "constraints.txt")) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            m = re.match(r"^([A-Za-z0-9._-]+)==([^ ;]+)\s*(;.*)?$", line)
            assert m, f"constraints.txt: not an exact pin: {line!r}"
            pins[m.group(1).lower().replace("_", "-")] = m.group(2)
    missing = sorted(n for n in wanted if n not in pins)
    assert not missing, f"not pinned in constraints.txt (run make lock): {missing}"
    assert "mpipipe" not in pins
