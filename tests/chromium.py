"""A real headless Chromium for tests: found or installed (Debian's `chromium`, once), run with timeouts.

Every process started here runs in its own process group with a hard timeout; the
group is killed when the command ends (Chromium leaves helper processes behind) or
times out. `ensure()` installs the package with apt-get when it is missing and
skips the calling test only when apt-get itself is not available.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import pytest

NAMES = ("chromium", "chromium-browser")
PACKAGES = ("chromium", "fonts-dejavu-core")
INSTALL_TIMEOUT = 1500.0
UPDATE_TIMEOUT = 600.0

_state: Dict[str, object] = {}


@dataclass
class Ran:
    argv: List[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float


def _run(argv: List[str], timeout: float, env: Optional[Dict[str, str]] = None, cwd: Optional[str] = None) -> Ran:
    """Run in a new session (own process group); kill the whole group afterwards, and on timeout fail loudly."""
    start = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
                            errors="replace", env=env, cwd=cwd, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc.pid)
        out, err = proc.communicate()
        raise AssertionError(f"timed out after {timeout:.0f}s: {' '.join(argv)}\nstdout:\n{out[-4000:]}\n"
                             f"stderr:\n{err[-4000:]}") from None
    finally:
        _kill_group(proc.pid)  # helpers (zygote, crashpad) may outlive the main process
    return Ran(argv, proc.returncode, out, err, time.monotonic() - start)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def find() -> Optional[str]:
    for name in NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def _apt_env() -> Dict[str, str]:
    env = dict(os.environ)
    env["DEBIAN_FRONTEND"] = "noninteractive"
    return env


def _install() -> float:
    """apt-get install the packages (apt-get update first only if the plain install fails); seconds taken."""
    apt = shutil.which("apt-get")
    if apt is None:
        pytest.skip("chromium is not installed and apt-get is not available here to install it "
                    "(install Debian's `chromium` package to run the browser tests)")
    if os.geteuid() != 0:
        pytest.skip("chromium is not installed and installing it with apt-get needs root")
    start = time.monotonic()
    install = [apt, "install", "-y", "-q", "--no-install-recommends", *PACKAGES]
    done = _run(install, INSTALL_TIMEOUT, env=_apt_env())
    if done.returncode != 0:  # package lists missing or stale: refresh them once and try again
        update = _run([apt, "update", "-q"], UPDATE_TIMEOUT, env=_apt_env())
        if update.returncode != 0:
            raise AssertionError(f"apt-get update failed ({update.returncode}):\n{update.stderr[-4000:]}")
        done = _run(install, INSTALL_TIMEOUT, env=_apt_env())
    if done.returncode != 0:
        raise AssertionError(f"apt-get install {' '.join(PACKAGES)} failed ({done.returncode}):\n"
                             f"{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    return time.monotonic() - start


def ensure() -> str:
    """The chromium executable, installed with apt-get on first use if missing (once per test session)."""
    if "path" not in _state:
        path = find()
        if path is None:
            _state["install_seconds"] = _install()
            path = find()
            assert path, f"apt-get installed {PACKAGES} but no {' or '.join(NAMES)} is on PATH"
        _state["path"] = path
    return str(_state["path"])


def install_seconds() -> Optional[float]:
    """How long this session's apt-get install took (None: chromium was already there)."""
    value = _state.get("install_seconds")
    return float(value) if value is not None else None  # type: ignore[arg-type]


def _kill_strays(marker: str) -> None:
    """Kill, by pid, leftovers of our run that left its process group (crashpad calls setsid): they name our profile."""
    if not os.path.isdir("/proc"):
        return
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        if marker.encode() in cmdline:
            try:
                os.kill(int(entry), signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def headless(url_or_path: str, *flags: str, timeout: float = 90.0, window: str = "1400,1000") -> Ran:
    """Run headless Chromium on a page with extra flags (e.g. --dump-dom, --screenshot=PATH) and a private profile.

    HOME and the XDG folders point into a temporary profile, so nothing is written to the user's home and the
    crash handler (which Chromium starts in a session of its own) names that folder and can be found and stopped.
    """
    exe = ensure()
    url = url_or_path if "://" in url_or_path else "file://" + os.path.abspath(url_or_path)
    with tempfile.TemporaryDirectory(prefix="mpipipe-chromium-") as profile:
        argv = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--no-first-run", "--no-default-browser-check", "--disable-extensions",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-breakpad", "--hide-scrollbars", "--mute-audio", "--enable-logging=stderr", "--v=0",
                f"--user-data-dir={os.path.join(profile, 'data')}", f"--window-size={window}", *flags, url]
        env = dict(os.environ)
        env.pop("DISPLAY", None)
        env.update(HOME=profile, XDG_CONFIG_HOME=os.path.join(profile, ".config"),
                   XDG_CACHE_HOME=os.path.join(profile, ".cache"))
        try:
            return _run(argv, timeout, env=env)
        finally:
            _kill_strays(profile)


class DevTools:
    """Chromium driven over the DevTools protocol on a pipe (--remote-debugging-pipe: fd 3 in, fd 4 out).

    Load a page, evaluate JavaScript in it, and collect what the page reported: uncaught exceptions and
    console.error messages. Its own process group, a deadline on every reply, the group killed on close.
    """

    def __init__(self, timeout: float = 60.0, window: str = "1400,1000") -> None:
        import fcntl
        import threading

        exe = ensure()
        self.timeout = timeout
        self._profile = tempfile.TemporaryDirectory(prefix="mpipipe-chromium-")
        profile = self._profile.name
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()
        high_r = fcntl.fcntl(to_chrome_r, fcntl.F_DUPFD, 10)
        high_w = fcntl.fcntl(from_chrome_w, fcntl.F_DUPFD, 10)
        for fd in (to_chrome_r, from_chrome_w):
            os.close(fd)

        def fds() -> None:  # in the child, before exec: the pipe ends at the numbers Chromium expects
            os.dup2(high_r, 3)
            os.dup2(high_w, 4)

        argv = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                "--no-default-browser-check", "--disable-extensions", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--disable-breakpad", "--hide-scrollbars",
                "--mute-audio", "--remote-debugging-pipe", f"--user-data-dir={os.path.join(profile, 'data')}",
                f"--window-size={window}", "about:blank"]
        env = dict(os.environ)
        env.pop("DISPLAY", None)
        env.update(HOME=profile, XDG_CONFIG_HOME=os.path.join(profile, ".config"),
                   XDG_CACHE_HOME=os.path.join(profile, ".cache"))
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, env=env, start_new_session=True,
                                     preexec_fn=fds, close_fds=False)
        os.close(high_r)
        os.close(high_w)
        self._next = 0
        self._lock = threading.Lock()
        self._buf = b""
        self.replies: Dict[int, dict] = {}
        self.events: List[dict] = []
        self.session: Optional[str] = None

    # the wire ------------------------------------------------------------------------------
    def _read_messages(self, deadline: float) -> None:
        import json
        import select

        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"Chromium did not answer within {self.timeout:.0f}s")
        ready, _, _ = select.select([self._from_chrome], [], [], left)
        if not ready:
            return
        chunk = os.read(self._from_chrome, 1 << 20)
        if not chunk:
            raise AssertionError(f"Chromium closed its DevTools pipe (exit code {self.proc.poll()})")
        self._buf += chunk
        while b"\0" in self._buf:
            raw, self._buf = self._buf.split(b"\0", 1)
            msg = json.loads(raw)
            if "id" in msg:
                self.replies[msg["id"]] = msg
            else:
                self.events.append(msg)

    def send(self, method: str, params: Optional[dict] = None, session: bool = True) -> dict:
        import json

        self._next += 1
        msg = {"id": self._next, "method": method, "params": params or {}}
        if session and self.session:
            msg["sessionId"] = self.session
        data = json.dumps(msg).encode() + b"\0"
        while data:
            data = data[os.write(self._to_chrome, data):]
        deadline = time.monotonic() + self.timeout
        while self._next not in self.replies:
            self._read_messages(deadline)
        reply = self.replies.pop(self._next)
        if "error" in reply:
            raise AssertionError(f"DevTools {method} failed: {reply['error']}")
        return reply.get("result", {})

    def wait_event(self, method: str) -> dict:
        deadline = time.monotonic() + self.timeout
        while True:
            for ev in self.events:
                if ev.get("method") == method and ev.get("sessionId") == self.session:
                    self.events.remove(ev)
                    return ev
            self._read_messages(deadline)

    # what tests use ------------------------------------------------------------------------
    def open(self, url_or_path: str) -> None:
        url = url_or_path if "://" in url_or_path else "file://" + os.path.abspath(url_or_path)
        target = self.send("Target.createTarget", {"url": "about:blank"}, session=False)["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True},
                                 session=False)["sessionId"]
        self.send("Runtime.enable")
        self.send("Page.enable")
        self.send("Network.enable")
        self.send("Page.navigate", {"url": url})
        self.wait_event("Page.loadEventFired")

    def evaluate(self, expression: str):  # type: ignore[no-untyped-def]
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression!r} threw: {result['exceptionDetails']}")
        return result["result"].get("value")

    def screenshot(self, path: str, selector: Optional[str] = None) -> Tuple[int, int]:
        """A PNG of the whole page, or of the element `selector` matches (beyond the window if it must); its size."""
        import base64
        import json

        params: Dict[str, object] = {"format": "png", "captureBeyondViewport": True}
        if selector is not None:
            box = self.evaluate(f"""(function(){{var r=document.querySelector({json.dumps(selector)})
                .getBoundingClientRect();return [r.left+window.scrollX,r.top+window.scrollY,r.width,r.height];}})()""")
            params["clip"] = {"x": box[0], "y": box[1], "width": box[2], "height": box[3], "scale": 1}
        data = base64.b64decode(self.send("Page.captureScreenshot", params)["data"])
        with open(path, "wb") as f:
            f.write(data)
        width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
        return width, height

    def requests(self) -> List[str]:
        """Every URL the page requested so far (the page itself included)."""
        return [ev["params"]["request"]["url"] for ev in self.events if ev.get("method") == "Network.requestWillBeSent"]

    def page_errors(self) -> List[str]:
        """Uncaught exceptions and console.error messages of the page so far."""
        self.send("Runtime.evaluate", {"expression": "0"})  # let pending events arrive
        out = []
        for ev in self.events:
            p = ev.get("params", {})
            if ev.get("method") == "Runtime.exceptionThrown":
                d = p.get("exceptionDetails", {})
                out.append(str(d.get("exception", {}).get("description") or d.get("text")))
            elif ev.get("method") == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append(" ".join(str(a.get("value", a.get("description"))) for a in p.get("args", [])))
        return out

    def close(self) -> None:
        try:
            if self.proc.poll() is None:
                try:
                    self.send("Browser.close", session=False)
                    self.proc.wait(timeout=10)
                except (AssertionError, OSError, subprocess.TimeoutExpired):
                    pass
        finally:
            _kill_group(self.proc.pid)
            self.proc.wait()
            for fd in (self._to_chrome, self._from_chrome):
                try:
                    os.close(fd)
                except OSError:
                    pass
            _kill_strays(self._profile.name)
            self._profile.cleanup()

    def __enter__(self) -> "DevTools":
        return self

    def __exit__(self, *exc) -> None:  # type: ignore[no-untyped-def]
        self.close()
