"""Pure parts of the namespace firewall: rule specs, comments, stale owners; a fake iptables."""

from __future__ import annotations

import os
import stat
import subprocess
from types import SimpleNamespace

import pytest

from chaoskit.errors import ConfigError, FaultError, StackError
from chaoskit.faults import FirewallPartition
from chaoskit.faults.base import FaultContext
from chaoskit.journal import Journal
from chaoskit.liveness import pid_alive
from chaoskit.stack import netns_firewall as fw
from chaoskit.stack.netns_firewall import Rule


def test_comment_names_the_owner_and_a_random_token():
    comment = fw.make_comment()
    owner, token = fw.parse_comment(f"-A INPUT -m comment --comment {comment} -j DROP")
    assert owner == os.getpid() and len(token) == 8
    assert fw.make_comment() != comment
    assert fw.make_comment(42, "abc") == "chaoskit:42:abc"
    assert fw.parse_comment('-A INPUT -m comment --comment "chaoskit:7:ff" -j DROP') == (7, "ff")
    assert fw.parse_comment("-A INPUT -m comment --comment someone-else -j DROP") is None


def test_drop_cuts_every_interface_but_loopback():
    (rule,) = fw.partition_rules("drop", "chaoskit:1:aa")
    assert rule.chain == "INPUT" and rule.comment == "chaoskit:1:aa"
    assert rule.describe() == ("-A INPUT '!' -i lo -m comment --comment chaoskit:1:aa -j DROP")


def test_reject_resets_tcp_and_refuses_the_rest():
    tcp, rest = fw.partition_rules("reject", "chaoskit:1:aa")
    assert tcp.args[-6:] == ("-p", "tcp", "-j", "REJECT", "--reject-with", "tcp-reset")
    assert "tcp" not in rest.args and rest.args[-1] == "icmp-port-unreachable"
    assert {tcp.comment, rest.comment} == {"chaoskit:1:aa"}


def test_bad_mode_names_the_value():
    with pytest.raises(ConfigError, match="'blackhole'"):
        fw.partition_rules("blackhole", "chaoskit:1:aa")


def test_listed_rules_parse_and_policies_are_skipped():
    listing = [
        "-P INPUT ACCEPT",
        "-N DOCKER",
        '-A INPUT ! -i lo -m comment --comment "chaoskit:1:aa" -j DROP',
    ]
    rules = [fw.parse_rule(line) for line in listing]
    assert rules[:2] == [None, None]
    assert rules[2] == Rule(
        "INPUT", ("!", "-i", "lo", "-m", "comment", "--comment", "chaoskit:1:aa", "-j", "DROP")
    )


def test_stale_rules_are_those_of_dead_owners_only():
    rules = [
        Rule("INPUT", ("-m", "comment", "--comment", "chaoskit:10:aa", "-j", "DROP")),
        Rule("INPUT", ("-m", "comment", "--comment", "chaoskit:11:bb", "-j", "DROP")),
        Rule("INPUT", ("-m", "comment", "--comment", "user-rule", "-j", "DROP")),
        Rule("INPUT", ("-j", "ACCEPT")),
    ]
    assert fw.stale_rules(rules, alive=lambda pid: pid == 11) == rules[:1]
    assert pid_alive(os.getpid())
    child = subprocess.Popen(["true"])
    child.wait()
    assert not pid_alive(child.pid)


@pytest.fixture
def fake_iptables(tmp_path, monkeypatch):
    """nsenter replaced by a script that keeps the rules in a file (iptables -S/-I/-D)."""
    state = tmp_path / "rules"
    state.write_text("-P INPUT ACCEPT\n")
    script = tmp_path / "nsenter"
    script.write_text(f"""#!/usr/bin/env python3
import shlex, sys
args = sys.argv[sys.argv.index("-w") + 2:]
lines = open({str(state)!r}).read().splitlines()
if args[0] == "-S":
    print("\\n".join(lines))
elif args[0] == "-I":
    lines.insert(int(args[2]), "-A " + args[1] + " " + shlex.join(args[3:]))
elif args[0] == "-D":
    want = "-A " + args[1] + " " + shlex.join(args[2:])
    if want not in lines:
        sys.exit("iptables: Bad rule (does a matching rule exist in that chain?).")
    lines.remove(want)
elif args[0] == "--fail":
    sys.exit("iptables v1.8.9 (nf_tables): unknown option")
open({str(state)!r}, "w").write("\\n".join(lines) + "\\n")
""")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("CHAOSKIT_NSENTER", str(script))
    return state


def test_add_then_delete_removes_exactly_our_rules(fake_iptables):
    ours, other = fw.partition_rules("reject", "chaoskit:1:aa"), fw.partition_rules("drop", "x")
    fw.add_rules(5, other)
    fw.add_rules(5, ours)
    assert fw.list_rules(5) == [*ours, *other]  # inserted at the top, in their order
    assert fw.delete_rules(5, "chaoskit:1:aa") == ours
    assert fw.list_rules(5) == other
    assert fw.delete_rules(5, "chaoskit:1:aa") == []  # already gone: nothing to do


def test_remove_stale_rules_keeps_live_owners(fake_iptables):
    child = subprocess.Popen(["true"])
    child.wait()
    dead, live = (fw.partition_rules("drop", fw.make_comment(p)) for p in (child.pid, os.getpid()))
    fw.add_rules(5, [*dead, *live])
    assert fw.remove_stale_rules(5) == dead
    assert fw.list_rules(5) == live


def test_failures_carry_iptables_stderr(fake_iptables, monkeypatch):
    with pytest.raises(StackError, match="unknown option"):
        fw.iptables(5, "--fail")
    monkeypatch.setenv("CHAOSKIT_NSENTER", "/nonexistent/nsenter")
    with pytest.raises(StackError, match="/nonexistent/nsenter is not installed"):
        fw.list_rules(5)


def test_fault_rejects_a_bad_mode_before_touching_anything(tmp_path):
    backend = SimpleNamespace(name="docker", netns_pid=lambda s: pytest.fail("touched"))
    ctx = FaultContext(
        journal=Journal(tmp_path / "j.jsonl"), stack=SimpleNamespace(backend=backend)
    )
    with pytest.raises(FaultError, match="mode 'blackhole'"):
        FirewallPartition("web", mode="blackhole").inject(ctx)


class FakeBackend:
    """Just what FirewallPartition asks of a backend: the container and its init's pid."""

    name = "docker"

    def __init__(self) -> None:
        self.container: str | None = "c0ffee" * 10
        self.pid = 5

    def container_id(self, service: str) -> str | None:
        return self.container

    def netns_pid(self, service: str) -> int:
        if self.container is None:
            raise StackError(f"service {service!r} is not running")
        return self.pid


@pytest.fixture
def fault_ctx(tmp_path):
    journal = Journal(tmp_path / "j.jsonl")
    yield FaultContext(journal=journal, stack=SimpleNamespace(backend=FakeBackend()))
    journal.close()


def test_fault_revert_deletes_exactly_its_rules(fake_iptables, fault_ctx):
    fw.add_rules(5, fw.partition_rules("drop", "chaoskit:1:aa"))  # someone else's
    with FirewallPartition("web", mode="reject").inject(fault_ctx) as injection:
        record = injection.changes.record
        assert [r.comment for r in fw.list_rules(5)] == [record["rule"]] * 2 + ["chaoskit:1:aa"]
    assert record == {"service": "web", "container": "c0ffeec0ffee", "mode": "reject",
                      "rule": record["rule"]}  # fmt: skip
    assert [r.comment for r in fw.list_rules(5)] == ["chaoskit:1:aa"]


@pytest.mark.parametrize("change", ["replaced", "restarted", "gone"])
def test_fault_revert_leaves_another_namespace_alone(fake_iptables, fault_ctx, change):
    backend = fault_ctx.stack.backend
    injection = FirewallPartition("web").inject(fault_ctx)
    if change == "replaced":
        backend.container = "beef" * 16
    elif change == "restarted":
        backend.pid = 6
    else:
        backend.container = None
    injection.revert()  # the fake keeps one rule table for every pid: it must stay untouched
    assert injection.reverted and len(fw.list_rules(5)) == 1
