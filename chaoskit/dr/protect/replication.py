"""Replication of the backup repository to the DR site, and the journal of its outages.

The store guard writes recovery points into the local repository; the replicator ships
every new repository file to the DR site (:mod:`chaoskit.dr.protect.site`) over the network —
in the reference stack through the ``dr-site`` proxy, where network faults act.  Order
matters: config and keys, then data packs and index files, then snapshot files, so a
snapshot reaches the DR site only after everything it needs.  Each snapshot shipped is
journaled as ``backup.replicated`` with its recovery point's creation time and
``site_newest_created``, the creation time of the newest recovery point the DR site
holds; the DR site's RPO at any moment is the age of that one (see report.metrics).

Each pass starts with a health probe.  After ``failures_to_alert`` failed passes in a
row the outage is journaled (``detected``, signal ``replication``) and recovery points
queue in the local repository (``recovery.started`` action ``queue``, background).
When the DR site answers again the backlog is shipped (``recovery.started`` action
``resume``); once nothing is pending, ``recovered`` and ``steady_state.ok`` (phase
``recovery``, service ``dr-site``) close the outage.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import threading
from collections.abc import Callable
from typing import Any, Protocol

from chaoskit.background import BackgroundLoop
from chaoskit.dr.protect.repository.repo import Repository
from chaoskit.dr.protect.repository.snapshots import SnapshotHeader, load_header, snapshot_ids
from chaoskit.dr.protect.site import FILES, repository_files
from chaoskit.errors import ChaosKitError, ReplicationError

SERVICE = "dr-site"
_ORDER = ("config", "keys/", "data/", "index/", "snapshots/", "audit/")


def _rank(path: str) -> int:
    return next(i for i, prefix in enumerate(_ORDER) if path.startswith(prefix))


class Recorder(Protocol):
    """Where events go: a :class:`~chaoskit.journal.Journal`, or the command line's printer."""

    def record(self, event: str, **fields: Any) -> Any: ...


class SiteClient:
    """HTTP to a DR site; every failure is a ReplicationError naming the request.

    *probe_timeout* bounds the health probe; *timeout* bounds each wait on the socket
    during an upload (not the whole upload): a link that moves no byte for that long
    counts as broken, so an upload caught by a partition fails instead of hanging.
    """

    def __init__(
        self,
        endpoint: tuple[str, int] | Callable[[], tuple[str, int]],
        token: bytes,
        *,
        probe_timeout: float = 0.5,
        timeout: float = 2.0,
        tls_pin: str | None = None,
    ) -> None:
        """*tls_pin*: speak HTTPS and require the site's certificate to have this
        fingerprint (``sha256:<hex>``, from ``chaoskit backup site cert``)."""
        self._endpoint = endpoint
        self.tls_pin = tls_pin
        self.token = token
        self.probe_timeout = probe_timeout
        self.timeout = timeout

    def _request(
        self, method: str, path: str, body: bytes | None = None, *, timeout: float | None = None,
        headers: dict[str, str] | None = None,
    ) -> bytes:  # fmt: skip
        endpoint = self._endpoint() if callable(self._endpoint) else self._endpoint
        where = f"DR site {endpoint[0]}:{endpoint[1]}: {method} {path}"
        wait = timeout or self.timeout
        if self.tls_pin is None:
            conn = http.client.HTTPConnection(*endpoint, timeout=wait)
        else:
            from chaoskit.dr.protect.site_tls import PinnedHTTPSConnection

            conn = PinnedHTTPSConnection(*endpoint, self.tls_pin, timeout=wait)
        try:
            conn.request(method, path, body=body, headers={
                "Authorization": f"Bearer {self.token.decode()}", **(headers or {})})  # fmt: skip
            answer = conn.getresponse()
            data = answer.read()
        except (OSError, http.client.HTTPException) as e:
            raise ReplicationError(f"{where} failed: {e or type(e).__name__}") from e
        finally:
            conn.close()
        if answer.status >= 300:
            detail = data[:200].decode(errors="replace")
            raise ReplicationError(f"{where} answered {answer.status}: {detail}")
        return data

    def health(self) -> None:
        self._request("GET", "/health", timeout=self.probe_timeout)

    def list(self) -> set[str]:
        return set(json.loads(self._request("GET", FILES)))

    def witness(self) -> dict[str, Any]:
        """The site's signed checkpoint of the audit log it holds."""
        return dict(json.loads(self._request("GET", "/audit/witness")))

    def get(self, path: str) -> bytes:
        """One repository file (a pack may be 16 MiB: a longer wait than a probe's)."""
        return self._request("GET", f"{FILES}/{path}", timeout=max(self.timeout, 30.0))

    def put(self, path: str, data: bytes) -> None:
        digest = hashlib.sha256(data).hexdigest()
        self._request("PUT", f"{FILES}/{path}", data, headers={"X-Content-SHA256": digest})


class Replicator(BackgroundLoop):
    """Ships the local repository to the DR site in the background, journaling outages."""

    thread_name = "chaoskit-replicator"

    def __init__(
        self,
        repo: Repository,
        site: SiteClient,
        journal: Recorder,
        *,
        interval: float = 0.25,
        failures_to_alert: int = 2,
        repository_lock: threading.Lock | None = None,
    ) -> None:
        """*repository_lock*: held for each pass, and by a store guard that replaces the
        repository with the DR site's copy (no pass ships from the old one meanwhile)."""
        super().__init__()
        self.repository_lock = repository_lock or threading.Lock()
        self.repo = repo
        self.site = site
        self.journal = journal
        self.interval = interval
        self.failures_to_alert = failures_to_alert
        self.remote: set[str] | None = None
        """What the DR site holds (listed once, then kept up to date by our uploads)."""
        self.newest_created: float | None = None
        """Creation time of the newest recovery point the DR site holds (None: unknown)."""
        self.failures = 0
        self.in_outage = False
        self._resumed = False

    def pending(self) -> list[str]:
        """Snapshot ids in the local repository that the DR site does not hold yet."""
        remote = self.remote or set()
        return [i for i in snapshot_ids(self.repo.snap_dir) if f"snapshots/{i}" not in remote]

    def sync_once(self) -> int:
        """One pass: probe, then ship what is missing; returns the number of files shipped."""
        with self.repository_lock:
            return self._sync()

    def _sync(self) -> int:
        self.site.health()
        if self.in_outage and not self._resumed:
            self._resumed = True
            self.journal.record("recovery.started", action="resume", service=SERVICE,
                                pending=len(self.pending()))  # fmt: skip
        if self.remote is None:
            self.remote = self.site.list()
            for path in self.remote:
                if path.startswith("snapshots/"):
                    self._created(path.removeprefix("snapshots/"))
        snapshots = [f"snapshots/{i}" for i in snapshot_ids(self.repo.snap_dir)]
        # listed after the snapshots: whatever those snapshots need is already written
        needed = [p for p in repository_files(self.repo.root) if not p.startswith("snapshots/")]
        shipped = 0
        for path in sorted(needed, key=_rank) + snapshots:
            if path in self.remote:
                continue
            try:
                data = (self.repo.root / path).read_bytes()
            except FileNotFoundError:
                continue  # pruned meanwhile
            self.site.put(path, data)
            self.remote.add(path)
            shipped += 1
            if path.startswith("snapshots/"):
                self._record_replicated(path.removeprefix("snapshots/"))
        return shipped

    def _created(self, snap_id: str) -> SnapshotHeader | None:
        """The local snapshot *snap_id*, now at the DR site: its time may be the newest
        (its header is enough, so a writer key replicates)."""
        try:
            snap = load_header(self.repo.snap_dir, self.repo.keyring, snap_id)
        except ChaosKitError:  # shipped as it is; `check` at either site names it
            return None
        if self.newest_created is None or snap.time > self.newest_created:
            self.newest_created = snap.time
        return snap

    def _record_replicated(self, snap_id: str) -> None:
        snap = self._created(snap_id)
        self.journal.record(
            "backup.replicated", snapshot=snap_id, site_newest_created=self.newest_created,
            **({} if snap is None else {"wall_created": snap.time, "step": snap.checkpoint_step,
                                        "tags": list(snap.tags)}),
        )  # fmt: skip

    def poll_once(self) -> None:
        """A pass with outage accounting: alert after repeated failures, close when caught up."""
        try:
            self.sync_once()
        except (ChaosKitError, OSError) as e:
            self.failures += 1
            if self.failures >= self.failures_to_alert and not self.in_outage:
                self.in_outage, self._resumed = True, False
                self.journal.record("detected", service=SERVICE, signal="replication",
                                    reason=str(e), pending=len(self.pending()),
                                    site_newest_created=self.newest_created)  # fmt: skip
                self.journal.record("recovery.started", action="queue", service=SERVICE,
                                    background=True)  # fmt: skip
            return
        self.failures = 0
        if self.in_outage and not self.pending():
            self.in_outage = False
            self.journal.record("recovered", action="resume", service=SERVICE)
            self.journal.record("steady_state.ok", phase="recovery", service=SERVICE,
                                reason="every recovery point is at the DR site")  # fmt: skip

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.poll_once()
            self._stop.wait(self.interval)

    def wait(self) -> None:
        """Block until stopped (a command line keeps replicating in the foreground)."""
        while self._thread is not None and self._thread.is_alive():
            self._thread.join(0.5)

    def stop(self, timeout: float | None = None) -> None:
        """Stop the loop after one last pass, so the DR site ends as complete as it can."""
        super().stop(timeout)
        try:
            self.sync_once()
        except (ChaosKitError, OSError) as e:
            self.journal.record("replication.incomplete", pending=len(self.pending()), error=str(e))
