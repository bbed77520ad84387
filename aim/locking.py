"""One writer per folder: a lock file holding the writer's pid, host and command.

Banks (``aim compress-demos``), evaluation run folders (``aim icl-eval``) and training run folders
(``aim train ...``) are written by one process at a time. The lock is ``FOLDER/.aim.lock``, created
with ``O_CREAT | O_EXCL`` (atomic on local file systems). A second writer is refused with a message
naming the holder; a lock whose holder is gone (same host, no such pid) is stale and taken over. A
lock held from another host cannot be checked from here: the message says so and how to clear it.
With several processes of one run (``accelerate launch``), the main process holds the lock.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
from typing import Optional

from .errors import LockedError

logger = logging.getLogger(__name__)

LOCK_NAME = ".aim.lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True


class FolderLock:
    """``with FolderLock(folder, "bank"):`` ... (re-entrant within one process)."""

    _held: dict[str, int] = {}  # absolute lock path -> depth, for this process

    def __init__(self, folder: str, what: str):
        self.folder, self.what = folder, what
        self.path = os.path.abspath(os.path.join(folder, LOCK_NAME))

    def holder(self) -> Optional[dict]:
        """What the lock file says (pid, host, command, since), or None when there is none."""
        try:
            with open(self.path, encoding="utf-8") as f:
                return json.load(f)
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}  # being written, or damaged: treated as held by an unknown process

    def acquire(self) -> None:
        if self._held.get(self.path):
            self._held[self.path] += 1
            return
        os.makedirs(self.folder, exist_ok=True)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S"),
              "command": " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv))[:300]}
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._refuse_or_clear()
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            self._held[self.path] = 1
            return
        raise LockedError(f"{self.what} {self.folder} is locked and the lock could not be taken over: "
                          f"remove {self.path} if no aim process writes there")

    def _refuse_or_clear(self) -> None:
        held = self.holder()
        if held is None:
            return  # released meanwhile: try again
        pid, host = held.get("pid"), held.get("host")
        if isinstance(pid, int) and host == socket.gethostname() and not _alive(pid):
            logger.warning("%s %s: taking over the lock of process %d, which is gone", self.what, self.folder, pid)
            try:
                os.remove(self.path)
            except FileNotFoundError:
                pass
            return
        who = (f"process {pid} on {host}" + (f" ({held.get('command')}, since {held.get('since')})"
                                             if held.get("command") else "")) if pid else "another process"
        where = "" if host in (None, socket.gethostname()) else \
            f"; it runs on another host, so this one cannot tell whether it still does: remove {self.path} if not"
        raise LockedError(f"{self.what} {self.folder} is being written by {who}: wait for it to finish, or use "
                          f"another folder{where}")

    def release(self) -> None:
        depth = self._held.get(self.path, 0)
        if depth > 1:
            self._held[self.path] = depth - 1
            return
        self._held.pop(self.path, None)
        held = self.holder()
        if held and held.get("pid") == os.getpid():
            os.remove(self.path)

    def __enter__(self) -> "FolderLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
