"""The plugin's usage errors: one clear message naming the bad value, nothing started."""

from __future__ import annotations

import pytest


def test_marker_is_registered(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--markers")
    result.stdout.fnmatch_lines(["*@pytest.mark.chaos(ttd=None, rto=None, rpo=None)*"])


def test_unknown_backend_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest("--chaos-backend=kubernetes")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*unknown backend 'kubernetes' (choose from: process, docker, swarm)*"]
    )
    assert "Traceback" not in result.stderr.str()


@pytest.mark.parametrize("option,message", [
    ("--chaos-swarm-workers=9", "*--chaos-swarm-workers: 9 is not 0..8*"),
    ("--chaos-swarm-healthcheck=often", "*--chaos-swarm-healthcheck: 'often' is not a duration*"),
    ("--chaos-swarm-spares=5", "*--chaos-swarm-spares: 5 is not 0..4*"),
])  # fmt: skip
def test_bad_swarm_options_are_usage_errors(pytester: pytest.Pytester, option: str,
                                            message: str) -> None:  # fmt: skip
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest("--chaos-backend=swarm", option)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])
    assert "Traceback" not in result.stderr.str()


def assert_only_that_test_errors(result: pytest.RunResult, message: str) -> None:
    """A bad marker fails its own test at setup, with the message and no traceback; the
    session's other test still runs and passes; no stack was started, no report written."""
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*ERROR at setup of test_x*", f"bad chaos marker: {message}"])
    assert "Traceback" not in result.stdout.str() + result.stderr.str()


def test_bad_budget_fails_that_test_and_lets_the_others_run(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.chaos(rto="soonish")
        def test_x(chaos):
            pass

        @pytest.mark.chaos(rto="30s")
        def test_other():
            pass
        """
    )
    result = pytester.runpytest()
    assert_only_that_test_errors(result, "*test_x*rto='soonish'*not a duration*")
    assert not (pytester.path / "reports").exists()  # nothing was started or written


def test_positional_budget_is_rejected(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.chaos("30s")
        def test_x():
            pass

        def test_other():
            pass
        """
    )
    assert_only_that_test_errors(pytester.runpytest(), "*test_x*keyword budgets only*")


def test_bad_ini_budget_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nchaos_rto = forever\n")
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*rto='forever'*not a duration*"])


def test_tests_without_chaos_write_no_report(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest()
    assert result.ret == 0
    assert not (pytester.path / "reports").exists()


@pytest.mark.parametrize(
    ("marker", "message"),
    [
        ('chaos_learned(baseline="a while")',
         "*test_x*chaos_learned baseline='a while'*not a duration*"),
        ('chaos_learned(baseline="5s")',
         "*test_x*chaos_learned baseline='5s': needs at least 10s*"),
        ('chaos_learned("30s")', "*test_x*chaos_learned takes one keyword only: baseline=*"),
        ("chaos_quality(margin=-1)",
         "*test_x*chaos_quality: margin must be a number >= 0, got -1*"),
        ("chaos_quality(0.5)",
         "*test_x*chaos_quality takes keywords only (margin=, min_samples=, floor=)*"),
        ("chaos_quality(samples=5)", "*test_x*chaos_quality: unknown setting 'samples'*"),
    ],
)  # fmt: skip
def test_bad_learned_or_quality_marker_names_test_and_value(
    pytester: pytest.Pytester, marker: str, message: str
) -> None:
    pytester.makepyfile(
        f"""
        import pytest

        @pytest.mark.{marker}
        def test_x(chaos):
            pass

        def test_other():
            pass
        """
    )
    assert_only_that_test_errors(pytester.runpytest(), message)
    assert not (pytester.path / "reports").exists()


def test_bad_learned_baseline_ini_is_a_usage_error_when_learned_is_on(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeini("[pytest]\nchaos_learned_baseline = soon\n")
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest("--chaos-learned")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*baseline='soon'*not a duration*"])


def test_a_bad_stack_file_is_one_usage_error_naming_file_and_key(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile("def test_x(chaos): pass")
    pytester.path.joinpath("chaoskit.toml").write_text(
        '[model]\nname = "m"\nbase_path = "models"\n\n[services.serving]\nrole = "serving"\n'
        'comand = ["python"]\n'
    )
    result = pytester.runpytest("--chaos-stack=chaoskit.toml")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*chaoskit.toml: services.serving.comand: unknown key (did you mean 'command'?)*"]
    )
    assert "Traceback" not in result.stderr.str()
    assert not (pytester.path / "reports").exists()


def test_needs_skip_names_what_the_stack_lacks(pytester: pytest.Pytester) -> None:
    pytester.path.joinpath("chaoskit.toml").write_text(
        '[model]\nname = "m"\nbase_path = "models"\n\n[services.serving]\nrole = "serving"\n'
        'command = ["python"]\nports = { rest = 0 }\n'
    )
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.chaos_needs("trainer", "replicas>=2")
        def test_x(chaos):
            pass

        @pytest.mark.chaos_quality()
        def test_gated(chaos):
            pass

        @pytest.mark.chaos_needs("checkpoint-volume")
        def test_disk(chaos):
            pass

        def test_per_replica(chaos_replica):
            assert chaos_replica == "serving"
        """
    )
    result = pytester.runpytest("--chaos-stack=chaoskit.toml", "-rs")
    result.assert_outcomes(passed=1, skipped=3)
    result.stdout.fnmatch_lines(["*chaoskit.toml lacks a service with role 'trainer'; "
                                 "a second serving replica (replicas = 2)*",
                                 "*chaoskit.toml lacks a labelled set to judge versions on*",
                                 "*chaoskit.toml lacks a checkpoint directory on a file system "
                                 "of its own*"])
