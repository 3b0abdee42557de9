"""The embedded default backend: every service is a local process.

No process outlives the run: each child gets SIGKILL from the kernel when the process
that started it dies (``setpriv --pdeathsig``, spawned from one long-lived thread so a
finished worker thread does not trigger it), ``close()`` stops everything, and a new
backend reaps processes left by a run whose owner is gone (found by their environment).
"""

from __future__ import annotations

import contextlib
import os
import queue
import shutil
import signal as signals
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chaoskit.errors import BackendError, ConfigError, StackError
from chaoskit.stack.cgroup import CpuLimit, OwnGroup
from chaoskit.stack.cgroup import reap_orphans as reap_cgroups
from chaoskit.stack.memory_limit import MemoryLimit, cannot_limit_memory, joining, service_group
from chaoskit.stack.ports import HOST, allocate_ports, endpoint_in
from chaoskit.stack.readiness import is_ready, wait_ready
from chaoskit.stack.service import ServiceSpec
from chaoskit.waiting import wait_until

OWNER_ENV = "CHAOSKIT_OWNER_PID"
RUN_ENV = "CHAOSKIT_RUN_ID"


def parse_signal(name: str | int) -> signals.Signals:
    """SIGKILL, KILL, 9 -> Signals.SIGKILL; anything else is a ConfigError naming it."""
    try:
        if isinstance(name, int) or str(name).isdigit():
            return signals.Signals(int(name))
        text = str(name).upper()
        return signals.Signals[text if text.startswith("SIG") else "SIG" + text]
    except (KeyError, ValueError) as e:
        raise ConfigError(f"unknown signal {name!r}") from e


class _Spawner:
    """Runs Popen on one daemon thread that lives as long as the interpreter.

    The kernel's parent-death signal fires when the *thread* that forked exits, so
    children must not be forked from short-lived threads such as the DR engine's.
    """

    def __init__(self) -> None:
        self._jobs: queue.Queue[tuple[Callable[[], Any], queue.Queue[Any]]] = queue.Queue()
        thread = threading.Thread(target=self._loop, name="chaoskit-spawner", daemon=True)
        thread.start()

    def _loop(self) -> None:
        while True:
            job, answer = self._jobs.get()
            try:
                answer.put((True, job()))
            except BaseException as e:  # handed back to the caller
                answer.put((False, e))

    def run(self, job: Callable[[], Any]) -> Any:
        answer: queue.Queue[Any] = queue.Queue(maxsize=1)
        self._jobs.put((job, answer))
        ok, value = answer.get()
        if not ok:
            raise value
        return value


_spawner: _Spawner | None = None
_spawner_lock = threading.Lock()


def _spawn(
    argv: list[str], env: dict[str, str], log: Path, cwd: str | None = None
) -> subprocess.Popen[bytes]:
    global _spawner
    with _spawner_lock:
        if _spawner is None:
            _spawner = _Spawner()
    setpriv = shutil.which("setpriv")
    if setpriv:
        argv = [setpriv, "--pdeathsig", "SIGKILL", "--", *argv]

    def job() -> subprocess.Popen[bytes]:
        with open(log, "ab") as out:
            return subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=cwd,
                start_new_session=True,  # Ctrl-C in the terminal reaches pytest, not the stack
            )

    return _spawner.run(job)  # type: ignore[union-attr]


@dataclass
class _Running:
    spec: ServiceSpec
    ports: dict[str, int]
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    memory: OwnGroup | None = None
    """The memory cgroup the process started in (None: none, or a memory fault holds it)."""


class ProcessBackend:
    """Runs services as local processes under ``run_dir`` (logs) and ``data_dir``.

    Where it can limit memory (root, a memory controller), each launch of a service
    starts in a memory cgroup of its own, without a limit (see
    :mod:`chaoskit.stack.memory_limit`: a memory fault needs the service's pages charged
    there); it is removed with the process's next launch or :meth:`close`.
    """

    name = "process"

    def __init__(self, run_dir: str | os.PathLike[str], data_dir: str | os.PathLike[str]) -> None:
        self.run_dir = Path(run_dir)
        self.data_dir = Path(data_dir)
        (self.run_dir / "logs").mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.run_id = self.run_dir.name
        self._services: dict[str, _Running] = {}
        self._lock = threading.RLock()
        self._launches = 0
        reap_orphans()
        reap_cgroups()

    # -- lifecycle ---------------------------------------------------------------
    def start(self, spec: ServiceSpec) -> None:
        with self._lock:
            running = self._services.get(spec.name)
            if running and running.proc and running.proc.poll() is None:
                raise StackError(f"service {spec.name!r} is already running")
            if running is None:
                ports = allocate_ports(spec.name, spec.ports)
                running = _Running(spec, ports, self.run_dir / "logs" / f"{spec.name}.log")
                self._services[spec.name] = running
            self._launch(running)
        self._wait_ready(running)

    def _launch(self, running: _Running) -> None:
        spec = running.spec
        values: dict[str, object] = {f"port_{k}": v for k, v in running.ports.items()}
        values.update(run_dir=str(self.run_dir), data_dir=str(self.data_dir), bind_host=HOST)
        env = dict(os.environ)
        env.update(spec.env)
        env.update({OWNER_ENV: str(os.getpid()), RUN_ENV: self.run_id})
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        self._drop_group(running)  # the previous process's
        self._launches += 1
        group = service_group(spec.name, self._launches)
        argv = spec.render(values)
        try:
            running.proc = _spawn(argv if group is None else joining(group, argv), env,
                                  running.log, spec.cwd)  # fmt: skip
        except OSError as e:
            if group is not None:
                group.dissolve()
            raise BackendError(f"cannot start service {spec.name!r}: {e}") from e
        running.memory = group

    @staticmethod
    def _drop_group(running: _Running) -> None:
        if running.memory is not None:
            running.memory.dissolve()
            running.memory = None

    def _wait_ready(self, running: _Running) -> None:
        spec = running.spec
        port = next(iter(running.ports.values()), None)
        values = {"run_dir": self.run_dir, "data_dir": self.data_dir}

        def exit_code() -> int | None:
            return -1 if running.proc is None else running.proc.poll()

        wait_ready(
            spec.name,
            spec.readiness.timeout,
            ready=lambda: is_ready(spec.readiness, host=HOST, port=port, values=values),
            exit_code=exit_code,
            logs=lambda: self.logs(spec.name, tail=15),
            give_up=lambda: self._terminate(running, grace=0),
        )

    def _terminate(self, running: _Running, grace: float) -> None:
        proc = running.proc
        if proc is None or proc.poll() is not None:
            if proc is not None:
                proc.wait()
            return
        if grace > 0:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signals.SIGCONT)  # a paused process cannot handle SIGTERM
                os.killpg(proc.pid, signals.SIGTERM)
            try:
                proc.wait(timeout=grace)
                return
            except subprocess.TimeoutExpired:
                pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signals.SIGKILL)
        proc.wait()

    def _get(self, service: str) -> _Running:
        try:
            return self._services[service]
        except KeyError:
            known = ", ".join(sorted(self._services)) or "none"
            raise StackError(f"no service {service!r} in this stack (services: {known})") from None

    def stop(self, service: str, timeout: float | None = None) -> None:
        running = self._get(service)
        self._terminate(running, running.spec.stop_timeout if timeout is None else timeout)

    def kill(self, service: str, signal: str = "SIGKILL") -> str:
        proc = self._get(service).proc
        sig = parse_signal(signal)
        if proc is None or proc.poll() is not None:
            raise StackError(f"service {service!r} is not running")
        os.kill(proc.pid, sig)
        return str(proc.pid)

    def pause(self, service: str) -> None:
        """SIGSTOP, and wait until the kernel reports the process stopped (it is async)."""
        pid = int(self.kill(service, "SIGSTOP"))
        wait_until(lambda: process_state(pid) in ("T", "Z", None), 5, what=f"{service} stopped")

    def limit_cpu(self, service: str, cpus: float) -> Callable[[], None]:
        """At most *cpus* CPUs for the running process (a cgroup of its own); returns
        the undo.  A restart escapes it: the new process is not in that cgroup."""
        pid = self.instance(service)
        if pid is None:
            raise StackError(f"cannot starve {service} of CPU: it is not running")
        return CpuLimit(int(pid), service, cpus).lift

    def limit_memory(self, service: str, limit_bytes: int | None) -> MemoryLimit:
        """At most *limit_bytes* (None: its usage + a little) for the running process, and
        a balloon beside it in its memory cgroup (its log: ``logs/<service>-balloon.log``)
        until the kernel OOM-kills it.  A restart escapes it: a new process, a new group."""
        running = self._get(service)
        pid = self.instance(service)
        if pid is None:
            raise StackError(f"cannot limit the memory of {service}: it is not running")
        group, proc = running.memory, running.proc
        if group is None:
            why = cannot_limit_memory() or "it was not started in a memory cgroup of its own"
            raise StackError(f"cannot limit the memory of {service}: {why}")
        running.memory = None  # the fault's until its lift

        def release(group: OwnGroup) -> None:
            with self._lock:
                if running.proc is proc and proc is not None and proc.poll() is None:
                    running.memory = group  # still its process's: unlimited again
                else:
                    group.dissolve()

        limit = MemoryLimit(group, int(pid), service, limit_bytes, proc=proc, release=release)
        env = {**os.environ, OWNER_ENV: str(os.getpid()), RUN_ENV: self.run_id}
        log = self.run_dir / "logs" / f"{service}-balloon.log"
        limit.inflate(lambda argv: _spawn(argv, env, log))
        return limit

    def resume(self, service: str) -> None:
        pid = int(self.kill(service, "SIGCONT"))
        wait_until(lambda: process_state(pid) != "T", 5, what=f"{service} resumed")

    def restart(self, service: str) -> None:
        running = self._get(service)
        with self._lock:
            self._terminate(running, grace=0)
            self._launch(running)
        self._wait_ready(running)

    def instance(self, service: str) -> str | None:
        """The running process's pid as text, or None; changes on every restart."""
        proc = self._get(service).proc
        return None if proc is None or proc.poll() is not None else str(proc.pid)

    def status(self, service: str) -> str:
        running = self._services.get(service)
        if running is None or running.proc is None:
            return "absent"
        if running.proc.poll() is not None:
            return "exited"
        return "paused" if process_state(running.proc.pid) == "T" else "running"

    def endpoint(self, service: str, port: str) -> tuple[str, int]:
        return endpoint_in(self._get(service).ports, service, port)

    def logs(self, service: str, tail: int = 50) -> str:
        log = self._get(service).log
        try:
            lines = log.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return ""
        return "\n".join(lines[-tail:])

    def services(self) -> list[str]:
        return list(self._services)

    def close(self) -> None:
        """Stop every service: SIGTERM with a short grace, then SIGKILL; waits for each."""
        with self._lock:
            for running in reversed(list(self._services.values())):
                self._terminate(running, grace=min(running.spec.stop_timeout, 2.0))
                self._drop_group(running)


def process_state(pid: int) -> str | None:
    """The state letter from /proc/<pid>/stat (R, S, T, Z …), or None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def _environ(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, v in pairs}


def chaoskit_processes() -> dict[int, dict[str, str]]:
    """Every live process started by a chaoskit process backend: pid -> its env markers."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        env = _environ(int(entry.name))
        if OWNER_ENV in env and process_state(int(entry.name)) not in (None, "Z"):
            found[int(entry.name)] = {OWNER_ENV: env[OWNER_ENV], RUN_ENV: env.get(RUN_ENV, "")}
    return found


def reap_orphans() -> list[int]:
    """Kill service processes whose owning chaoskit process is gone (an interrupted run)."""
    killed = []
    for pid, markers in chaoskit_processes().items():
        owner = int(markers[OWNER_ENV])
        if owner != os.getpid() and process_state(owner) in (None, "Z"):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signals.SIGKILL)
                killed.append(pid)
    return killed
