"""Commit records, their compacted index, and the in-memory index of a store's entries.

Layout (under a store's root; reliability.md §7.4, §7.6)::

    meta/segments/<group>/<segment>.json            a writer session's segment, registered before its
                                                    first record: {"writer", "created"}
    meta/log/<group>/<segment>/<seq:08d>.json       commit record <seq> of that segment, written last and
                                                    atomically: {"entries": {key: record}, "drops": [...]}
    meta/index/<group>/<segment>.<lo>-<hi>[.final].part
                                                    the entries of records lo..hi of one segment, packed
                                                    column by column (a checkpoint); ``.final``: the
                                                    segment's writer closed, no record follows hi
    meta/commits/<group>/<name>.json                layout 2's flat records (read, never written)

A segment (``<writer id>.<random>``) belongs to one writer session, which alone writes its records,
in order, so its records are numbered 0, 1, 2, ... without gaps. Every ``PART_EVERY`` records the
writer packs the last ones into a level-0 part, every ``PART_EVERY * PART_MERGE`` it merges those
into one level-1 part (then deletes the level-0 ones), and on close it writes a final part. A
reader lists the segments and the parts (two listings), loads for each segment the parts that
cover it from record 0 on, and reads single records only after the last part (at most
``PART_EVERY - 1`` per live or crashed segment). Parts are an optimisation: a missing part costs
only the time of reading its records one by one.

Entries: a key committed by two records (two writers, or a redo) resolves to the copy whose record
name (``<segment>/<seq>``) sorts first; the other copies are duplicates (``verify`` reports them,
``gc`` drops them). Extension entries (``"extends": true``) add arrays to the resolved copy, in
record-name order. A record's ``drops`` list ``[key, record name]`` pairs that no longer count
(an entry uncommitted by ``verify --repair``, a duplicate removed by ``gc``). Records are never
rewritten, so a part stays exact once written.
"""

from __future__ import annotations

import binascii
import json
import logging
import re
import struct
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np

from .base import Files, StoreError, StoreFormatError, dump_json

log = logging.getLogger(__name__)

LOG = "meta/log"
SEGMENTS = "meta/segments"
PARTS = "meta/index"
LEGACY = "meta/commits"
PART_EVERY = 32  # records per level-0 part
PART_MERGE = 32  # level-0 parts per level-1 part (1,024 records)

_PART = re.compile(r"^(?P<seg>.+)\.(?P<lo>\d{8})-(?P<hi>\d{8})(?P<final>\.final)?\.part$")
_MAGIC = b"CLIPCACHE-PART-1\n"
_HEAD = len(_MAGIC) + 8
_MISSING = object()  # a record field some rows of a part lack
_HEX64 = re.compile(rb"^[0-9a-f]{64}$")


def record_name(segment: str, seq: int) -> str:
    return f"{segment}/{seq:08d}"


def part_name(segment: str, lo: int, hi: int, final: bool) -> str:
    return f"{segment}.{lo:08d}-{hi:08d}{'.final' if final else ''}.part"


# ------------------------------------------------------------------------------------------ rows
@dataclass
class Rows:
    """Entries of some commit records, column by column (one row per entry copy).

    The records' other fields and each array's sha256 are loaded on first use only, one field
    or one array at a time: opening a store needs keys and locations, not hashes.
    """

    keys: np.ndarray  # [n] bytes
    rec: np.ndarray  # [n] int32 index into ``names``
    names: list[str]  # record names
    extends: np.ndarray  # [n] bool
    arrays: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]  # name -> (sig int16, path int32, row int64)
    sigs: list[tuple[tuple[int, ...], str]]  # (shape, dtype) per sig id
    paths: list[str]
    drops: list[tuple[str, str]] = field(default_factory=list)  # (key, record name)
    field_names: list[str] = field(default_factory=list)
    _fields: dict[str, list] = field(default_factory=dict)
    _field_loader: Callable[[str], list] | None = None
    _sha: dict[str, np.ndarray] = field(default_factory=dict)  # name -> [n, 32] uint8
    _sha_loader: Callable[[str], np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.keys)

    def field(self, name: str) -> list:
        """Values of record field ``name`` per row (``_MISSING`` where a row lacks it)."""
        if name not in self._fields:
            if name not in self.field_names:
                return [_MISSING] * len(self)
            self._fields[name] = self._field_loader(name)
        return self._fields[name]

    @property
    def fields(self) -> dict[str, list]:
        return {f: self.field(f) for f in self.field_names}

    def sha(self, name: str) -> np.ndarray:
        """sha256 of array ``name`` per row, ``[n, 32]`` uint8 (zeros where a row lacks it)."""
        if name not in self._sha:
            if name not in self.arrays:
                return np.zeros((len(self), 32), np.uint8)
            self._sha[name] = self._sha_loader(name)
        return self._sha[name]

    def take(self, idx: np.ndarray) -> "Rows":
        """The rows ``idx`` (everything loaded first: the result owns its columns)."""
        pos = idx.tolist()
        return Rows(self.keys[idx], self.rec[idx], self.names, self.extends[idx],
                    {n: (s[idx], p[idx], r[idx]) for n, (s, p, r) in self.arrays.items()},
                    self.sigs, self.paths, list(self.drops), list(self.field_names),
                    _fields={f: [self.field(f)[i] for i in pos] for f in self.field_names},
                    _sha={n: self.sha(n)[idx] for n in self.arrays})

    def record(self, i: int) -> dict:
        """Row ``i`` as the record a writer committed (fields, ``arrays``, ``loc``)."""
        out = {}
        for f in self.field_names:
            v = self.field(f)[i]
            if v is not _MISSING:
                out[f] = v
        arrays, loc = {}, {}
        for name, (sig, path, row) in self.arrays.items():
            if sig[i] < 0:
                continue
            shape, dtype = self.sigs[sig[i]]
            arrays[name] = {"shape": list(shape), "dtype": dtype, "sha256": self.sha(name)[i].tobytes().hex()}
            loc[name] = [self.paths[path[i]], int(row[i])]
        out["arrays"], out["loc"] = arrays, loc
        if self.extends[i]:
            out["extends"] = True
        return out


def _keys_array(keys: list[bytes]) -> np.ndarray:
    width = max((len(k) for k in keys), default=1) or 1
    return np.array(keys, dtype=f"S{width}")


def rows_from_docs(docs: Iterable[tuple[str, dict]]) -> Rows:
    """Rows of parsed commit records ``(record name, document)``."""
    keys, rec, names, ext, drops = [], [], [], [], []
    per_row: list[dict] = []
    sigs: dict[tuple, int] = {}
    paths: dict[str, int] = {}
    cols: dict[str, dict[int, tuple[int, int, int, bytes]]] = {}
    for name, doc in docs:
        r = len(names)
        names.append(name)
        for k, d in doc.get("drops", ()):
            drops.append((k, d))
        for key, entry in sorted(doc.get("entries", {}).items()):
            i = len(keys)
            keys.append(key.encode())
            rec.append(r)
            ext.append(bool(entry.get("extends")))
            loc = entry.get("loc", {})
            for aname, meta in entry.get("arrays", {}).items():
                sig = sigs.setdefault((tuple(meta["shape"]), meta["dtype"]), len(sigs))
                p, row = loc.get(aname, ["", -1])
                pid = paths.setdefault(str(p), len(paths))
                cols.setdefault(aname, {})[i] = (sig, pid, -1 if row is None else int(row),
                                                 bytes.fromhex(meta["sha256"]))
            per_row.append({f: v for f, v in entry.items() if f not in ("arrays", "loc", "extends")})
    n = len(keys)
    arrays, sha = {}, {}
    for aname, by_row in cols.items():
        sig = np.full(n, -1, np.int16)
        path = np.zeros(n, np.int32)
        row = np.zeros(n, np.int64)
        h = np.zeros((n, 32), np.uint8)
        for i, (s, p, r, digest) in by_row.items():
            sig[i], path[i], row[i] = s, p, r
            h[i] = np.frombuffer(digest, np.uint8)
        arrays[aname], sha[aname] = (sig, path, row), h
    field_names = sorted({f for d in per_row for f in d})
    fields = {f: [d.get(f, _MISSING) for d in per_row] for f in field_names}
    return Rows(_keys_array(keys), np.array(rec, np.int32), names, np.array(ext, bool), arrays,
                [s for s, _ in sorted(sigs.items(), key=lambda kv: kv[1])],
                [p for p, _ in sorted(paths.items(), key=lambda kv: kv[1])], drops, field_names,
                _fields=fields, _sha=sha)


def concat_rows(parts: list[Rows]) -> Rows:
    """One Rows of several (tables of names, sigs and paths merged). Fields and hashes stay
    lazy: the result loads them from the parts when asked."""
    parts = [p for p in parts if len(p) or p.drops]
    if not parts:
        return rows_from_docs([])
    names, sigs, paths = [], {}, {}
    keys, rec, ext = [], [], []
    arr_names = sorted({a for p in parts for a in p.arrays})
    field_names = sorted({f for p in parts for f in p.field_names})
    cols = {a: ([], [], []) for a in arr_names}
    drops = []
    width = max(p.keys.dtype.itemsize for p in parts)
    for p in parts:
        n = len(p)
        rec.append(p.rec + len(names))
        names.extend(p.names)
        keys.append(p.keys.astype(f"S{width}"))
        ext.append(p.extends)
        smap = np.array([sigs.setdefault(s, len(sigs)) for s in p.sigs] or [0], np.int16)
        pmap = np.array([paths.setdefault(x, len(paths)) for x in p.paths] or [0], np.int32)
        for a in arr_names:
            if a in p.arrays:
                s, pa, r = p.arrays[a]
                cols[a][0].append(np.where(s >= 0, smap[np.maximum(s, 0)], -1).astype(np.int16))
                cols[a][1].append(pmap[pa])
                cols[a][2].append(r)
            else:
                cols[a][0].append(np.full(n, -1, np.int16))
                cols[a][1].append(np.zeros(n, np.int32))
                cols[a][2].append(np.zeros(n, np.int64))
        drops.extend(p.drops)
    # the loaders keep only what loading needs (not the parts' index columns)
    sources = [_Source(len(p), p.field_names, p._fields, p._field_loader, p.arrays.keys(), p._sha, p._sha_loader)
               for p in parts]

    def load_field(name: str) -> list:
        out: list = []
        for src in sources:
            out.extend(src.field(name))
        return out

    def load_sha(name: str) -> np.ndarray:
        return np.concatenate([src.sha(name) for src in sources])

    return Rows(np.concatenate(keys), np.concatenate(rec).astype(np.int32), names, np.concatenate(ext),
                {a: tuple(np.concatenate(c[i]) for i in range(3)) for a, c in cols.items()},
                [s for s, _ in sorted(sigs.items(), key=lambda kv: kv[1])],
                [x for x, _ in sorted(paths.items(), key=lambda kv: kv[1])], drops, field_names,
                _field_loader=load_field, _sha_loader=load_sha)


class _Source:
    """What a concatenated Rows needs of one of its parts to load fields and hashes later."""

    def __init__(self, n, field_names, fields, field_loader, array_names, sha, sha_loader):
        self.n, self.field_names, self._fields, self._field_loader = n, set(field_names), fields, field_loader
        self.array_names, self._sha, self._sha_loader = set(array_names), sha, sha_loader

    def field(self, name: str) -> list:
        if name not in self.field_names:
            return [_MISSING] * self.n
        if name not in self._fields:
            self._fields[name] = self._field_loader(name)
        return self._fields[name]

    def sha(self, name: str) -> np.ndarray:
        if name not in self.array_names:
            return np.zeros((self.n, 32), np.uint8)
        if name not in self._sha:
            self._sha[name] = self._sha_loader(name)
        return self._sha[name]


# ------------------------------------------------------------------------------------- part files
def encode_part(rows: Rows, meta: dict) -> bytes:
    """A part file: magic, header length, JSON header, then raw sections: first what opening a
    store needs (keys and locations), then the record fields (JSON), then the sha256s."""
    order = np.lexsort((rows.rec, rows.extends, rows.keys))  # sorted runs merge fast on open
    keys = rows.keys[order]
    hexkeys = len(keys) > 0 and keys.dtype.itemsize == 64 and all(_HEX64.match(k) for k in keys.tolist())
    sections: list[tuple[str, bytes, str, list[int]]] = []
    if hexkeys:
        sections.append(("keys", binascii.unhexlify(keys.tobytes()), "hex32", [len(keys)]))
    else:
        sections.append(("keys", keys.tobytes(), keys.dtype.str, [len(keys)]))
    sections.append(("rec", rows.rec[order].astype("<i4").tobytes(), "<i4", [len(keys)]))
    sections.append(("extends", rows.extends[order].astype("u1").tobytes(), "|u1", [len(keys)]))
    for a, (s, p, r) in sorted(rows.arrays.items()):
        sections.append((f"sig:{a}", s[order].astype("<i2").tobytes(), "<i2", [len(keys)]))
        sections.append((f"path:{a}", p[order].astype("<i4").tobytes(), "<i4", [len(keys)]))
        sections.append((f"row:{a}", r[order].astype("<i8").tobytes(), "<i8", [len(keys)]))
    n_index = len(sections)
    fields = rows.fields
    for f in sorted(fields):
        vals = [fields[f][i] for i in order.tolist()]
        missing = [i for i, v in enumerate(vals) if v is _MISSING]
        body = {"values": [None if v is _MISSING else v for v in vals], "missing": missing}
        sections.append((f"field:{f}", json.dumps(body, separators=(",", ":")).encode(), "json", []))
    n_fields = len(sections) - n_index
    for a in sorted(rows.arrays):
        sections.append((f"sha:{a}", np.ascontiguousarray(rows.sha(a)[order]).tobytes(), "|u1", [len(keys), 32]))
    table, off = [], 0
    for name, data, dtype, shape in sections:
        table.append([name, off, len(data), dtype, shape])
        off += len(data)
    head = dump_json({**meta, "n": int(len(keys)), "names": rows.names, "sigs": [[list(s), d] for s, d in rows.sigs],
                      "paths": rows.paths, "arrays": sorted(rows.arrays), "fields": sorted(fields),
                      "drops": [list(d) for d in rows.drops], "sections": table,
                      "groups": {"index": [0, n_index], "fields": [n_index, n_index + n_fields]}})
    return b"".join([_MAGIC, struct.pack("<Q", len(head)), head, *(d for _, d, _, _ in sections)])


def _damaged(read, files: Files, rel: str):
    """``read()``, or None (logged) where the part's bytes are damaged: cut short, not JSON, bad sizes."""
    try:
        return read()
    except (StoreFormatError, ValueError, KeyError, TypeError, struct.error) as err:
        log.warning("index part %s is damaged (%s); reading the commit records it covers", files.path(rel), err)
        return None


class PartReader:
    """Reads a part file lazily: the header and the index sections at once (two reads), the
    fields and the sha256s on first use (one ranged read each)."""

    def __init__(self, files: Files, rel: str, first: bytes | None = None):
        self.files, self.rel = files, rel
        first = first if first is not None else files.get(rel, 0, 1 << 16)
        if first is None:
            raise FileNotFoundError(rel)
        if first[:len(_MAGIC)] != _MAGIC:
            raise StoreFormatError(f"{files.path(rel)} is not a clipcache index part")
        (hlen,) = struct.unpack("<Q", first[len(_MAGIC):_HEAD])
        head = first[_HEAD:_HEAD + hlen]
        if len(head) < hlen:
            more = files.get(rel, _HEAD + len(head), _HEAD + hlen)
            if more is None:
                raise FileNotFoundError(rel)
            head += more
        self.head = json.loads(head)
        self.order = [t[0] for t in self.head["sections"]]  # section names in file order
        self.table = {t[0]: t[1:] for t in self.head["sections"]}
        self.base = _HEAD + hlen
        self._have = first[self.base:]  # bytes after the header that came with the first read

    def _span(self, names: list[str]) -> tuple[int, int]:
        table = self.table
        return min(table[n][0] for n in names), max(table[n][0] + table[n][1] for n in names)

    def index_range(self) -> tuple[int, int] | None:
        """Where in the file the sections opening a store needs are: (start, end), or None when
        the first read brought them already."""
        i0, i1 = self.head["groups"]["index"]
        lo, hi = self._span(self.order[i0:i1])
        return None if hi <= len(self._have) else (self.base + lo, self.base + hi)

    def _range(self, names: list[str], blob: bytes | None = None) -> dict[str, bytes]:
        """The raw bytes of sections ``names`` (adjacent in the file), in one read (or from
        ``blob``, those bytes read already)."""
        table = self.table
        lo, hi = self._span(names)
        if blob is not None:
            pass
        elif hi <= len(self._have):
            blob = self._have[lo:hi]
        else:
            blob = self.files.get(self.rel, self.base + lo, self.base + hi)
            if blob is None or len(blob) != hi - lo:
                raise FileNotFoundError(self.rel)
        view = memoryview(blob)  # sections are views, not copies
        return {n: view[table[n][0] - lo:table[n][0] - lo + table[n][1]] for n in names}

    def _array(self, name: str, raw: bytes) -> np.ndarray:
        _, _, dtype, shape = self.table[name]
        if dtype == "hex32":
            return np.frombuffer(binascii.hexlify(raw), dtype="S64")  # (hexlify takes a memoryview)
        return np.frombuffer(raw, dtype=np.dtype(dtype)).reshape(shape)

    def rows(self, index: bytes | None = None) -> Rows:
        """The part's rows (``index``: the bytes of :meth:`index_range`, when read already)."""
        h = self.head
        i0, i1 = h["groups"]["index"]
        got = self._range(self.order[i0:i1], index)
        arrays = {a: (self._array(f"sig:{a}", got[f"sig:{a}"]), self._array(f"path:{a}", got[f"path:{a}"]),
                      self._array(f"row:{a}", got[f"row:{a}"])) for a in h["arrays"]}

        def field(name: str) -> list:
            body = json.loads(bytes(self._range([f"field:{name}"])[f"field:{name}"]))
            vals = body["values"]
            for i in body["missing"]:
                vals[i] = _MISSING
            return vals

        def sha(name: str) -> np.ndarray:
            return self._array(f"sha:{name}", self._range([f"sha:{name}"])[f"sha:{name}"])

        return Rows(self._array("keys", got["keys"]), self._array("rec", got["rec"]).astype(np.int32),
                    list(h["names"]), self._array("extends", got["extends"]).astype(bool), arrays,
                    [(tuple(s), d) for s, d in h["sigs"]], list(h["paths"]),
                    [tuple(d) for d in h["drops"]], list(h["fields"]), _field_loader=field, _sha_loader=sha)


# ------------------------------------------------------------------------------------- the index
class Resolved:
    """The visible entries of a group: one resolved copy per key, with extension arrays merged.

    Columns over the visible keys (sorted): the raw row of the winning copy, and per array name
    its shape/dtype (sig), segment array (path) and row, and the raw row whose sha256 it is.
    """

    def __init__(self, raw: Rows, drops: set[tuple[str, str]]):
        self.raw = raw
        n = len(raw)
        order = np.argsort(raw.keys, kind="stable")
        keys = raw.keys[order]
        alive = np.ones(n, bool)
        if drops:
            names = raw.names
            for key, name in drops:
                k = key.encode()
                lo, hi = np.searchsorted(keys, k, "left"), np.searchsorted(keys, k, "right")
                for j in range(lo, hi):
                    if names[raw.rec[order[j]]] == name:
                        alive[j] = False
        same = keys[1:] == keys[:-1] if n > 1 else np.zeros(0, bool)
        starts = np.flatnonzero(np.concatenate([[True], ~same])) if n else np.zeros(0, np.int64)
        ends = np.append(starts[1:], n)
        multi = np.flatnonzero(ends - starts > 1)
        winner = order[starts].copy()  # raw row of each group's winner (singletons: themselves)
        visible = alive[starts] & ~raw.extends[order[starts]]
        self.arrays: dict[str, list[np.ndarray]] = {}
        for a, (sig, path, row) in raw.arrays.items():
            self.arrays[a] = [sig[winner].copy(), path[winner].copy(), row[winner].copy(), winner.copy()]
        self.duplicates: list[tuple[str, str]] = []  # (key, record name) of copies that lose
        for g in multi.tolist():
            self._resolve_group(g, order[starts[g]:ends[g]], alive[starts[g]:ends[g]], winner, visible)
        self._order, self._sorted, self._alive = order, keys, alive
        self.keys = keys[starts][visible]
        self.row = winner[visible]
        for a in self.arrays:
            self.arrays[a] = [c[visible] for c in self.arrays[a]]
        self._list: list[str] | None = None

    def _resolve_group(self, g: int, rows: np.ndarray, alive: np.ndarray, winner: np.ndarray,
                       visible: np.ndarray) -> None:
        """Several copies of one key: the base copy of the first record name wins, extensions
        add their arrays over it in record-name order."""
        raw = self.raw
        live = [int(r) for r, ok in zip(rows.tolist(), alive.tolist()) if ok]
        name = {r: raw.names[raw.rec[r]] for r in live}
        bases = sorted((r for r in live if not raw.extends[r]), key=lambda r: name[r])
        exts = sorted((r for r in live if raw.extends[r]), key=lambda r: name[r])
        if not bases:
            visible[g] = False
            return
        win = bases[0]
        key = raw.keys[win].decode()
        self.duplicates += [(key, name[r]) for r in bases[1:]]
        winner[g] = win
        visible[g] = True
        for a, (sig, path, row) in raw.arrays.items():
            cols = self.arrays[a]
            src = win if sig[win] >= 0 else -1
            for r in exts:
                if sig[r] >= 0:
                    src = r
            if src < 0:
                cols[0][g] = -1
            else:
                cols[0][g], cols[1][g], cols[2][g], cols[3][g] = sig[src], path[src], row[src], src

    def __len__(self) -> int:
        return len(self.keys)

    def copies(self, key: str) -> list[str]:
        """Record names of every live copy of ``key`` (base and extension entries)."""
        k = key.encode()
        lo, hi = np.searchsorted(self._sorted, k, "left"), np.searchsorted(self._sorted, k, "right")
        return sorted({self.raw.names[self.raw.rec[self._order[j]]] for j in range(lo, hi) if self._alive[j]})

    def copies_in_segment(self, segment: str) -> list[tuple[str, str]]:
        """(key, record name) of every live copy with an array in ``segment``."""
        return self.copies_where(lambda p: p.startswith(f"{segment}/"))

    def copies_where(self, at: Callable[[str], bool]) -> list[tuple[str, str]]:
        """(key, record name) of every live copy with an array at a path ``at(path)`` accepts."""
        raw = self.raw
        ids = [i for i, p in enumerate(raw.paths) if at(p)]
        if not ids:
            return []
        hit = np.zeros(len(raw), bool)
        for sig, path, _row in raw.arrays.values():
            hit |= (sig >= 0) & np.isin(path, ids)
        alive = np.zeros(len(raw), bool)
        alive[self._order] = self._alive
        rows = np.flatnonzero(hit & alive)
        return sorted({(raw.keys[r].decode(), raw.names[raw.rec[r]]) for r in rows.tolist()})

    def key_list(self) -> list[str]:
        if self._list is None:  # numpy's bytes items drop the padding
            self._list = list(map(bytes.decode, self.keys.tolist()))
        return self._list

    def find(self, keys: list[str]) -> np.ndarray:
        """Positions of ``keys`` among the visible keys; -1 where absent."""
        if not len(self.keys):
            return np.full(len(keys), -1, np.int64)
        q = np.array([k.encode() for k in keys], dtype=f"S{max(self.keys.dtype.itemsize, 1)}")
        too_long = np.array([len(k.encode()) > self.keys.dtype.itemsize for k in keys], bool)
        pos = np.searchsorted(self.keys, q)
        pos = np.minimum(pos, len(self.keys) - 1)
        hit = (self.keys[pos] == q) & ~too_long
        return np.where(hit, pos, -1)

    def record(self, i: int) -> dict:
        raw = self.raw
        base = raw.record(int(self.row[i]))
        base.pop("extends", None)
        arrays, loc = {}, {}
        for a, (sig, path, row, src) in self.arrays.items():
            if sig[i] < 0:
                continue
            shape, dtype = raw.sigs[sig[i]]
            arrays[a] = {"shape": list(shape), "dtype": dtype, "sha256": raw.sha(a)[src[i]].tobytes().hex()}
            loc[a] = [raw.paths[path[i]], int(row[i])]
        base["arrays"], base["loc"] = arrays, loc
        return base

    def field(self, name: str) -> list:
        if name not in self.raw.field_names:
            return [None] * len(self)
        vals = self.raw.field(name)
        col = np.empty(len(vals), dtype=object)
        col[:] = vals
        out = col[self.row].tolist()
        return [None if v is _MISSING else v for v in out]


class GroupIndex:
    """Everything loaded of one group: raw rows (parts, records), drops, and the resolved view.

    Rows that arrive after a resolve (a writer's own commits, other writers' new records) are
    resolved again only when needed: a single-key lookup of a key they do not touch still uses
    the previous view, so a writer that reads one entry between its commits stays fast.
    """

    def __init__(self):
        self.batches: list[Rows] = []
        self.drops: set[tuple[str, str]] = set()
        self._resolved: Resolved | None = None
        self._stale: Resolved | None = None
        self._touched: set[str] = set()  # keys of rows added since _stale was resolved
        self.rows = 0

    def add(self, rows: Rows) -> None:
        if not (len(rows) or rows.drops):
            return
        self.batches.append(rows)
        self.drops.update(rows.drops)
        self.rows += len(rows)
        if self._resolved is not None:
            self._stale, self._touched = self._resolved, set()
        if self._stale is not None:
            self._touched.update(k.decode() for k in rows.keys.tolist())
            self._touched.update(k for k, _ in rows.drops)
        self._resolved = None

    @property
    def resolved(self) -> Resolved:
        if self._resolved is None:
            raw = self.batches[0] if len(self.batches) == 1 else concat_rows(self.batches)
            self.batches = [raw]
            self._resolved = Resolved(raw, self.drops)
            self._stale, self._touched = None, set()
        return self._resolved

    def lookup(self, key: str) -> dict | None:
        r = self._resolved
        if r is None and self._stale is not None and key not in self._touched:
            r = self._stale
        if r is None:
            r = self.resolved
        pos = int(r.find([key])[0])
        return None if pos < 0 else r.record(pos)


# ------------------------------------------------------------------------------------- the log
class CommitLog:
    """Reading and writing one group's commit records and parts on a store's :class:`Files`."""

    def __init__(self, files: Files, group: str):
        self.files, self.group = files, group
        self.next_seq: dict[str, int] = {}  # segment -> first record not loaded yet
        self.sealed: set[str] = set()
        self.legacy_loaded: set[str] = set()

    # --------------------------------------------------------------- reading
    def _parts(self) -> dict[str, list[tuple[int, int, bool, str]]]:
        out: dict[str, list] = {}
        for name in self.files.list(f"{PARTS}/{self.group}"):
            m = _PART.match(name)
            if m:
                out.setdefault(m["seg"], []).append((int(m["lo"]), int(m["hi"]), bool(m["final"]), name))
        return out

    def record_doc(self, segment: str, seq: int) -> dict | None:
        raw = self.files.get(f"{LOG}/{self.group}/{segment}/{seq:08d}.json")
        if raw is None:
            return None
        try:
            return json.loads(raw)
        except json.JSONDecodeError as err:  # records are written atomically: a foreign writer
            raise StoreFormatError(f"unreadable commit record {segment}/{seq}: {err}") from err

    def _plan(self) -> dict[str, tuple[list[tuple[tuple, int]], int, bool]]:
        """Per segment not sealed yet: the parts that cover it from the first record not loaded
        on (chosen by their names alone), where single records start, whether it is sealed."""
        segments = set(self.segments())
        parts = self._parts()
        plan = {}
        for seg in sorted(segments | set(parts)):
            if seg in self.sealed:
                continue
            nxt, chain, sealed = self.next_seq.get(seg, 0), [], False
            while True:
                cands = [p for p in parts.get(seg, ()) if p[0] <= nxt <= p[1] or (p[2] and p[0] == nxt)]
                if not cands:
                    break
                part = max(cands, key=lambda p: (p[1], p[2]))
                chain.append((part, nxt))
                nxt = part[1] + 1
                if part[2]:
                    sealed = True
                    break
            plan[seg] = (chain, nxt, sealed)
        return plan

    def _read_parts(self, rels: list[str]) -> list[Rows | None]:
        """Rows of the parts ``rels``: their headers in one round of reads, then their index
        sections in another (concurrent requests on an object store). None for a damaged part
        (cut short, bad bytes): the records it covers are read instead (they stay the truth)."""
        firsts = self.files.get_many([(rel, 0, 1 << 16) for rel in rels])
        if any(f is None for f in firsts):
            raise FileNotFoundError(rels[firsts.index(None)])
        readers = [_damaged(lambda: PartReader(self.files, rel, first), self.files, rel)
                   for rel, first in zip(rels, firsts)]
        ranges = [(i, _damaged(r.index_range, self.files, rels[i]) if r else None) for i, r in enumerate(readers)]
        need = [(i, span) for i, span in ranges if span is not None]
        blobs = dict(zip((i for i, _ in need), self.files.get_many([(rels[i], a, b) for i, (a, b) in need])))
        if any(b is None for b in blobs.values()):
            raise FileNotFoundError("an index part")
        return [_damaged(lambda: r.rows(blobs.get(i)), self.files, rels[i]) if r else None
                for i, r in enumerate(readers)]

    def scan(self) -> list[Rows]:
        """Rows committed since the last scan, by any writer."""
        for attempt in range(3):
            plan = self._plan()
            wanted = [(seg, part, start) for seg, (chain, _n, _s) in plan.items() for part, start in chain]
            try:
                got = self._read_parts([f"{PARTS}/{self.group}/{part[3]}" for _seg, part, _s in wanted])
                break
            except FileNotFoundError:  # merged into a bigger part and deleted meanwhile: list again
                if attempt == 2:
                    raise StoreError(f"index parts of {self.group} keep vanishing while read") from None
        out: list[Rows] = []
        for (seg, part, start), rows in zip(wanted, got):
            if rows is None:  # a damaged part: the records it covers
                docs = [(record_name(seg, q), self.record_doc(seg, q)) for q in range(start, part[1] + 1)]
                if any(d is None for _, d in docs):
                    raise StoreFormatError(f"{self.files.path(f'{PARTS}/{self.group}/{part[3]}')} is damaged and the "
                                           "commit records it covers are gone; what it indexed cannot be read")
                out.append(rows_from_docs(docs))
                continue
            if part[0] < start:  # records already loaded one by one
                seqs = np.array([int(n.rsplit("/", 1)[1]) for n in rows.names] or [0])
                rows = rows.take(np.flatnonzero(seqs[rows.rec] >= start))
            out.append(rows)
        for seg, (_chain, nxt, sealed) in plan.items():
            if sealed:
                self.sealed.add(seg)
            else:
                docs = []
                while (doc := self.record_doc(seg, nxt)) is not None:
                    docs.append((record_name(seg, nxt), doc))
                    nxt += 1
                if docs:
                    out.append(rows_from_docs(docs))
            self.next_seq[seg] = nxt
        legacy = [n for n in self.files.list(f"{LEGACY}/{self.group}")
                  if n.endswith(".json") and n not in self.legacy_loaded]
        if legacy:
            docs = []
            for n in legacy:
                raw = self.files.get(f"{LEGACY}/{self.group}/{n}")
                self.legacy_loaded.add(n)
                if raw is not None:
                    docs.append((n[:-5], json.loads(raw)))
            out.append(rows_from_docs(docs))
        return out

    def all_docs(self) -> Iterable[tuple[str, dict]]:
        """Every commit record of the group, one by one (for tools: gc, soak checks)."""
        for seg in self.files.list(f"{LOG}/{self.group}"):
            for name in self.files.list(f"{LOG}/{self.group}/{seg}"):
                if name.endswith(".json"):
                    doc = self.record_doc(seg, int(name[:-5]))
                    if doc is not None:
                        yield record_name(seg, int(name[:-5])), doc
        for n in self.files.list(f"{LEGACY}/{self.group}"):
            if n.endswith(".json"):
                raw = self.files.get(f"{LEGACY}/{self.group}/{n}")
                if raw is not None:
                    yield n[:-5], json.loads(raw)

    def segments(self) -> list[str]:
        """Segments with records: registered ones (object stores), the log's folders (local)."""
        found = {n[:-5] for n in self.files.list(f"{SEGMENTS}/{self.group}") if n.endswith(".json")}
        if self.files.local:
            found.update(n for n in self.files.list(f"{LOG}/{self.group}") if not n.endswith(".json"))
        return sorted(found)


class SegmentWriter:
    """One writer session's records of one group: numbered, registered, compacted into parts."""

    def __init__(self, log: CommitLog, segment: str, writer: str):
        self.log, self.segment, self.writer = log, segment, writer
        self.seq = 0
        self.window: list[tuple[str, dict]] = []  # records since the last part: at most PART_EVERY
        self.part_lo = 0  # first record of the window
        self.level0: list[tuple[int, int]] = []  # level-0 parts since the last level-1 part

    @property
    def files(self) -> Files:
        return self.log.files

    def commit(self, entries: dict[str, dict], drops: list[tuple[str, str]] = ()) -> str:
        """Write the next record (the commit point of its entries); returns its name."""
        group = self.log.group
        if self.seq == 0 and not self.files.local:  # registered before its first record: readers
            # of an object store find segments by one short listing (a local store's readers list
            # the log's folders, as cheap, and need no registry)
            self.files.put(f"{SEGMENTS}/{group}/{self.segment}.json",
                           dump_json({"writer": self.writer, "created": time.time()}))
        doc = {"segment": self.segment, "seq": self.seq, "writer": self.writer, "entries": entries}
        if drops:
            doc["drops"] = [list(d) for d in drops]
        rel, data = f"{LOG}/{group}/{self.segment}/{self.seq:08d}.json", dump_json(doc)
        if self.files.local:
            self.files.put(rel, data)  # temp file, fsync, rename: only this writer names this segment
        elif not self.files.create(rel, data):  # If-None-Match: * where the server honours it
            raise StoreError(f"commit record {rel} exists already: another process writes segment {self.segment}")
        name = record_name(self.segment, self.seq)
        self.window.append((name, doc))
        self.seq += 1
        if len(self.window) >= PART_EVERY:
            self._compact()
        return name

    def _write_part(self, rows: Rows, lo: int, hi: int, final: bool) -> None:
        meta = {"group": self.log.group, "segment": self.segment, "lo": lo, "hi": hi, "final": final}
        self.files.put(f"{PARTS}/{self.log.group}/{part_name(self.segment, lo, hi, final)}", encode_part(rows, meta))

    def _compact(self, final: bool = False) -> None:
        lo, hi = self.part_lo, self.seq - 1
        if self.window or final:
            self._write_part(rows_from_docs(self.window), lo, hi, final)
            if not final:
                self.level0.append((lo, hi))
            self.window, self.part_lo = [], self.seq
        if len(self.level0) >= PART_MERGE:
            self._merge_level0()

    def _merge_level0(self) -> None:
        """Merge the level-0 parts into one level-1 part, then delete them (readers that listed
        them first and find them gone list the parts again)."""
        group = self.log.group
        rows = []
        for lo, hi in self.level0:
            rows.append(PartReader(self.files, f"{PARTS}/{group}/{part_name(self.segment, lo, hi, False)}").rows())
        lo, hi = self.level0[0][0], self.level0[-1][1]
        self._write_part(concat_rows(rows), lo, hi, False)
        for a, b in self.level0:
            self.files.delete(f"{PARTS}/{group}/{part_name(self.segment, a, b, False)}")
        self.level0 = []

    def close(self) -> None:
        """Seal the segment: a final part covering the records since the last part."""
        if self.seq:
            self._compact(final=True)


def new_segment(writer: str) -> str:
    return f"{writer}.{uuid.uuid4().hex[:12]}"


def segment_writer(segment: str) -> str | None:
    """The writer id in a segment name (None for layout 2's anonymous segments)."""
    return segment.rsplit(".", 1)[0] if "." in segment else None
