"""The standard suite: experiments every TensorFlow serving stack should pass.

Run it against your stack with ``chaoskit run --stack chaoskit.toml`` (or
``pytest --pyargs chaoskit.suite --chaos-stack chaoskit.toml``); without a stack file it
runs against chaoskit's reference stack.  Experiments run per serving replica and per
link; what does not apply to a stack (no trainer, one replica, no DR site) is skipped
with a reason naming what is missing.
"""
