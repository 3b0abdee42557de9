"""The hardening checks on facts alone: each fires on the risky fact and stays quiet on the
hardened one."""

from __future__ import annotations

import pytest

from chaoskit.harden import (
    ContainerFacts,
    Facts,
    KeyFacts,
    Mount,
    SecretFile,
    SiteFacts,
    run_checks,
)
from chaoskit.harden.collect import container_facts, reference_role
from chaoskit.harden.core import excess_operations, is_model_mount, runs_as_root

MODELS = "/srv/models/mine"


def serving(user: str = "1000:1000", *mounts: Mount, role: str = "serving",
            privileged: bool = False) -> Facts:  # fmt: skip
    return Facts(containers=[ContainerFacts("serving", role, "web-1", user, privileged,
                                            mounts, (MODELS,))])  # fmt: skip


def checks(facts: Facts) -> list[str]:
    return [f.check for f in run_checks(facts)]


@pytest.mark.parametrize("user", ["", "0", "root", "0:0", "root:1000", " 0 "])
def test_root_users_are_found(user: str) -> None:
    (finding,) = run_checks(serving(user))
    assert finding.check == "root-user" and finding.subject == "serving (web-1)"
    assert "--user 1000:1000" in finding.fix and "root" in finding.reason


@pytest.mark.parametrize("user", ["1000", "1000:1000", "nobody", "65534:65534", "10"])
def test_unprivileged_users_pass(user: str) -> None:
    assert not runs_as_root(user)
    assert run_checks(serving(user)) == []


@pytest.mark.parametrize("mount", [
    Mount(MODELS, "/models/mine"),  # the base path itself
    Mount("/srv/models", "/srv/models"),  # a directory above it
    Mount("/srv/models/mine/3", "/m/3"),  # one version inside it
    Mount("/var/lib/docker/volumes/x/_data", "/models", "volume", name="x"),  # TF Serving's
])  # fmt: skip
def test_a_writable_model_mount_in_serving_is_found(mount: Mount) -> None:
    (finding,) = run_checks(serving("1000", mount))
    assert finding.check == "writable-model-mount"
    assert mount.destination in finding.subject and ":ro" in finding.fix


def test_read_only_model_mounts_other_mounts_and_other_roles_pass() -> None:
    assert run_checks(serving("1000", Mount(MODELS, "/models/mine", read_only=True))) == []
    assert run_checks(serving("1000", Mount("/srv/logs", "/logs"))) == []
    # the trainer writes models: its mount may be writable
    assert run_checks(serving("1000", Mount(MODELS, "/models"), role="trainer")) == []
    assert not is_model_mount(Mount("/srv/models-old", "/x"), [MODELS])


def test_privileged_and_docker_socket_are_found() -> None:
    assert checks(serving("1000", privileged=True)) == ["privileged"]
    sock = Mount("/var/run/docker.sock", "/var/run/docker.sock")
    assert checks(serving("1000", sock)) == ["docker-socket"]
    assert checks(serving("1000", Mount("/run/docker.sock", "/sock"))) == ["docker-socket"]


@pytest.mark.parametrize(("mode", "words"), [
    (0o100644, "its group and everyone may read"), (0o100640, "its group may read"),
    (0o100604, "everyone may read"), (0o100622, "may write"), (0o100666, "may read/write"),
])  # fmt: skip
def test_secret_files_open_to_others_are_found(mode: int, words: str) -> None:
    (finding,) = run_checks(Facts(secrets=[SecretFile("/k/key", "repository key file", mode)]))
    assert finding.check == "secret-file-mode" and finding.subject == "/k/key"
    assert words in finding.reason and finding.fix == "chmod 600 /k/key"
    assert f"mode {mode & 0o777:04o}" in finding.reason


@pytest.mark.parametrize("mode", [0o100600, 0o100400, 0o100700, 0o100000])
def test_private_secret_files_pass(mode: int) -> None:
    assert run_checks(Facts(secrets=[SecretFile("/k/key", "key", mode)])) == []


def test_dr_site_without_tls_and_answering_without_token_is_found() -> None:
    site = SiteFacts("http://dr:8475", tls=False, token=None, unauthenticated_status=200)
    found = run_checks(Facts(sites=[site]))
    assert [f.check for f in found] == ["dr-site-no-tls", "dr-site-no-token"]
    assert "answered 200, not 401" in found[1].reason
    assert "--tls-cert" in found[0].fix and "--token-file" in found[1].fix


@pytest.mark.parametrize("status", [401, 403])
def test_a_tls_site_refusing_an_anonymous_request_passes(status: int) -> None:
    site = SiteFacts("https://dr:8475", tls=True, token=True, unauthenticated_status=status)
    assert run_checks(Facts(sites=[site])) == []


def test_a_site_that_cannot_be_probed_is_a_finding_not_a_pass() -> None:
    site = SiteFacts("https://dr:1", tls=True, probe_error="connection refused")
    (finding,) = run_checks(Facts(sites=[site]))
    assert finding.check == "dr-site-unprobed" and "connection refused" in finding.reason


def test_a_stack_file_site_command_without_token_is_found() -> None:
    site = SiteFacts("services.dr", tls=True, token=False)
    assert checks(Facts(sites=[site])) == ["dr-site-no-token"]
    assert checks(Facts(sites=[SiteFacts("services.dr", tls=True, token=True)])) == []


@pytest.mark.parametrize(("job", "role", "found"), [
    ("backup agent", "admin", True), ("backup agent", "operator", True),
    ("replicator", "reader", True), ("backup agent", "writer", False),
    ("replicator", "writer", False), ("store guard", "admin", True),
    ("store guard", "operator", False),
])  # fmt: skip
def test_a_job_key_with_more_role_than_needed_is_found(job: str, role: str, found: bool) -> None:
    key = KeyFacts(job, "0123456789abcdef", role, "/r", "/etc/agent.pw")
    result = run_checks(Facts(keys=[key]))
    assert bool(result) is found
    if found:
        assert result[0].subject == f"{job} key 01234567 (/etc/agent.pw)"
        assert f"role {role}" in result[0].reason and "--role" in result[0].fix


def test_excess_operations_name_what_the_job_does_not_need() -> None:
    assert excess_operations("writer", "writer") == []
    assert "restore" in excess_operations("operator", "writer")
    assert excess_operations("admin", "operator") == ["key add", "key remove"]


def test_container_facts_come_from_docker_inspect() -> None:
    attrs = {
        "Name": "/web-1",
        "Config": {"User": ""},
        "HostConfig": {"Privileged": True},
        "Mounts": [
            {"Type": "bind", "Source": MODELS, "Destination": "/models", "RW": False},
            {"Type": "volume", "Name": "v", "Source": "/var/lib/docker/volumes/v/_data",
             "Destination": "/data", "RW": True},
        ],
    }  # fmt: skip
    facts = container_facts(attrs, "serving", "serving", [MODELS])
    assert facts.container == "web-1" and facts.user == "" and facts.privileged
    assert facts.mounts[0].read_only and not facts.mounts[1].read_only
    assert facts.mounts[1].name == "v" and facts.mounts[1].type == "volume"
    assert checks(Facts(containers=[facts])) == ["root-user", "privileged"]


def test_reference_stack_roles() -> None:
    assert [reference_role(s) for s in ("serving", "serving-b", "trainer", "dr-site", "x")] == [
        "serving", "serving", "trainer", "dr-site", "other"]  # fmt: skip


def test_a_stack_file_names_its_secrets_sites_and_model_path(tmp_path) -> None:
    from chaoskit.harden.collect import read_stack
    from chaoskit.stackfile.load import validate

    file = validate({
        "model": {"name": "m", "base_path": "{data_dir}/models/m"},
        "services": {
            "serving": {"role": "serving", "command": ["srv", "--tls-key", "tls/key.pem"]},
            "dr": {"role": "dr-site", "command": ["{python}", "-m", "chaoskit.dr.protect.site",
                                                   "--token-file", "{dr_site_token_file}"]},
        },
        "dr": {"repository": "/r/backups"},
    }, where="t.toml")  # fmt: skip
    facts = read_stack(file, tmp_path / "chaoskit.toml", tmp_path / "data")
    assert facts.roles == {"serving": "serving", "dr": "dr-site"}
    assert facts.model_paths == [str(tmp_path / "data" / "models" / "m")]
    assert facts.password_file == facts.repository.with_name("backups.password")  # type: ignore[union-attr]
    secrets = dict((str(p), what) for p, what in facts.secrets)
    assert secrets[str(tmp_path / "tls" / "key.pem")] == "TLS private key"
    assert secrets[str(tmp_path / "data" / "dr-site.token")] == "DR-site token file"
    assert secrets["/r/backups.password"] == "the DR engine's repository password file"
    (site,) = facts.sites
    assert site.subject == "services.dr" and site.token and not site.tls
    unknown = read_stack(file, tmp_path / "chaoskit.toml", None)  # {data_dir} unknown
    assert unknown.model_paths == [] and "model.base_path" in unknown.notes[0]
    assert "--data-dir" in unknown.notes[0]


def test_the_table_has_check_subject_reason_fix_then_notes_and_what_was_checked() -> None:
    from chaoskit.harden.cli import render

    findings = run_checks(Facts(secrets=[SecretFile("/k/key", "key file", 0o100644)]))
    lines = render(findings, ["skipped: x"], {"containers": 0, "secret_files": 1}).splitlines()
    assert lines[0].split() == ["CHECK", "SUBJECT", "REASON", "FIX"]
    assert lines[1].startswith("secret-file-mode  /k/key") and "chmod 600 /k/key" in lines[1]
    assert lines[-2:] == ["note: skipped: x",
                          "harden-check: 1 finding(s) (checked 0 containers, 1 secret files)"]
    assert render([], [], {"keys": 2}) == "harden-check: no findings (checked 2 keys)"


def test_the_command_exits_1_on_findings_0_without_and_2_on_bad_input(tmp_path, capsys) -> None:
    from chaoskit.cli import main

    key = tmp_path / "key"
    key.write_text("k")
    key.chmod(0o640)
    assert main(["harden-check", "--secret-file", str(key)]) == 1
    key.chmod(0o600)
    assert main(["harden-check", "--secret-file", str(key)]) == 0
    assert main(["harden-check", "--secret-file", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err == f"chaoskit: error: secret file '{tmp_path / 'x'}' does not exist\n"
