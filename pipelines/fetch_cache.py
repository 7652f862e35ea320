"""The download cache: verified bytes and final failures per (source, ImageID), on disk.

    <cache_dir>/<folder>/<id[:2]>/<id>.img          the verified photo
    <cache_dir>/<folder>/<id[:2]>/<id>.failed.json  a final failure, with what produced it

The folder is the source's name (`original`, `thumbnail`, `cvdf`), or, for a source whose
URLs come from our flags rather than the row (`template`, `cvdf` with another base URL),
the name and a digest of those flags (`template-1a2b3c4d5e6f`): bytes fetched under one
`--url_template` are never served for another (`fetch.cache_folder`).

Files are written to `.tmp/<pid>-...` first, then renamed: a killed worker leaves only a
temp file, which never counts as cached and is removed by the next Cache over the folder.
What may be cached, and which settings a cached failure depends on, is the failure table's
business (schemas/failures.py); pipelines/fetch.py decides whether a record still holds.
"""
from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
import stat
import threading

log = logging.getLogger(__name__)

# Version 2 records carry the settings that produced a failure; version 1 records (none)
# cached 5xx answers as final, so they are not trusted.
CACHE_VERSION = 2


def cache_path(root: str, source: str, image_id: str) -> str:
    """Where a photo's cache entries live, less the suffix (.img, .failed.json)."""
    return os.path.join(root, source, image_id[:2], image_id)


def folder(source: str, settings: list) -> str:
    """A source's cache folder: its name, or with settings that make its URLs (a mirror's
    base URL or template) its name and their digest."""
    if not settings:
        return source
    return f"{source}-{hashlib.sha256(json.dumps(settings).encode()).hexdigest()[:12]}"


def cached_photo_paths(root: str, source: str, image_id: str) -> list[str]:
    """The photo files a source may have cached for an ImageID, under any of its folders
    (the plain one first, then the digested ones in name order)."""
    paths = [cache_path(root, source, image_id) + ".img"]
    paths += sorted(glob.glob(cache_path(root, glob.escape(source) + "-*", image_id) + ".img"))
    return [p for p in paths if os.path.isfile(p)]


def read_regular_file(path: str) -> bytes | None:
    """A file's bytes, or None if it is missing, unreadable or not a regular file: a FIFO
    or device put where a cache entry belongs would otherwise block the read forever
    (opened without blocking, then checked by fstat, so nothing can swap it in between)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        with os.fdopen(fd, "rb") as f:
            fd = -1
            return f.read()
    except OSError:
        return None
    finally:
        if fd >= 0:
            os.close(fd)


class Cache:
    """One cache folder; thread-safe (every write is a rename)."""

    def __init__(self, root: str, count=lambda key, n=1: None):
        self.root = root
        self._tmp = os.path.join(root, ".tmp")
        self._count = count
        self._warned = False
        remove_orphaned_temp_files(self._tmp)

    def path(self, source: str, image_id: str) -> str:
        return cache_path(self.root, source, image_id)

    def read_image(self, source: str, image_id: str) -> bytes | None:
        return read_regular_file(self.path(source, image_id) + ".img")

    def read_failure(self, source: str, image_id: str) -> dict | None:
        """A cached failure record of this cache's version and shape, or None (a damaged
        one is as good as none: the photo is asked for again, and the answer replaces it)."""
        data = read_regular_file(self.path(source, image_id) + ".failed.json")
        try:
            record = json.loads(data) if data is not None else None
        except ValueError:
            return None
        if not isinstance(record, dict) or record.get("version") != CACHE_VERSION:
            return None
        if not (isinstance(record.get("reason"), str) and isinstance(record.get("settings"), dict)
                and all(isinstance(record.get(k, ""), str) for k in ("detail", "url"))):
            return None
        return record

    def write_image(self, source: str, image_id: str, data: bytes) -> None:
        if self._write(source, image_id, ".img", data):
            try:  # the photo now supersedes an older failure
                os.remove(self.path(source, image_id) + ".failed.json")
            except OSError:
                pass

    def write_failure(self, source: str, image_id: str, record: dict) -> None:
        record = {**record, "version": CACHE_VERSION}
        self._write(source, image_id, ".failed.json",
                    json.dumps(record, sort_keys=True).encode())

    def _write(self, source: str, image_id: str, suffix: str, data: bytes) -> bool:
        """Write by rename; a cache that cannot be written (full, read-only) costs reruns
        their shortcut, never a photo: it is counted and logged once, not raised."""
        path = self.path(source, image_id) + suffix
        tmp = os.path.join(self._tmp, f"{os.getpid()}-{threading.get_ident()}-{image_id}{suffix}")
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            os.makedirs(self._tmp, exist_ok=True)
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
            return True
        except OSError as err:
            self._count("cache_write_errors")
            if not self._warned:
                self._warned = True
                log.warning("cannot write the download cache %s: %s", self.root, err)
            try:
                os.remove(tmp)
            except OSError:
                pass
            return False


def remove_orphaned_temp_files(tmp_dir: str) -> int:
    """Delete temp files of processes that no longer run (killed mid-write); returns how many."""
    removed = 0
    try:
        names = os.listdir(tmp_dir)
    except OSError:
        return 0
    for name in names:
        pid = name.split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            try:
                os.remove(os.path.join(tmp_dir, name))
                removed += 1
            except OSError:
                pass
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
