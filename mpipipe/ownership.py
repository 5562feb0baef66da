"""Who may have written a file before mpipipe trusts it.

A job directory, a result cache or a refs folder holds pickles and journals that
mpipipe loads back as code and as facts. Anything another user could have
planted there would run as the current user. So: folders mpipipe makes are
owner-only (0700, files 0600); a folder that exists but belongs to someone else,
or that others may write to, is refused; a file is unpickled only when the
current user owns it and nobody else may write it or its folder.
"""
from __future__ import annotations

import os
import stat

from mpipipe.atomic import PRIVATE_FILE, atomic_write
from mpipipe.errors import JournalError

PRIVATE_DIR = 0o700


def _who(uid: int) -> str:
    try:
        import pwd

        return pwd.getpwuid(uid).pw_name
    except (ImportError, KeyError):
        return f"uid {uid}"


def _problem(st: os.stat_result, kind: str) -> str:
    """Why a folder or file with this stat cannot be trusted, or '' if it can."""
    me = os.geteuid()
    if st.st_uid != me:
        return f"the {kind} belongs to {_who(st.st_uid)}, not to {_who(me)}"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"the {kind} is writable by {'others' if st.st_mode & stat.S_IWOTH else 'its group'} " \
               f"(mode {stat.S_IMODE(st.st_mode):04o})"
    return ""


def check_private_dir(path: str, what: str) -> None:
    """Refuse a folder that is not the current user's alone to write (`what` names it in the message)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return
    except OSError as e:
        raise JournalError(f"{what} {path} cannot be read ({e.strerror}); check its permissions") from None
    if not stat.S_ISDIR(st.st_mode):
        raise JournalError(f"{what} {path} is not a folder; remove it or choose another path")
    why = _problem(st, "folder")
    if why:
        raise JournalError(f"{what} {path} is not safe to use: {why}; "
                           f"use a folder of your own (chmod go-w, or another path)")


def make_private_dir(path: str, what: str) -> str:
    """Create `path` (and missing parents) owner-only, or check the existing one is safe; returns `path`."""
    try:
        os.makedirs(path, mode=PRIVATE_DIR, exist_ok=True)
    except OSError as e:
        raise JournalError(f"{what} {path} cannot be created ({e.strerror}); choose a path you can write") from None
    check_private_dir(path, what)
    return path


def is_trusted_file(path: str) -> bool:
    """True when the current user owns `path` and its folder, and no one else may write either."""
    try:
        st = os.stat(path)
        parent = os.stat(os.path.dirname(os.path.abspath(path)))
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and not _problem(st, "file") and not _problem(parent, "folder")


def check_trusted_file(path: str, what: str) -> None:
    """Refuse to load `path` (a pickle, a journal) unless only the current user can have written it."""
    try:
        st = os.stat(path)
        parent_path = os.path.dirname(os.path.abspath(path))
        parent = os.stat(parent_path)
    except OSError as e:
        raise JournalError(f"{what} {path} cannot be read ({e.strerror})") from None
    why = _problem(st, "file") or _problem(parent, "folder")
    if why:
        raise JournalError(f"{what} {path} is not loaded: {why}; only files that you alone can write are trusted")


def make_owner_only_dirs(path: str) -> None:
    """os.makedirs(path, exist_ok=True), with every folder it makes owner-only (os.makedirs gives the parents
    it makes the umask's mode). No check of folders that exist: for paths inside a folder already checked."""
    try:
        os.mkdir(path, PRIVATE_DIR)
    except FileExistsError:
        return
    except FileNotFoundError:
        parent = os.path.dirname(os.path.abspath(path))
        if parent == os.path.abspath(path):
            raise
        make_owner_only_dirs(parent)
        try:
            os.mkdir(path, PRIVATE_DIR)
        except FileExistsError:
            pass  # made by another process meanwhile


def make_private_tree(path: str, what: str) -> str:
    """Like make_private_dir, but every folder it has to create on the way is owner-only too. A folder that
    cannot be made raises the OSError, for the caller to say what to do; an existing one that is not safe
    raises JournalError."""
    make_owner_only_dirs(path)
    check_private_dir(path, what)
    return path


def write_private_file(path: str, data: bytes, mode: int = PRIVATE_FILE) -> None:
    """Write `path` whole or not at all, readable by its owner only (see mpipipe.atomic)."""
    atomic_write(path, data, mode)
