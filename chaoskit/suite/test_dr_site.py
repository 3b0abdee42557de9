"""Cut the DR site off: backups queue locally and resume when the link heals.

The replicator ships every recovery point to the DR site through the ``dr-site`` proxy.
A partition there is detected from failed replication passes; the trainer goes on, its
checkpoints are backed up into the local repository and wait; after the heal the
backlog is shipped.  The report shows the DR site's RPO growing during the partition and
recovering after; the RPO is the worst of it, the RTO ends when the DR site holds every
recovery point again.  Serving is not touched, so clients see no error.
"""

from __future__ import annotations

import pytest

from chaoskit.faults.network import Partition
from chaoskit.report.metrics import dr_site_rpo_series

QUEUED = 3
"""Recovery points to queue locally before the link heals."""


@pytest.mark.chaos_needs("dr-site")
@pytest.mark.chaos(ttd="5s", rto="30s", rpo="30s")  # TTD: an upload stalls 2 s, then 2 probes
@pytest.mark.parametrize("mode", ["refuse", "hang"])
def test_dr_site_partition_queues_backups_and_resumes(chaos, mode):
    with chaos.inject(Partition(proxy=chaos.stack.dr_site, mode=mode)):
        [detected] = chaos.wait_for("detected", service=chaos.stack.dr_site)
        # hold the partition until recovery points have queued up in the local repository
        queued = chaos.wait_for("backup.recovery_point", count=QUEUED, since=detected["t"])
    assert chaos.wait_recovered(), "the DR site did not catch up after the heal"
    result = chaos.verify()

    events = chaos.events()
    shipped = {e["snapshot"] for e in events if e["event"] == "backup.replicated"}
    assert {e["snapshot"] for e in queued} <= shipped, "a queued recovery point was not shipped"
    assert result.failed_requests == 0 and result.wrong_predictions == 0
    # the DR site fell behind for the whole partition, and caught up after the heal
    reverted = next(e for e in events if e["event"] == "fault.reverted")
    assert result.rpo_s >= reverted["wall"] - detected["wall"]
    series = dr_site_rpo_series(events, until_wall=events[-1]["wall"])
    assert series[-1][1] < result.rpo_s / 2, "the DR site's RPO did not come back down"
