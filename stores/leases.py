"""Who may write a store: one lease per writer, and one store-wide lock (reliability.md §7.6).

Many writers share a store; each holds only its own lease, ``meta/writers/<writer id>``, and
writes only its own segments and commit records. A second writer with the *same* id is refused
while the first lives (a Slurm task requeued while its first run still writes, say); a writer's
rerun after a crash takes the lease back. The store-wide lock (``.lock`` locally,
``meta/lock.json`` on an object store) is held for milliseconds while the store is created or
its key changes, and while maintenance (``verify --repair``, ``--gc``) runs.

Locally both are ``flock`` s, which the kernel releases on any exit (``kill -9`` included). On an
object store a lease is a document created with ``If-None-Match: *`` (s3fs ``mode="create"``),
refreshed by a heartbeat thread; it counts as dead once its heartbeat is older than ``ttl``, or
at once when its holder ran on this host and that process is gone. Where the server ignores
``If-None-Match`` (fsspec's ``memory://``, and S3-compatible servers without conditional writes),
two writers taking the same id at the same instant can both succeed: give each writer its own id.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import threading
import time
import uuid
from pathlib import Path

from .base import Files, StoreError, StoreLocked, WriteLock, dump_json, flock_held

log = logging.getLogger(__name__)

WRITERS = "meta/writers"
REMOTE_LOCK = "meta/lock.json"
WRITER_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
#: a remote lease not refreshed for this long is dead (its heartbeat thread refreshes at a third)
LEASE_TTL = 60.0


def check_writer_id(writer: str) -> str:
    if not isinstance(writer, str) or not WRITER_ID.match(writer):
        raise StoreError(f"writer id must be 1-64 letters, digits, '-' or '_', not {writer!r}")
    return writer


def default_writer_id() -> str:
    """A fresh id for a writer that was not given one: host, process and a random part."""
    host = re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname().split(".")[0])[:24] or "host"
    return f"{host}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def _proc_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (tells a reused pid apart), or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[19].decode()
    except (OSError, IndexError):
        return None


def _note(token: str) -> dict:
    now = time.time()
    return {"token": token, "pid": os.getpid(), "host": socket.gethostname(),
            "start": _proc_start(os.getpid()), "since": now, "heartbeat": now}


def holder_gone(note: dict) -> bool:
    """The holder ran on this host and its process no longer exists (or its pid was reused)."""
    if note.get("host") != socket.gethostname():
        return False
    pid = note.get("pid")
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass
    start = note.get("start")
    return start is not None and _proc_start(pid) not in (None, start)


def _remote_live(note: dict | None, ttl: float) -> bool:
    if not note:
        return False
    if holder_gone(note):
        return False
    return time.time() - float(note.get("heartbeat", 0)) < ttl


class _Heartbeat:
    """Refreshes a remote lease document every ``ttl / 3`` seconds while the lease is held."""

    def __init__(self, files: Files, rel: str, note: dict, ttl: float):
        self.files, self.rel, self.note, self.ttl = files, rel, note, ttl
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="clipcache-lease", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                cur = json.loads(self.files.get(self.rel) or b"null")
                if not cur or cur.get("token") != self.note["token"]:
                    self.lost = True
                    log.warning("lost the lease %s (another holder took it over)", self.rel)
                    return
                self.note["heartbeat"] = time.time()
                self.files.put(self.rel, dump_json(self.note))
            except (OSError, ValueError) as err:  # a network hiccup: the next beat tries again
                log.warning("could not refresh the lease %s: %s", self.rel, err)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)


def _read_note(files: Files, rel: str) -> dict | None:
    raw = files.get(rel)
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None  # not a lease document: nobody holds it


def _take_remote(files: Files, rel: str, ttl: float, refuse) -> tuple[dict, _Heartbeat]:
    """Create the lease document ``rel`` exclusively, or take it over from a dead holder.

    The exclusive create (``If-None-Match: *``) decides between processes where the server
    honours it. Where a server ignores the condition, the create overwrites, so the lease is also
    looked at before (a live holder refuses us) and read back after (a process that overwrote
    ours in the same instant wins; we refuse): what is left is two processes that both read
    back their own note in the instant between the other's look and create; the heartbeat of
    the overwritten one then finds a foreign token within ``ttl / 3`` and its next commit fails.
    """
    note = _note(uuid.uuid4().hex)
    for _ in range(5):
        cur = _read_note(files, rel)
        if cur is not None:
            if _remote_live(cur, ttl):
                refuse(cur)
            files.delete(rel)  # a dead holder's lease: remove it, then create ours exclusively
        if files.create(rel, dump_json(note)):
            back = _read_note(files, rel)
            if back is not None and back.get("token") == note["token"]:
                return note, _Heartbeat(files, rel, note, ttl)
            if back is not None and _remote_live(back, ttl):
                refuse(back)  # another process overwrote ours: the server ignored the condition
    raise StoreLocked(f"could not take the lease {files.path(rel)}: other writers keep taking it")


class WriterLease:
    """This writer's own lease; :meth:`acquire` refuses while another live process holds the id."""

    def __init__(self, files: Files, writer: str, what: str, ttl: float = LEASE_TTL):
        self.files, self.writer, self.what, self.ttl = files, check_writer_id(writer), what, ttl
        self._lock: WriteLock | None = None
        self._beat: _Heartbeat | None = None
        self._rel = f"{WRITERS}/{writer}.json"

    def _refuse(self, who: dict) -> None:
        raise StoreLocked(
            f"writer {self.writer} of {self.what} is already running (pid {who.get('pid')} on "
            f"{who.get('host')}); stop it first, or give this run another writer id"
        )

    def acquire(self) -> None:
        if self.files.local:
            lock = WriteLock(self.files.path(f"{WRITERS}/{self.writer}.lock"), {"writer": self.writer})
            lock.acquire(self.what, message=f"writer {self.writer} of {self.what} is already running "
                                            "({who}); stop it first, or give this run another writer id")
            self._lock = lock
        else:
            _, self._beat = _take_remote(self.files, self._rel, self.ttl, self._refuse)

    @property
    def held(self) -> bool:
        return self._lock is not None or (self._beat is not None and not self._beat.lost)

    def check(self) -> None:
        """Raise when a remote lease was taken over (this writer's heartbeat stopped too long)."""
        if self._beat is not None and self._beat.lost:
            raise StoreLocked(f"writer {self.writer} of {self.what} lost its lease to another process")

    def release(self) -> None:
        if self._lock is not None:
            self._lock.release()  # the lock file stays: deleting it would let two holders in
            self._lock = None
        if self._beat is not None:
            self._beat.stop()
            if not self._beat.lost:
                self.files.delete(self._rel)
            self._beat = None


def live_writers(files: Files, ttl: float = LEASE_TTL) -> dict[str, dict]:
    """Writer id -> holder note, for every writer whose lease is held right now."""
    out = {}
    for name in files.list(WRITERS):
        if files.local and name.endswith(".lock"):
            path = Path(files.path(f"{WRITERS}/{name}"))
            if flock_held(path):
                try:
                    out[name[:-5]] = json.loads(path.read_text() or "{}")
                except (OSError, ValueError):
                    out[name[:-5]] = {}
        elif not files.local and name.endswith(".json"):
            raw = files.get(f"{WRITERS}/{name}")
            note = json.loads(raw) if raw else None
            if _remote_live(note, ttl):
                out[name[:-5]] = note
    return out


class StoreLock:
    """The store-wide lock: creating the store, changing its key, maintenance. Writers take it
    for the moment they register; waiting ``wait`` seconds for a holder before refusing."""

    def __init__(self, files: Files, what: str, ttl: float = LEASE_TTL, local_path: Path | None = None):
        self.files, self.what, self.ttl = files, what, ttl
        self.local_path = local_path  # where the lock file is (default: ``.lock`` under the root)
        self._lock: WriteLock | None = None
        self._beat: _Heartbeat | None = None

    def _message(self, who: str) -> str:
        return (f"store {self.what} is locked by {who} (creating it, changing its key, or a "
                "verify --repair / --gc); try again when that is done")

    def acquire(self, wait: float = 30.0) -> None:
        if self.files.local:
            lock = WriteLock(self.local_path or Path(self.files.root) / ".lock")
            lock.acquire(self.what, wait=wait, message=self._message("{who}"))
            self._lock = lock
            return
        deadline = time.monotonic() + wait
        while True:
            try:
                _, self._beat = _take_remote(self.files, REMOTE_LOCK, self.ttl, self._busy)
                return
            except _Busy as busy:
                if time.monotonic() >= deadline:
                    who = busy.note
                    raise StoreLocked(self._message(f"pid {who.get('pid')} on {who.get('host')}")) from None
                time.sleep(0.05)

    @staticmethod
    def _busy(note: dict) -> None:
        raise _Busy(note)

    @property
    def held(self) -> bool:
        return self._lock is not None or self._beat is not None

    def release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None
        if self._beat is not None:
            self._beat.stop()
            if not self._beat.lost:
                self.files.delete(REMOTE_LOCK)
            self._beat = None


class _Busy(Exception):
    def __init__(self, note: dict):
        super().__init__("busy")
        self.note = note
