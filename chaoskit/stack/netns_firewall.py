"""iptables rules inside another process's network namespace (a container's firewall).

Every command runs as ``nsenter --target PID --net iptables -w ...``: the host's iptables
binary acting on the namespace's own tables, so nothing inside the container (no
iptables, no capabilities) is needed, but the caller must be root on the engine's host.

Every rule chaoskit adds carries the comment ``chaoskit:<owner pid>:<random token>``:
the token lets revert find and delete exactly those rules (``iptables -S``, then ``-D``) and
the owner pid lets :func:`remove_stale_rules` find the rules of a run that died before
it could revert.  Only the filter table and IPv4 are touched.
"""

from __future__ import annotations

import os
import re
import secrets
import shlex
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from chaoskit.errors import ConfigError, StackError
from chaoskit.liveness import pid_alive

NSENTER = shutil.which("nsenter") or "/usr/bin/nsenter"
IPTABLES = shutil.which("iptables", path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin") or (
    "/usr/sbin/iptables"
)
PREFIX = "chaoskit"
TIMEOUT = 15.0
MODES = ("drop", "reject")
_COMMENT = re.compile(r"--comment\s+\"?(" + PREFIX + r":(\d+):([0-9a-f]+))\"?")


def _binary(env: str, default: str) -> str:
    return os.environ.get(env) or default


def make_comment(owner: int | None = None, token: str | None = None) -> str:
    """``chaoskit:<owner pid>:<token>`` (owner: this process; token: 8 random hex digits)."""
    owner = os.getpid() if owner is None else owner
    return f"{PREFIX}:{owner}:{token or secrets.token_hex(4)}"


def parse_comment(rule: str) -> tuple[int, str] | None:
    """``(owner pid, token)`` of a chaoskit rule as ``iptables -S`` prints it, else None."""
    found = _COMMENT.search(rule)
    return (int(found.group(2)), found.group(3)) if found else None


@dataclass(frozen=True)
class Rule:
    """One rule in the filter table: its chain and match/target arguments."""

    chain: str
    args: tuple[str, ...]

    @property
    def comment(self) -> str | None:
        found = _COMMENT.search(" ".join(self.args))
        return found.group(1) if found else None

    def describe(self) -> str:
        return f"-A {self.chain} {shlex.join(self.args)}"


def partition_rules(mode: str, comment: str) -> list[Rule]:
    """The INPUT rules cutting every packet that arrives on any interface but loopback.

    ``drop``: every packet is dropped (clients hang until their timeout).  ``reject``: TCP
    is answered with a reset (clients fail fast: connection refused or reset), anything
    else with an ICMP port-unreachable.  Traffic inside the namespace (loopback) is left
    alone.  All rules carry *comment*.
    """
    if mode not in MODES:
        raise ConfigError(f"partition mode {mode!r}: choose from {MODES}")
    match = ("!", "-i", "lo", "-m", "comment", "--comment", comment)
    if mode == "drop":
        return [Rule("INPUT", (*match, "-j", "DROP"))]
    return [
        Rule("INPUT", (*match, "-p", "tcp", "-j", "REJECT", "--reject-with", "tcp-reset")),
        Rule("INPUT", (*match, "-j", "REJECT", "--reject-with", "icmp-port-unreachable")),
    ]


def parse_rule(line: str) -> Rule | None:
    """A ``-A CHAIN args...`` line of ``iptables -S`` as a :class:`Rule` (policies: None)."""
    words = shlex.split(line)
    if len(words) < 2 or words[0] != "-A":
        return None
    return Rule(words[1], tuple(words[2:]))


def iptables(pid: int, *args: str, timeout: float = TIMEOUT) -> str:
    """Run ``iptables -w ARGS`` in the network namespace of *pid*; its stdout.

    StackError naming the command and iptables' stderr when it fails, times out or the
    tools are missing.
    """
    command = [
        _binary("CHAOSKIT_NSENTER", NSENTER), "--target", str(pid), "--net",
        _binary("CHAOSKIT_IPTABLES", IPTABLES), "-w", "5", *args,
    ]  # fmt: skip
    shown = f"iptables {shlex.join(args)} in the network namespace of pid {pid}"
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError as e:
        raise StackError(f"{shown}: {e.filename} is not installed") from e
    except subprocess.TimeoutExpired as e:
        raise StackError(f"{shown}: no answer within {timeout:g}s") from e
    except OSError as e:
        raise StackError(f"{shown}: cannot run it: {e}") from e
    if done.returncode != 0:
        detail = done.stderr.strip() or f"exit status {done.returncode}"
        raise StackError(f"{shown} failed: {detail}")
    return done.stdout


def add_rules(pid: int, rules: Sequence[Rule]) -> None:
    """Insert *rules*, in their order, at the top of their chains (ahead of any rule that
    would accept first).  If one fails, those already added are deleted again."""
    added: list[Rule] = []
    positions: dict[str, int] = {}
    try:
        for rule in rules:
            positions[rule.chain] = positions.get(rule.chain, 0) + 1
            iptables(pid, "-I", rule.chain, str(positions[rule.chain]), *rule.args)
            added.append(rule)
    except StackError:
        for rule in added:
            try:
                iptables(pid, "-D", rule.chain, *rule.args)
            except StackError:
                pass  # the first error is the one worth reporting
        raise


def delete_rules(pid: int, comment: str) -> list[Rule]:
    """Delete exactly the rules carrying *comment* (as listed); what was deleted (none
    when they were already gone)."""
    found = [r for r in list_rules(pid) if r.comment == comment]
    for rule in found:
        iptables(pid, "-D", rule.chain, *rule.args)
    return found


def list_rules(pid: int) -> list[Rule]:
    """The filter table's rules (``iptables -S``), chain policies left out."""
    return [r for r in map(parse_rule, iptables(pid, "-S").splitlines()) if r is not None]


def stale_rules(rules: Sequence[Rule], alive: Callable[[int], bool] = pid_alive) -> list[Rule]:
    """The chaoskit rules among *rules* whose owner process is gone."""
    stale = []
    for rule in rules:
        owner = parse_comment(" ".join(rule.args))
        if owner is not None and not alive(owner[0]):
            stale.append(rule)
    return stale


def remove_stale_rules(pid: int) -> list[Rule]:
    """Delete the chaoskit rules of dead owners in the namespace of *pid*; what was deleted."""
    removed = []
    for rule in stale_rules(list_rules(pid)):
        iptables(pid, "-D", rule.chain, *rule.args)
        removed.append(rule)
    return removed
