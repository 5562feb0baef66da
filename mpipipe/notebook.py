"""Whether this process is a Jupyter kernel, and which notebook it runs: what names a notebook's job.

A script's job id comes from the script and its arguments; a kernel's own argv names neither the notebook nor
anything of the user's, so a notebook's job id comes from the notebook's file, taken from the first of these
that the kernel has (nothing here asks a Jupyter server over the network):

1. `__vsc_ipynb_file__` in the kernel's namespace: VS Code puts the notebook's path there;
2. `__session__` in the kernel's namespace, or the JPY_SESSION_NAME environment variable: jupyter-server 2 and
   later (JupyterLab 4, Notebook 7) start the kernel with the notebook's path there, and ipykernel copies it;
3. `jupyter_session` in the kernel's connection file, where jupyter_client writes that same path.

The id is then `<notebook name>-<8 hex digits of its path>`: the same notebook resumes its job after a kernel
restart, and two notebooks of one name in different folders do not share one. When the kernel cannot tell
(an older server, another front end), the job is this kernel session's, `notebook-<8 hex digits of its
connection file>`; to resume it from another session, give it by name: `mpipipe.init(job_id=...)`.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from typing import Any, Mapping, Optional, Tuple

SESSION_ENV = "JPY_SESSION_NAME"


def kernel_shell() -> Optional[Any]:
    """The IPython shell of this process if it is a Jupyter kernel (a terminal IPython is not), else None.
    IPython is looked up among the loaded modules only: importing it here would cost every script."""
    ipython = sys.modules.get("IPython")
    get = getattr(ipython, "get_ipython", None)
    shell = get() if callable(get) else None
    return shell if shell is not None and getattr(shell, "kernel", None) is not None else None


def in_notebook() -> bool:
    return kernel_shell() is not None


def notebook_path(namespace: Mapping[str, Any], environ: Mapping[str, str],
                  connection_file: Optional[str]) -> Optional[str]:
    """The notebook's path by the rule in the module's docstring, or None."""
    for value in (namespace.get("__vsc_ipynb_file__"), namespace.get("__session__"), environ.get(SESSION_ENV)):
        if isinstance(value, str) and value.strip():
            return value.strip()
    if connection_file:
        try:
            with open(connection_file) as f:
                value = json.load(f).get("jupyter_session")
        except (OSError, ValueError, AttributeError):
            value = None
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def notebook_job_id(namespace: Mapping[str, Any], environ: Mapping[str, str],
                    connection_file: Optional[str]) -> Tuple[str, bool]:
    """(job id, whether it names the notebook) for a kernel whose namespace, environment and connection file
    these are."""
    path = notebook_path(namespace, environ, connection_file)
    if path is not None:
        name = re.split(r"[\\/]", path.rstrip("\\/"))[-1]
        stem = re.sub(r"\.ipynb$", "", name, flags=re.IGNORECASE)
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._-") or "notebook"
        where = path if re.match(r"^([A-Za-z]:)?[\\/]", path) else os.path.abspath(path)
        return f"{stem}-{_digest(where)}", True
    session = os.path.basename(connection_file) if connection_file else f"pid-{os.getpid()}"
    return f"notebook-{_digest(session)}", False


def current_job_id() -> Optional[Tuple[str, bool]]:
    """notebook_job_id() of this kernel, or None when this process is no Jupyter kernel."""
    shell = kernel_shell()
    if shell is None:
        return None
    namespace = getattr(shell, "user_ns", None)
    return notebook_job_id(namespace if isinstance(namespace, Mapping) else {}, os.environ, _connection_file())


def _connection_file() -> Optional[str]:
    """The kernel's connection file: ipykernel's application knows it; its argv (`-f FILE`) says it too."""
    app_module = sys.modules.get("ipykernel.kernelapp")
    app_class = getattr(app_module, "IPKernelApp", None)
    try:
        if app_class is not None and app_class.initialized():
            found = getattr(app_class.instance(), "abs_connection_file", None)
            if isinstance(found, str) and found:
                return found
    except Exception:  # noqa: BLE001 - a kernel of another version: fall back on its argv
        pass
    argv = sys.argv[1:]
    for i, arg in enumerate(argv):
        if arg == "-f" and i + 1 < len(argv):
            return argv[i + 1]
        for prefix in ("--f=", "--IPKernelApp.connection_file="):
            if arg.startswith(prefix):
                return arg[len(prefix):]
    return None


def _digest(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8", "surrogateescape")).hexdigest()[:8]
