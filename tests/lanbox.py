"""A LAN in a box: hosts in private network namespaces on one bridge, for integration tests.

Layout (all names unique per box, ``gnbox-<pid>-<hex>``; nothing touches the real interfaces):

    switch namespace   bridge br0, ports p0..pN-1   (the veth ends are created in here)
    host namespace i   eth0 = 198.18.0.(i+1)/24, lo up, multicast route 224.0.0.0/4 via eth0

198.18.0.0/15 is the RFC 2544 benchmarking range: never routed, so an address here cannot be
confused with the machine's real LAN. Each host sees distinct addresses (mDNS sees distinct
hosts) and has its own nftables ruleset for loss and partitions (``tc netem`` is not in this
kernel; delay, duplication and reordering come from gossipnet.net.faults).

Needs root (``ip netns add``); ``set_loss``/``partition`` also need ``nft``. ``close()``, also
reached from ``__exit__`` after a failure, kills every process left in the namespaces and deletes
them; boxes leaked by a killed test run (their creator pid is gone) are deleted by the next box.
"""

from __future__ import annotations

import functools
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PREFIX = "gnbox-"
SUBNET_PREFIX = "198.18.0."  # RFC 2544 benchmarking addresses, /24 inside the box only
MAX_HOSTS = 200
IP_TIMEOUT = 10  # seconds for one ip/nft command; they take milliseconds


class LanBoxError(RuntimeError):
    """Setting up or driving the box failed; the message carries the failing command's stderr."""


def _cmd(argv: Sequence[str], input: str | None = None, timeout: float = IP_TIMEOUT) -> str:
    try:
        done = subprocess.run(list(argv), input=input, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError as exc:
        raise LanBoxError(f"{argv[0]} is not installed") from exc
    except subprocess.TimeoutExpired as exc:
        raise LanBoxError(f"{' '.join(argv)} took over {timeout} s") from exc
    if done.returncode != 0:
        raise LanBoxError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _namespaces() -> list[str]:
    return [line.split()[0] for line in _cmd(["ip", "netns", "list"]).splitlines() if line.strip()]


def _kill_namespace_processes(ns: str) -> None:
    try:
        pids = _cmd(["ip", "netns", "pids", ns]).split()
    except LanBoxError:
        return
    for pid in pids:
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass


def _delete_namespace(ns: str) -> None:
    _kill_namespace_processes(ns)
    try:
        _cmd(["ip", "netns", "del", ns])
    except LanBoxError:
        pass  # already gone


def cleanup_stale() -> list[str]:
    """Delete namespaces of boxes whose creating process no longer exists; return their names."""
    removed = []
    for ns in _namespaces():
        if not ns.startswith(PREFIX):
            continue
        try:
            pid = int(ns[len(PREFIX):].split("-", 1)[0])
        except ValueError:
            continue
        if not _pid_alive(pid):
            _delete_namespace(ns)
            removed.append(ns)
    return removed


class Process:
    """A process spawned inside one host; stdout and stderr go to files in the box's work dir."""

    def __init__(self, popen: subprocess.Popen, argv: list[str], stdout: Path, stderr: Path) -> None:
        self._popen = popen
        self.argv = argv
        self.stdout_path = stdout
        self.stderr_path = stderr

    @property
    def pid(self) -> int:
        return self._popen.pid

    @property
    def returncode(self) -> int | None:
        return self._popen.poll()

    def kill(self, sig: int = signal.SIGTERM) -> None:
        """Send ``sig`` to the process (not its children); no-op once it has exited."""
        if self._popen.poll() is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def wait(self, timeout: float = 30) -> int:
        """Wait for exit; raises subprocess.TimeoutExpired after ``timeout`` seconds."""
        return self._popen.wait(timeout)

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def wait_for_output(self, text: str, timeout: float = 10) -> str:
        """Wait until ``text`` appears in stdout and return stdout; LanBoxError (with stderr) if the
        process exits first or the time runs out."""
        deadline = time.monotonic() + timeout
        while True:
            out = self.stdout()
            if text in out:
                return out
            if self._popen.poll() is not None:
                out = self.stdout()
                if text in out:
                    return out
                raise LanBoxError(f"{self.argv[0]} exited {self._popen.returncode} before printing "
                                  f"{text!r}; stderr:\n{self.stderr()[-3000:]}")
            if time.monotonic() > deadline:
                raise LanBoxError(f"{text!r} not printed within {timeout} s; stderr:\n{self.stderr()[-3000:]}")
            time.sleep(0.02)

    def _signal_group(self, sig: int) -> None:
        """Signal the process and everything it started (spawn gives each its own session).

        Skipped once the process is reaped, when its pid could belong to someone else; its
        leftover children die with the namespace (``ip netns pids``) in ``close()``.
        """
        if self._popen.poll() is not None:
            return
        try:
            os.killpg(self.pid, sig)
        except ProcessLookupError:
            pass


class LanBox:
    """``hosts`` network namespaces on one bridge; use as a context manager.

    >>> with LanBox(hosts=3) as lan:
    ...     p = lan.spawn_python(0, "print('hi')")
    """

    def __init__(self, hosts: int = 3, workdir: str | Path | None = None, grace: float = 2.0) -> None:
        if not 1 <= hosts <= MAX_HOSTS:
            raise ValueError(f"hosts must be 1..{MAX_HOSTS}, got {hosts}")
        self.hosts = hosts
        self.grace = grace  # seconds processes get between SIGTERM and SIGKILL on close()
        self.id = f"{PREFIX}{os.getpid()}-{secrets.token_hex(3)}"
        self.switch = f"{self.id}-sw"
        self.names = [f"{self.id}-h{i}" for i in range(hosts)]
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="lanbox-"))
        self._processes: list[Process] = []
        self._created: list[str] = []
        self._nft_ready: set[int] = set()
        self._closed = False

    # -- lifecycle --

    def __enter__(self) -> LanBox:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def start(self) -> None:
        cleanup_stale()
        self._netns_add(self.switch)
        sw = ["ip", "-n", self.switch]
        _cmd([*sw, "link", "add", "br0", "type", "bridge"])
        # Forward multicast to every port at once: no IGMP snooping delays or surprises.
        _cmd([*sw, "link", "set", "br0", "type", "bridge", "mcast_snooping", "0"])
        _cmd([*sw, "link", "set", "br0", "up"])
        for i, ns in enumerate(self.names):
            self._netns_add(ns)
            h = ["ip", "-n", ns]
            # Both veth ends are born inside namespaces: the root namespace never sees them.
            _cmd([*sw, "link", "add", f"p{i}", "type", "veth", "peer", "name", "eth0", "netns", ns])
            _cmd([*sw, "link", "set", f"p{i}", "master", "br0"])
            _cmd([*sw, "link", "set", f"p{i}", "up"])
            _cmd([*h, "addr", "add", f"{self.address(i)}/24", "dev", "eth0"])
            _cmd([*h, "link", "set", "lo", "up"])
            _cmd([*h, "link", "set", "eth0", "up"])
            _cmd([*h, "route", "add", "224.0.0.0/4", "dev", "eth0"])

    def close(self) -> None:
        """Kill every process in the box, delete its namespaces and (if ours) its work dir."""
        if self._closed:
            return
        self._closed = True
        # SIGTERM first so processes can say goodbye; SIGKILL whatever is left after the grace.
        for proc in self._processes:
            proc._signal_group(signal.SIGTERM)
        deadline = time.monotonic() + self.grace
        for proc in self._processes:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for proc in self._processes:
            proc._signal_group(signal.SIGKILL)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                pass  # stuck in the kernel; deleting the namespace below still goes ahead
        for ns in reversed(self._created):
            _delete_namespace(ns)
        self._created.clear()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _netns_add(self, ns: str) -> None:
        _cmd(["ip", "netns", "add", ns])
        self._created.append(ns)

    # -- hosts and processes --

    def address(self, i: int) -> str:
        """Host ``i``'s IPv4 address on the box's LAN."""
        self._check_host(i)
        return f"{SUBNET_PREFIX}{i + 1}"

    def spawn(self, i: int, argv: Sequence[str], env: Mapping[str, str] | None = None,
              cwd: str | Path | None = None) -> Process:
        """Start ``argv`` inside host ``i``; ``env`` adds to (not replaces) this process's environment,
        with the repo root on PYTHONPATH so children import gossipnet and tests."""
        self._check_open()
        self._check_host(i)
        argv = [str(a) for a in argv]
        n = len(self._processes)
        out = self.workdir / f"h{i}-{n}.stdout"
        err = self.workdir / f"h{i}-{n}.stderr"
        full_env = dict(os.environ)
        full_env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO_ROOT), full_env.get("PYTHONPATH", "")) if p)
        full_env["PYTHONUNBUFFERED"] = "1"
        full_env.update(env or {})
        with open(out, "wb") as fout, open(err, "wb") as ferr:
            popen = subprocess.Popen(
                ["ip", "netns", "exec", self.names[i], *argv],  # ip execs argv: same pid
                stdin=subprocess.DEVNULL, stdout=fout, stderr=ferr, env=full_env,
                cwd=str(cwd or REPO_ROOT), start_new_session=True,
            )
        proc = Process(popen, argv, out, err)
        self._processes.append(proc)
        return proc

    def spawn_python(self, i: int, code: str, *args: str, env: Mapping[str, str] | None = None) -> Process:
        """Run a Python snippet (dedented) in host ``i`` with this interpreter."""
        return self.spawn(i, [sys.executable, "-c", textwrap.dedent(code), *args], env=env)

    def run(self, i: int, argv: Sequence[str], timeout: float = 30, check: bool = True) -> subprocess.CompletedProcess:
        """Run a one-off command in host ``i`` and return its result (text output)."""
        self._check_open()
        self._check_host(i)
        done = subprocess.run(["ip", "netns", "exec", self.names[i], *map(str, argv)],
                              capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        if check and done.returncode != 0:
            raise LanBoxError(f"{' '.join(map(str, argv))} in host {i} failed ({done.returncode}): "
                              f"{done.stderr.strip()}")
        return done

    # -- faults (nftables, per receiving host) --

    def set_loss(self, percent: float, hosts: Iterable[int] | None = None) -> None:
        """Drop ``percent`` of the packets each host (all, or ``hosts``) receives from the LAN.

        Applied on input only, so every packet meets the dice exactly once. Replaces earlier loss.
        """
        if not 0 <= percent <= 100:
            raise ValueError(f"loss percent must be 0..100, got {percent}")
        # numgen ... mod 10000 gives 0.01% steps; DESIGN.md's example is mod 100.
        rule = f"numgen random mod 10000 < {round(percent * 100)} counter drop"
        for i in self._hosts(hosts):
            script = "flush chain inet lanbox loss\n"
            if percent > 0:
                script += f"add rule inet lanbox loss {rule}\n"
            self._nft(i, script)

    def clear_loss(self) -> None:
        for i in sorted(self._nft_ready):
            self._nft(i, "flush chain inet lanbox loss\n")

    def partition(self, group_a: Iterable[int], group_b: Iterable[int]) -> None:
        """Cut all traffic between the two groups (both directions); adds to earlier partitions."""
        a, b = sorted(set(group_a)), sorted(set(group_b))
        if set(a) & set(b):
            raise ValueError(f"a host cannot be on both sides of a partition: {sorted(set(a) & set(b))}")
        for mine, theirs in ((a, b), (b, a)):
            if not theirs:
                continue
            saddrs = ", ".join(self.address(j) for j in theirs)
            for i in mine:
                self._nft(i, f"add rule inet lanbox partition ip saddr {{ {saddrs} }} counter drop\n")

    def heal(self) -> None:
        """Remove every partition."""
        for i in sorted(self._nft_ready):
            self._nft(i, "flush chain inet lanbox partition\n")

    def _nft(self, i: int, script: str) -> None:
        self._check_open()
        self._check_host(i)
        if i not in self._nft_ready:
            script = textwrap.dedent("""\
                table inet lanbox {
                    chain partition {
                    }
                    chain loss {
                    }
                    chain input {
                        type filter hook input priority 0; policy accept;
                        iifname "eth0" jump partition
                        iifname "eth0" jump loss
                    }
                }
                """) + script
        _cmd(["ip", "netns", "exec", self.names[i], "nft", "-f", "-"], input=script)
        self._nft_ready.add(i)

    # -- checks --

    def _hosts(self, hosts: Iterable[int] | None) -> list[int]:
        return list(range(self.hosts)) if hosts is None else sorted(set(hosts))

    def _check_host(self, i: int) -> None:
        if not isinstance(i, int) or not 0 <= i < self.hosts:
            raise IndexError(f"host {i!r} is not in this box of {self.hosts} hosts")

    def _check_open(self) -> None:
        if self._closed:
            raise LanBoxError("this LanBox is closed")


_MULTICAST_PROBE_RECV = """
import socket, struct, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("", 5999))
s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
             struct.pack("4s4s", socket.inet_aton("239.255.77.77"), socket.inet_aton(sys.argv[1])))
s.settimeout(5)
print("READY", flush=True)
data, addr = s.recvfrom(100)
print(f"GOT {data.decode()} {addr[0]} END", flush=True)  # one string: " END" ends the address
"""

_MULTICAST_PROBE_SEND = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(sys.argv[1]))
for _ in range(50):
    s.sendto(b"probe", ("239.255.77.77", 5999))
    time.sleep(0.05)
"""


PROBE_ATTEMPTS = 3  # a box that failed this many probes in a row is taken as unavailable


@functools.cache
def lanbox_available(need_nft: bool = False) -> tuple[bool, str]:
    """Can a LanBox run here (namespaces, veth, bridge, multicast across it; nft if asked)?

    Returns (True, "") or (False, reason). Probes by building a real 2-host box, once per
    process when it works. The answer is cached for every test of the run, and under
    ``CI=true`` "unavailable" fails each of them, so one probe lost to a loaded machine
    (a timeout, a late packet) must not decide it: a failed probe is tried again, and only
    ``PROBE_ATTEMPTS`` failures in a row are an answer. A missing tool or root fails at once.
    """
    missing = _missing_requirement(need_nft)
    if missing:
        return False, missing
    reasons: list[str] = []
    for _ in range(PROBE_ATTEMPTS):
        reason = _probe(need_nft)
        if reason is None:
            return True, ""
        if os.geteuid() != 0:
            return False, (f"LanBox needs root for `ip netns add` (running as uid {os.geteuid()}): "
                           f"{reason}")
        reasons.append(reason)
    return False, f"{PROBE_ATTEMPTS} probes in a row failed: " + "; ".join(reasons)


def _missing_requirement(need_nft: bool) -> str | None:
    """What this machine lacks for a LanBox, which no second probe would change."""
    if not sys.platform.startswith("linux"):
        return "LanBox needs Linux network namespaces"
    if shutil.which("ip") is None:
        return "iproute2's `ip` is not installed (apt-get install iproute2)"
    if need_nft and shutil.which("nft") is None:
        return "`nft` is not installed (apt-get install nftables)"
    return None


def _probe(need_nft: bool) -> str | None:
    """One probe: a real 2-host box, multicast from one host to the other (and nft rules
    if asked). None if it all worked, else what failed."""
    try:
        with LanBox(hosts=2) as lan:
            rx = lan.spawn_python(1, _MULTICAST_PROBE_RECV, lan.address(1))
            rx.wait_for_output("READY", timeout=10)
            lan.spawn_python(0, _MULTICAST_PROBE_SEND, lan.address(0))
            # the whole line: waiting for "GOT" alone once read it before the address was
            # written (unbuffered output comes in pieces), and failed every test in the box
            out = rx.wait_for_output(" END", timeout=10)
            if lan.address(0) not in out:
                return f"multicast probe answered from the wrong address: {out!r}"
            if need_nft:
                lan.set_loss(0)
                lan.partition([0], [1])
                lan.heal()
    except LanBoxError as exc:
        return str(exc)
    return None
