"""Online detection and recovery: probes, detectors, recovery actions, steady state.

Every 100 ms a probe asks each replica for its canary; detectors turn misses into
alerts; recovery actions (restart, failover, observe) act and confirm the steady state
against the golden outputs of each version (:mod:`.goldens`, :mod:`.recorded_goldens`).
"""
