"""The standard suite: experiments every TensorFlow serving stack should pass.

Run it against your stack with ``chaoskit run --stack chaoskit.toml`` (or
``pytest --pyargs chaoskit.suite --chaos-stack chaoskit.toml``); without a stack file it
runs against chaoskit's reference stack.  Experiments run per serving replica and per
link; what does not apply to a stack (no trainer, one replica, no DR site) is skipped
with a reason naming what is missing.
"""

from typing import Any


def assert_requests_kept(stack: Any, result: Any, *, allowed: int) -> None:
    """With a second replica behind the gateway a client should lose (almost) nothing: the
    gateway retries an idempotent request that got no answer on the other replica.  Only
    *allowed* failed requests are tolerated (one for a hang: a try that waits out its
    per-try deadline while another request is already in flight); with one replica there
    is nothing to retry on, and a restart's outage is what RTO measures."""
    if stack.gateway is None or len(stack.replicas) < 2:
        return
    assert result.failed_requests is not None, "no client request was measured"
    assert result.failed_requests <= allowed, (
        f"{result.failed_requests} client requests failed (allowed: {allowed}; "
        f"{result.retried_requests} were answered through a retry)"
    )
