"""What mpipipe prints on the terminal, all of it through `logging` (logger "mpipipe"), so it can be silenced or sent
elsewhere like any library's messages.

- Its own lines (progress, the closing summary, hints) are INFO records of "mpipipe.console".
- Warnings of any "mpipipe.*" logger are shown as `[mpipipe] WARNING: ...`.
- An MpipipeError is a user's mistake: it prints as `mpipipe: error: ...` (an ERROR record) and exits with the
  error's code, without a traceback unless --debug (or SP_DEBUG) asks.

The first message installs one handler on "mpipipe" that writes to stderr, unless the application has
configured logging already (a handler of its own on "mpipipe", or on the root logger): then mpipipe's records go
to that configuration and none of mpipipe's own. A handler the application puts on "mpipipe" later takes over
too: mpipipe's stops writing. Silencing: `logging.getLogger("mpipipe").setLevel(logging.ERROR)` before the first run
(mpipipe's own lines keep that level; --log-level sets only the rank logs'), or
`logging.getLogger("mpipipe.console").setLevel(logging.WARNING)` at any time.

While a live display (the progress bars) is on the terminal, everything written to stderr through this module
or `sys.stderr` goes above it, and the display is drawn again below.
"""
from __future__ import annotations

import logging
import os
import re
import shlex
import shutil
import sys
from types import TracebackType
from typing import IO, Any, Callable, List, Optional, Sequence, Tuple, Type

from mpipipe.errors import MpipipeError

LOGGER = "mpipipe"
log = logging.getLogger(f"{LOGGER}.console")
_KIND = "mpipipe_kind"  # a record's attribute: "error" for the one-line error of an MpipipeError


def wants_debug() -> bool:
    return "--debug" in sys.argv[1:] or os.environ.get("SP_DEBUG", "").lower() in ("1", "true", "yes", "on")


def world_rank() -> Optional[int]:
    """This process's rank if an MPI or SLURM launcher started it, else None."""
    for var in ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK"):
        value = os.environ.get(var, "")
        if value.isdigit():
            return int(value)
    return None


# --- the handler -----------------------------------------------------------------------------------------

class ConsoleHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """mpipipe's records on stderr: its own lines as they are, warnings with their level, errors as one line.

    Records of other "mpipipe.*" loggers below WARNING (what the rank logs keep) are not shown. The stream is
    looked up at each record (None: whatever sys.stderr is then, so a test's or a notebook's capture sees it).
    """

    def __init__(self, stream: Optional[IO[str]] = None) -> None:
        super().__init__(stream)
        self._fixed = stream
        self.addFilter(_shown)

    def current_stream(self) -> IO[str]:
        return self._fixed if self._fixed is not None else sys.stderr

    def format(self, record: logging.LogRecord) -> str:
        if getattr(record, _KIND, None) == "error":
            return f"mpipipe: error: {record.getMessage()}"
        if record.name == log.name and record.levelno < logging.WARNING:
            return record.getMessage()
        return f"[mpipipe] {record.levelname}: {record.getMessage()}"

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record) + "\n"
            if getattr(record, _KIND, None) == "error":
                for area in list(_live):  # the error that ends the run: the display stays as it was, it goes below
                    area.close()
            stream = self.current_stream()
            with _above_live_display(stream):
                stream.write(text)
                stream.flush()
        except Exception:  # noqa: BLE001 - logging must never raise into the caller
            self.handleError(record)

    def flush(self) -> None:
        stream = self.current_stream()
        if hasattr(stream, "flush"):
            stream.flush()


def _shown(record: logging.LogRecord) -> bool:
    return (record.levelno >= logging.WARNING or record.name == log.name) and not _users_handlers()


def _users_handlers() -> bool:
    """Whether the application has a handler of its own on "mpipipe" (or "mpipipe.console"): it gets the
    records, and mpipipe's handler stands aside. Handlers mpipipe adds itself (the rank logs) carry
    `mpipipe_own`."""
    for name in (LOGGER, log.name):
        for h in logging.getLogger(name).handlers:
            if not isinstance(h, ConsoleHandler) and not getattr(h, "mpipipe_own", False):
                return True
    return False


_installed = False


def terminal_handler() -> Optional[ConsoleHandler]:
    """mpipipe's own handler, if it is installed (and the user did not remove it)."""
    for h in logging.getLogger(LOGGER).handlers:
        if isinstance(h, ConsoleHandler):
            return h
    return None


def ensure_terminal() -> None:
    """Install mpipipe's handler once per process, unless the application configured logging first."""
    global _installed
    if _installed:
        return
    _installed = True
    logger = logging.getLogger(LOGGER)
    # mpipipe's own lines keep the level the application gave "mpipipe" (INFO if none): --log-level, which
    # mpipipe sets on "mpipipe" for the rank logs, does not silence them
    if log.level == logging.NOTSET:
        log.setLevel(logger.level or logging.INFO)
    if terminal_handler() is not None or logging.getLogger().handlers or _users_handlers():
        return
    logger.addHandler(ConsoleHandler())


def console_logging(level: str) -> None:
    """Warnings and mpipipe's own lines reach the terminal; the rank logs get everything at `level`."""
    ensure_terminal()
    logging.getLogger(LOGGER).setLevel(level)


def say(text: str) -> None:
    """One line of mpipipe's on the terminal (an INFO record of "mpipipe.console")."""
    ensure_terminal()
    log.info(text)


def error_line(message: str) -> None:
    """`mpipipe: error: <message>`, as an ERROR record (a user's logging setup formats it its own way)."""
    ensure_terminal()
    log.error("%s", message, extra={_KIND: "error"})


def terminal_stream() -> Optional[IO[str]]:
    """Where mpipipe's handler writes now, or None when mpipipe's messages go to the application's logging."""
    h = terminal_handler()
    return h.current_stream() if h is not None else None


def install_error_hook() -> None:
    """An MpipipeError that escapes the user's script (say, while it builds its plan) prints as one line."""
    previous = sys.excepthook
    if getattr(previous, "_mpipipe", False):
        return

    def hook(etype: Type[BaseException], value: BaseException, tb: Optional[TracebackType]) -> None:
        if not isinstance(value, MpipipeError):
            previous(etype, value, tb)
            return
        if not wants_debug():
            if world_rank() in (None, 0):  # every rank builds the plan: one copy of the message is enough
                error_line(str(value))
        else:
            previous(etype, value, tb)  # --debug: the traceback, and still the error's exit code
        sys.stderr.flush()
        sys.stdout.flush()
        logging.shutdown()
        os._exit(value.exit_code)

    hook._mpipipe = True  # type: ignore[attr-defined]
    sys.excepthook = hook


# --- commands to print -------------------------------------------------------------------------------------

def mpipipe_command() -> str:
    """How to run the `mpipipe` command, as text that works when pasted into the shell that started this process:
    plain `mpipipe` only when that is this installation's and its environment is active; else its full path."""
    here = os.path.join(os.path.dirname(sys.executable), "mpipipe")
    found = shutil.which("mpipipe")
    active = sys.prefix == sys.base_prefix or os.environ.get("VIRTUAL_ENV") == sys.prefix
    try:
        same = bool(found) and os.path.exists(here) and os.path.samefile(str(found), here)
    except OSError:
        same = False
    if same and active:
        return "mpipipe"
    if os.path.isfile(here) and os.access(here, os.X_OK):
        return shlex.quote(here)
    return f"{shlex.quote(sys.executable)} -m mpipipe"


# --- the live display ----------------------------------------------------------------------------------------

def terminal_size(stream: IO[str]) -> Tuple[int, int]:
    """(columns, lines) of the terminal behind `stream`; 80x24 when it cannot tell."""
    try:
        size = os.get_terminal_size(stream.fileno())
        if size.columns > 0 and size.lines > 0:
            return size.columns, size.lines
    except (AttributeError, ValueError, OSError):
        pass
    return 80, 24


class LiveArea:
    """A block of lines redrawn in place at the bottom of a terminal.

    `show(make)` calls make(columns, lines) with the terminal's size now and draws what it returns (rich
    renderables) cut to one column less than the width and one line less than the height, so no line wraps and
    the block never scrolls: moving the cursor back up always lands on its first line, and no stale frame is
    left in the scrollback. Output written to stderr meanwhile goes above the block.
    """

    def __init__(self, stream: IO[str]) -> None:
        from rich.console import Console

        self.stream = stream
        self.console = Console(file=stream, force_terminal=True, highlight=False, emoji=False, soft_wrap=False,
                               force_jupyter=False)
        self.height = 0  # lines of the block on the terminal now
        self.midline = False  # something wrote part of a line below the block: start on the next one
        self._lines: List[str] = []
        self._cells: List[int] = []  # the width of each line rendered last
        self._drawn_cells: List[int] = []  # ... and of each line on the terminal
        self._proxy: Optional[_StderrProxy] = None

    @property
    def ascii_only(self) -> bool:
        return not (self.console.encoding or "").lower().startswith("utf")

    def render(self, make: Callable[[int, int], Sequence[Any]]) -> List[str]:
        """The lines (with the terminal's escape codes) of what make(columns, lines) returns, cut to fit."""
        width, height = terminal_size(self.stream)
        cols, rows = max(10, width - 1), max(1, height - 1)
        self.console.size = (cols, rows)
        with self.console.capture() as cap:
            for item in make(cols, rows):
                self.console.print(item, crop=True, overflow="ellipsis", no_wrap=True)
        lines = cap.get().split("\n")[:-1][:rows]
        self._cells = [cell_len(_plain(line)) for line in lines]
        return lines

    def show(self, make: Callable[[int, int], Sequence[Any]]) -> None:
        self._lines = self.render(make)
        self._draw()
        if self._proxy is None and sys.stderr is self.stream:
            self._proxy = _StderrProxy(self)
            sys.stderr = self._proxy  # type: ignore[assignment]
        _set_live(self)

    def _draw(self) -> None:
        out = [self._up()] + ["\x1b[2K" + line + "\x1b[0m\n" for line in self._lines] + ["\x1b[J"]
        self.stream.write("".join(out))
        self.stream.flush()
        self._drawn_cells = list(self._cells)
        self.height = len(self._lines)

    def _rows_on_screen(self) -> int:
        """Rows the block takes now: a terminal made narrower since re-wraps its longer lines (tmux does)."""
        width = terminal_size(self.stream)[0]
        return sum(max(1, -(-cells // width)) for cells in self._drawn_cells[:self.height]) \
            + max(0, self.height - len(self._drawn_cells))

    def _up(self) -> str:
        if self.height:
            return f"\r\x1b[{self._rows_on_screen()}A"
        if self.midline:
            self.midline = False
            return "\n"
        return "\r"

    def clear(self) -> None:
        """Take the block off the terminal (the cursor goes where its first line was). Line by line: a terminal
        may keep a whole screen that is erased at once in its scrollback (tmux's scroll-on-clear)."""
        if self.height:
            self.stream.write("\r" + "\x1b[1A\x1b[2K" * self._rows_on_screen())
            self.stream.flush()
            self.height = 0

    def redraw(self) -> None:
        if self._lines and not self.height:
            self._draw()

    def close(self) -> None:
        """Leave the last block on the terminal as it is and stop drawing."""
        if self._proxy is not None and sys.stderr is self._proxy:
            sys.stderr = self.stream  # type: ignore[assignment]
        self._proxy = None
        self._lines = []
        self.height = 0
        _set_live(None)


_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _plain(line: str) -> str:
    return _ESCAPE.sub("", line)


def cell_len(text: str) -> int:
    from rich.cells import cell_len as cells

    return cells(text)


_live: List[LiveArea] = []


def _set_live(area: Optional[LiveArea]) -> None:
    _live[:] = [area] if area is not None else []


class _above_live_display:
    """Context: take the live display off `stream` for a write, and draw it again after."""

    def __init__(self, stream: Any) -> None:
        self.area = next((a for a in _live if a.stream is stream or stream is a._proxy), None)

    def __enter__(self) -> None:
        if self.area is not None:
            self.area.clear()

    def __exit__(self, *exc: Any) -> None:
        if self.area is not None:
            self.area.redraw()


class _StderrProxy:
    """sys.stderr while a live display is drawn: each write goes above the display."""

    def __init__(self, area: LiveArea) -> None:
        self._area = area

    def write(self, text: str) -> int:
        area = self._area
        area.clear()
        n = area.stream.write(text)
        area.stream.flush()
        if text:
            area.midline = not text.endswith("\n")
        if not area.midline:  # a line left open is finished first; the next refresh draws the block again
            area.redraw()
        return n

    def flush(self) -> None:
        self._area.stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._area.stream, name)
