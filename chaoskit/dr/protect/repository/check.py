"""Check a repository: every object authenticates and every snapshot's data is reachable.

Without ``read_data`` the check reads config, keys, index files, snapshots and pack
headers; with it every chunk is decrypted and its keyed id recomputed.  Each problem
names the damaged object and the snapshots it affects, so an operator knows which
recovery points are still good.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field

from chaoskit.dr.protect.repository import keys as keyfiles
from chaoskit.dr.protect.repository.index import load_index
from chaoskit.dr.protect.repository.packs import BlobLocation, list_packs, pack_cipher, read_header
from chaoskit.dr.protect.repository.progress import Progress
from chaoskit.dr.protect.repository.repo import Repository, _config_body
from chaoskit.errors import IntegrityError


@dataclass
class Problem:
    kind: str  # config | key | index | snapshot | pack | chunk
    name: str
    message: str
    snapshots: list[str] = field(default_factory=list)  # short ids of affected snapshots

    def __str__(self) -> str:
        hit = f" [affects snapshots: {', '.join(self.snapshots)}]" if self.snapshots else ""
        return f"{self.kind} {self.name}: {self.message}{hit}"


@dataclass
class CheckReport:
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    snapshots: int = 0
    packs: int = 0
    chunks: int = 0
    bytes_read: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def affected_snapshots(self) -> set[str]:
        return {s for p in self.problems for s in p.snapshots}


def run_check(
    repo: Repository, *, read_data: bool = False, progress: Progress | None = None
) -> CheckReport:
    with repo.lock(exclusive=False):
        return _check(repo, read_data, progress or Progress("check"))


def _check(repo: Repository, read_data: bool, prog: Progress) -> CheckReport:
    report = CheckReport()
    problems = report.problems
    try:
        repo.cipher.verify_mac(
            _config_body(repo.config), str(repo.config.get("mac")), what="config"
        )
    except IntegrityError as e:
        problems.append(Problem("config", "config", str(e)))
    for key_id, problem in keyfiles.check_key_files(repo.keys_dir, repo.keyring.mac_key).items():
        problems.append(Problem("key", key_id, problem))

    raw_index = load_index(repo.index_dir, repo.keyring)
    index = repo.load_index() if raw_index.damaged else raw_index
    for name, problem in raw_index.damaged.items():
        problems.append(
            Problem(
                "index",
                name,
                problem + "; its packs were re-read from their headers (prune writes a new index)",
            )
        )
    snaps, damaged = repo.load_snapshots()
    report.snapshots = len(snaps) + len(damaged)
    for snap_id, problem in damaged.items():
        problems.append(Problem("snapshot", snap_id, problem, [snap_id[:8]]))
    users: dict[bytes, set[str]] = defaultdict(set)
    for snap in snaps:
        for chunk_id in snap.chunk_ids():
            users[chunk_id].add(snap.short_id)

    by_pack: dict[str, list[tuple[bytes, BlobLocation]]] = defaultdict(list)
    for chunk_id, loc in index.blobs.items():
        by_pack[loc.pack].append((chunk_id, loc))
    on_disk = list_packs(repo.data_dir)
    report.packs, report.chunks = len(by_pack), len(index.blobs)
    prog.total_bytes = sum(loc.length for loc in index.blobs.values()) if read_data else 0
    bad: set[bytes] = set()

    def affected(ids: list[bytes]) -> list[str]:
        return sorted({s for c in ids for s in users.get(c, ())})

    for pack, blobs in sorted(by_pack.items()):
        path = on_disk.get(pack)
        ids = [c for c, _ in blobs]
        if path is None:
            bad.update(ids)
            problems.append(Problem("pack", pack, "missing, but the index names it", affected(ids)))
            continue
        try:
            header = dict(read_header(path, pack, repo.keyring))
        except (OSError, IntegrityError) as e:  # every chunk it holds is in doubt
            bad.update(ids)
            problems.append(Problem("pack", pack, f"header unreadable: {e}", affected(ids)))
            header = None
        if header is not None:
            wrong = [c for c, loc in blobs if header.get(c) != loc]
            if wrong:
                bad.update(wrong)
                problems.append(
                    Problem(
                        "pack",
                        pack,
                        f"{len(wrong)} chunk(s) listed in the index "
                        "are not where the pack header says",
                        affected(wrong),
                    )
                )
        if read_data:
            damaged_ids = _read_pack(repo, pack, path, blobs, prog, report)
            if damaged_ids:
                bad.update(damaged_ids)
                first = damaged_ids[0].hex()[:16]
                problems.append(
                    Problem(
                        "pack",
                        pack,
                        f"{len(damaged_ids)} chunk(s) fail authentication (first: {first})",
                        affected(damaged_ids),
                    )
                )
    missing = [c for c in users if c not in index]
    if missing:
        problems.append(
            Problem(
                "chunk",
                missing[0].hex()[:16],
                f"{len(missing)} chunk(s) used by snapshots are in no index and no pack",
                affected(missing),
            )
        )
    orphans = set(on_disk) - set(by_pack)
    if orphans:
        report.notes.append(
            f"{len(orphans)} pack(s) not in the index (left by an interrupted "
            "backup or prune; prune removes them)"
        )
    prog.done()
    return report


def _read_pack(
    repo: Repository,
    pack: str,
    path: os.PathLike[str],
    blobs: list[tuple[bytes, BlobLocation]],
    prog: Progress,
    report: CheckReport,
) -> list[bytes]:
    """Decrypt every chunk of one pack and recompute its keyed id; return the bad ids."""
    damaged: list[bytes] = []
    with open(path, "rb", buffering=0) as f:
        fd = f.fileno()
        try:
            cipher = pack_cipher(fd, pack, repo.keyring)
        except IntegrityError:
            return [c for c, _ in blobs]
        for chunk_id, loc in sorted(blobs, key=lambda b: b[1].offset):
            sealed = os.pread(fd, loc.length, loc.offset)
            report.bytes_read += len(sealed)
            prog.add(len(sealed))
            try:
                data = cipher.open(sealed, chunk_id, what=f"chunk {chunk_id.hex()[:16]}")
            except IntegrityError:
                damaged.append(chunk_id)
                continue
            if len(data) != loc.raw_length or repo.cipher.chunk_id(data) != chunk_id:
                damaged.append(chunk_id)
    return damaged
