"""``clipcache verify``: re-hash every committed entry against its commit record.

A bad entry (data lost or replaced under a record) can be uncommitted with ``repair`` so that
re-running ``extract`` redoes it; ``gc`` removes leftovers of interrupted writes and the losing
copies of videos that two writers committed both (readers already take one copy by a fixed
rule). Both run beside live writers and leave those writers' work alone.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from clipcache.stores import open_store


@dataclass
class VerifyReport:
    checked: int = 0
    ok: int = 0
    bad: list[str] = field(default_factory=list)  # "group/key"
    repaired: int = 0
    removed: int = 0
    duplicates: list[str] = field(default_factory=list)  # "group/key record": copies that lost

    def line(self) -> str:
        return (f"checked={self.checked} ok={self.ok} bad={len(self.bad)}"
                + (f" duplicates={len(self.duplicates)}" if self.duplicates else "")
                + (f" repaired={self.repaired}" if self.repaired else "")
                + (f" removed={self.removed}" if self.removed else ""))

    def to_dict(self) -> dict:
        return asdict(self)


def verify_store(path: str, repair: bool = False, gc: bool = False) -> VerifyReport:
    rep = VerifyReport()
    with open_store(path, "a" if (repair or gc) else "r") as store:
        for group in ("videos", "text"):
            checked, bad = store.verify(group, repair=repair)
            rep.checked += checked
            rep.ok += checked - len(bad)
            rep.bad += [f"{group}/{k}" for k in bad]
            rep.repaired += len(bad) if repair else 0
            rep.duplicates += [f"{group}/{k} {rec}" for k, rec in store.duplicates(group)]
        if gc and hasattr(store, "gc"):
            rep.removed = store.gc()
        if repair and rep.repaired:
            store.finalize()
    return rep
