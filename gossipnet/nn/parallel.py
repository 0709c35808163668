"""Data parallelism inside one node: worker processes split each batch, and each updates
its slice of the parameters.

Why processes and not BLAS threads: OpenBLAS's threads meet at every GEMM, and this
engine's GEMMs are small (16-64 output columns), so two BLAS threads ran the CIFAR net
at 0.35x one thread (issue 17: 613 vs 1,754 images/s, idle machine). Splitting the
*batch* instead gives each core a whole forward and backward pass to itself with one
BLAS thread; the cores only meet once per step. Why processes and not Python threads:
the im2col copies, pooling and the per-layer Python glue hold the GIL, and the node's
event loop shares that GIL; a worker process holds none of it.

One step (a reduce-scatter, so nothing in it is serial): during a ``session`` the
parameters and the optimizer's moments live in one shared-memory block
(``multiprocessing.shared_memory``), which the workers' nets use in place. The parent
writes the batch and sends every worker the step; each worker takes its rows of it and
runs forward + backward on them with the gradient of the *whole* batch's mean loss (so
the parts add up to it) and writes its gradients into its own row of the block. The
workers then meet at a barrier (eventfds, worker to worker: no round trip through the
parent), and each sums the gradient rows of its own slice of the parameters in a fixed
order and applies the optimizer's elementwise update (``Optimizer.update``) to that
slice; a second barrier and the step is whole. The sum and the update are the one-core step's arithmetic, and
dropout masks are drawn for the whole batch from the net's (seed, step, layer)
generator (each worker keeps its rows), so a step equals the one-core step to float32
rounding (tests/test_nn_parallel.py). The previous design summed the rows and stepped
the optimizer in the parent: Adam on the fashion net's 400k parameters was 2.2 ms of
serial time per step.

Three things keep the cores busy between steps (issue 17, measured in docs/RESULTS.md):

* ``run`` keeps three steps in flight (three batch slots in the block): the batches
  after this one are written and sent while it trains, so a worker goes from its update
  straight to the next forward pass, and the parent's wake-up, its copy of the logits
  and the caller's next batch are off the workers' path. The worker that reaches the
  next step's first barrier first (it would wait there anyway) tells the parent the
  step before is done; a worker with no next command tells it at once. Waking the parent
  cost the sender 0.15-0.4 ms, which lands there on time it would have waited. Since
  the parent hears of step k only near the end of step k + 1, two in flight left it the
  last update of k + 1 to send k + 2: the workers often found no command and slept, and
  each send that woke one cost the parent ~85 us instead of ~15 (measured per send).
* The batch is split in proportion to each worker's measured speed (a moving average
  of its seconds per row, in the block): a core that is shared, preempted by the parent
  or simply slower on a VM gets fewer rows, so both halves reach the barrier together.
  The workers split each step themselves when they start it, after the step before was
  timed: here one core's speed against the other's drifts over seconds, and a split
  made when the step was sent, three steps earlier, waited longer. The rows only decide
  who computes what, never the arithmetic; the split can change every step, so two
  multi-core runs agree to float32 rounding, not bit for bit.
* A worker that reaches a barrier first spins for 0.2 ms before it sleeps: the other
  usually arrives within that, and a sleeping process woke up late enough here to cost
  a tenth of the speed-up (measured with and without).

This module is the parent's side; ``nn/parallel_worker.py`` is what runs on each core.
Lifecycle: workers are fresh interpreters (never forked: the node has threads), pin one
BLAS thread, and exit when their socket to the parent closes or their parent changes: a parent
killed with SIGKILL leaves no orphans. The shared memory's pages are reserved when it is
made, so a /dev/shm without room for them is a UserError saying so, not a SIGBUS at the
first batch; it is unlinked as soon as every worker has mapped it, so nothing is left in
/dev/shm whatever happens. A worker that dies makes the step raise ``WorkerDied`` naming
it, never hang, and stops the others.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import math
import os
import select
import socket
import subprocess
import sys
import weakref
from collections import deque
from collections.abc import Iterable, Iterator
from multiprocessing.connection import Connection
from multiprocessing.reduction import ForkingPickler
from multiprocessing.shared_memory import SharedMemory

import numpy as np

from gossipnet.errors import UserError
from gossipnet.nn.net import Net
from gossipnet.nn.optim import Optimizer
from gossipnet.nn.parallel_worker import IN_FLIGHT, MAX_MOMENTS, POLL_SECONDS, Layout, speeds_of
from gossipnet.nn.train import one_core_step, one_core_steps

log = logging.getLogger(__name__)


# Workers beyond the cores only take turns (3 on 2 cores: 1.3x the step time of 2); far
# beyond them a mistyped --cores would start hundreds of processes. Refused past this.
MAX_WORKERS_PER_CORE = 4


class WorkerDied(RuntimeError):
    """A training worker process exited mid-run (killed, out of memory, crashed). ``what``
    says which one and how, without the advice of the whole message (a node that restarts
    its workers logs its own)."""

    def __init__(self, message: str, what: str | None = None):
        super().__init__(message)
        self.what = what or message


def several_cores_supported() -> bool:
    """Whether workers can run here: they meet at eventfd barriers and notice their parent
    hanging up by ``POLLRDHUP``, both Linux's alone."""
    return hasattr(os, "eventfd") and hasattr(select, "POLLRDHUP")


def available_cores() -> int:
    """Cores this process may run on (its affinity mask, which containers and taskset set);
    1 where workers cannot run (not Linux), so the default never asks for them."""
    if not several_cores_supported():
        return 1
    return max(1, len(os.sched_getaffinity(0)))


def check_cores(cores: object) -> int:
    """``cores`` as a positive int, or a UserError saying what to pass."""
    if isinstance(cores, bool) or not isinstance(cores, int) or cores < 1:
        raise UserError(f"--cores must be a whole number >= 1, got {cores!r}")
    if cores > 1 and not several_cores_supported():
        raise UserError(f"--cores {cores}: training on several cores needs Linux (the workers meet "
                        f"at eventfd barriers), and this is {sys.platform}; use --cores 1")
    return cores


class DataParallel:
    """Trains a net on ``workers`` processes: inside ``with dp.session(optimizer):``,
    ``dp.step(x, y, seed, step, optimizer)`` is the batch's forward, backward and
    optimizer update, as ``Net.loss_and_grads`` + ``optimizer.step`` would do it on one
    core with the same (seed, step) dropout masks; ``dp.run(batches, optimizer)`` is the
    same for a stream of batches, with the next one sent while this one trains.

    ``workers == 1`` runs in this process (no processes, no shared memory).
    """

    def __init__(self, net: Net, workers: int, max_batch: int, balance: bool = True):
        """``balance``: the workers split each batch by their measured speeds; False keeps
        the split even (the control in benchmarks/data_parallel.py)."""
        self.net, self.workers = net, check_cores(workers)
        self.max_batch, self.balance = max_batch, balance
        self._procs: list = []
        self._conns: list[Connection] = []
        self._ready = select.poll()  # every worker's socket: any of them may report a step done
        self._by_fd: dict[int, int] = {}  # socket fd -> worker index
        self._finalizer = None
        self._session: Optimizer | None = None
        self._hyper: dict | None = None  # the optimizer's hyperparameters the workers hold
        self._sent = 0  # steps sent, numbered from 1 (step k's batch is in slot k % IN_FLIGHT)
        self._done = 0  # the last step every worker is past (the highest step any reported)
        # (slot, batch size, number) of the steps sent and not yet collected
        self._in_flight: deque[tuple[int, int, int]] = deque()
        # each worker's (start, stop) and compute seconds in the last step collected
        self._last_rows: np.ndarray | None = None
        self._last_busy: np.ndarray | None = None
        if self.workers == 1:
            return
        cores = available_cores()
        if self.workers > MAX_WORKERS_PER_CORE * cores:
            raise UserError(f"--cores {self.workers}: this process may run on {cores} core"
                            f"{'' if cores == 1 else 's'}, and more than {MAX_WORKERS_PER_CORE} "
                            "training workers per core only take turns (each is a Python process "
                            f"of its own, ~50 MB); use --cores {cores}")
        if self.workers > cores:
            # Allowed (the tests run 3 workers on 2 cores), but slow: workers take turns on
            # a core, and one that spins at a barrier holds a core that another one needs.
            log.warning("training on %d worker processes, but this process may run on only %d "
                        "core%s: the workers will take turns and wait for each other at every step "
                        "(3 workers on 2 cores took 1.3x as long per step as 2). Use --cores %d",
                        self.workers, cores, "" if cores == 1 else "s", cores)
        self.layout = Layout(net, self.workers, max_batch, IN_FLIGHT)
        self._shm = self._shm_handle = _shared_block(self.layout.nbytes, self.workers, max_batch,
                                                     net.input_shape)
        self._v = self.layout.views(self._shm.buf)
        barrier = [os.eventfd(0, os.EFD_SEMAPHORE | os.EFD_NONBLOCK | os.EFD_CLOEXEC)
                   for _ in range(self.workers)]
        try:
            for i in range(self.workers):
                self._start(i, barrier)
            started = 0
            while started < self.workers:  # each sends one "ready" once it has mapped the block
                started += len(self._reports())
        except BaseException:
            self.close()
            raise
        finally:
            # Every worker holds a mapping now (or we failed): drop the name so nothing
            # outlives us in /dev/shm, even after SIGKILL. The eventfds are theirs alone.
            self._shm_handle.unlink()
            for fd in barrier:
                os.close(fd)
        self._finalizer = weakref.finalize(self, _shutdown, self._procs, self._conns)

    def _start(self, i: int, barrier: list[int]) -> None:
        """Launch worker ``i`` as ``python -m gossipnet.nn.parallel_worker``, talking over a socket
        pair. Not multiprocessing's spawn: that re-imports the parent's __main__, which a
        script without an ``if __name__ == "__main__"`` guard would run again."""
        ours, theirs = socket.socketpair()
        args = {"index": i, "fd": theirs.fileno(), "barrier": barrier, "shm": self._shm.name,
                "spec": self.net.spec, "input_shape": list(self.net.input_shape),
                "workers": self.workers, "max_batch": self.max_batch, "slots": IN_FLIGHT,
                "parent": os.getpid(), "balance": self.balance}
        env = dict(os.environ)
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
        try:
            proc = subprocess.Popen([sys.executable, "-m", "gossipnet.nn.parallel_worker", json.dumps(args)],
                                    pass_fds=[theirs.fileno(), *barrier], env=env, stdin=subprocess.DEVNULL)
        finally:
            theirs.close()
        self._procs.append(proc)
        self._conns.append(Connection(ours.detach()))
        self._ready.register(self._conns[-1].fileno(), select.POLLIN)
        self._by_fd[self._conns[-1].fileno()] = i

    def _reports(self, wait: bool = True) -> list:
        """A message from each worker that has one, once one has (or at once, without
        ``wait``); WorkerDied (after stopping every worker) if any worker is gone: the
        others would wait for it at the barrier forever."""
        while True:
            # a poll object made once: Connection.poll builds a selector per call, which
            # was a third of the parent's time per step
            ready = self._ready.poll(POLL_SECONDS * 1000 if wait else 0)
            if ready or not wait:
                out = []
                for fd, _ in ready:
                    i = self._by_fd[fd]
                    try:
                        out.append(self._conns[i].recv())
                    except (EOFError, OSError):
                        raise self._died(i) from None
                return out
            dead = next((j for j, p in enumerate(self._procs) if p.poll() is not None), None)
            if dead is not None:
                raise self._died(dead)

    def _send(self, i: int, pickled: bytes) -> None:
        """A command, pickled once for every worker, to worker ``i``: what Connection.send
        would write, so the worker's recv() reads it."""
        try:
            self._conns[i].send_bytes(pickled)
        except OSError:
            raise self._died(i) from None

    def _died(self, i: int) -> WorkerDied:
        proc = self._procs[i]
        try:
            proc.wait(POLL_SECONDS)
        except subprocess.TimeoutExpired:
            pass
        what = f"training worker {i} (pid {proc.pid}) died with exit code {proc.returncode}"
        err = WorkerDied(f"{what}; the node cannot train on {self.workers} cores. "
                         "Was it killed or out of memory? Restart, or use --cores 1", what)
        self._stop_workers()
        return err

    def _stop_workers(self) -> None:
        if self._finalizer is not None:
            self._finalizer()
        else:
            _shutdown(self._procs, self._conns)

    @contextlib.contextmanager
    def session(self, optimizer: Optimizer):
        """Steps with ``optimizer`` run inside: the net's parameters and the optimizer's
        moments move into the shared block on entry and back on exit (also after an
        error), so between sessions the net and the optimizer are the truth, which merges,
        checkpoints and snapshots read and write. A worker that died in the middle of an
        update leaves that step's update on part of the parameters."""
        if self.workers == 1:
            yield self
            return
        self._check_alive()
        if set(optimizer.params) != set(self.layout.names) or len(optimizer.state) > MAX_MOMENTS:
            raise ValueError("the optimizer must update exactly this net's parameters")
        v, flat = self._v, self.layout.unflatten
        for name, p in flat(v["params"]).items():
            p[...] = self.net.params()[name]
        for k, moments in enumerate(optimizer.state.values()):
            for name, arr in flat(v["moments"][k]).items():
                arr[...] = moments[name]
        self._session = optimizer
        try:
            yield self
        finally:
            try:
                if self._finalizer.alive:
                    self._finish()
            finally:
                self._session = None
                self._in_flight.clear()
                self._copy_back(optimizer)

    def _copy_back(self, optimizer: Optimizer) -> None:
        """The block's parameters and moments into the net and the optimizer."""
        v, flat = self._v, self.layout.unflatten
        if v is None:  # closed meanwhile
            return
        for name, p in flat(v["params"]).items():
            self.net.params()[name][...] = p
        for k, moments in enumerate(optimizer.state.values()):
            for name, arr in flat(v["moments"][k]).items():
                moments[name][...] = arr

    def _check_alive(self) -> None:
        if self._finalizer is None or not self._finalizer.alive:
            raise WorkerDied("the training workers were shut down; create a new DataParallel")

    def step(self, x: np.ndarray, y: np.ndarray, seed: int, step: int,
             optimizer: Optimizer) -> tuple[float, np.ndarray]:
        """One training step on the batch: the mean loss and the logits."""
        if self.workers == 1:
            return one_core_step(self.net, optimizer, x, y, seed, step)
        self._submit(x, y, seed, step, optimizer)
        return self._collect()

    def run(self, batches: Iterable[tuple[np.ndarray, np.ndarray, int, int]],
            optimizer: Optimizer) -> Iterator[tuple[float, np.ndarray]]:
        """``step`` for each (x, y, seed, step) of ``batches``, yielding each one's (loss,
        logits) in order. The next batch is taken from ``batches`` and sent before this
        one's result is awaited, so the workers go from one step to the next without
        waiting for this process: what ``batches`` sets on ``optimizer`` (its learning
        rate) before it yields a batch applies to that batch."""
        if self.workers == 1:
            yield from one_core_steps(self.net, optimizer, batches)
            return
        for x, y, seed, step in batches:
            self._submit(x, y, seed, step, optimizer)
            if len(self._in_flight) == IN_FLIGHT:
                yield self._collect()
        while self._in_flight:
            yield self._collect()

    def _submit(self, x: np.ndarray, y: np.ndarray, seed: int, step: int, optimizer: Optimizer) -> None:
        """Write the batch into a free slot of the block and send every worker its rows."""
        self._check_alive()
        if self._session is not optimizer:
            raise RuntimeError("DataParallel.step runs inside `with dp.session(optimizer):`")
        if len(self._in_flight) >= IN_FLIGHT:
            raise RuntimeError(f"at most {IN_FLIGHT} steps in flight: collect one first")
        self.net.check_batch(x)
        n = len(x)
        if n > self.max_batch:
            raise UserError(f"batch of {n} is larger than the {self.max_batch} the workers were sized for")
        slot = self._sent % IN_FLIGHT
        v = self._v
        v["x"][slot, :n] = x
        v["y"][slot, :n] = y
        hyper, moments = optimizer.hyperparams(), list(optimizer.state)
        changed = hyper if hyper != self._hyper else None  # the workers keep the last ones
        optimizer.t += 1
        command = bytes(ForkingPickler.dumps(
            (self._sent + 1, slot, n, seed, step, optimizer.t, changed, moments)))
        for i in range(self.workers):  # each takes its rows (parallel_worker._worker)
            self._send(i, command)
        self._hyper = hyper
        self._sent += 1
        self._in_flight.append((slot, n, self._sent))

    def _collect(self) -> tuple[float, np.ndarray]:
        """The oldest step in flight, once every worker has updated its slice: its mean
        loss and (a copy of) its logits."""
        slot, n, seq = self._in_flight[0]
        # read what is there even when the step is known done: two workers may report the
        # same step, and a socket nobody reads would fill up and block its worker
        wait = False
        while True:
            self._done = max(self._done, *self._reports(wait), 0)
            if self._done >= seq:
                break
            wait = True
        self._in_flight.popleft()
        v = self._v
        self._last_rows, self._last_busy = v["rows"][slot].copy(), v["busy"][slot].copy()
        return sum(v["loss"][slot].tolist()) / n, v["logits"][slot, :n].copy()

    def _finish(self) -> None:
        """Wait out the steps still in flight (a caller stopped reading ``run``)."""
        while self._in_flight:
            self._collect()

    @property
    def last_split(self) -> tuple[tuple[int, int], ...]:
        """Each worker's (start, stop) rows of the last step collected, workers without rows
        left out; () before the first."""
        if self._last_rows is None:
            return ()
        return tuple((int(a), int(b)) for a, b in self._last_rows if b > a)

    @property
    def last_busy(self) -> tuple[float, ...]:
        """Seconds each worker spent on its rows in the last step collected (0.0 for a worker
        without rows); () before the first. The spread is what the first barrier waited."""
        return () if self._last_busy is None else tuple(float(t) for t in self._last_busy)

    def row_seconds(self) -> list[float] | None:
        """Each worker's seconds per row, the moving average the next split follows; None
        until every worker has been timed (or with one worker)."""
        if self.workers == 1 or self._v is None or speeds_of(self._v["row_seconds"]) is None:
            return None
        return [float(t) for t in self._v["row_seconds"]]

    def close(self) -> None:
        """Stop the workers and release the shared memory (idempotent)."""
        self._stop_workers()
        if self.workers > 1 and getattr(self, "_shm", None) is not None:
            self._v = None
            try:
                self._shm.close()
            except BufferError:
                pass  # a caller still holds a view; the mapping goes with the process
            self._shm = None

    def cpu_seconds(self) -> float:
        """CPU seconds the workers have used, as of their last step (0 with one core)."""
        return float(self._v["cpu"].sum()) if self.workers > 1 and self._v is not None else 0.0

    def alive(self) -> bool:
        return bool(self._procs) and all(p.poll() is None for p in self._procs)

    def pids(self) -> list[int]:
        return [p.pid for p in self._procs]


def _shared_block(nbytes: int, workers: int, max_batch: int, input_shape) -> SharedMemory:
    """A new shared-memory block of ``nbytes`` whose pages are all reserved now.

    /dev/shm is a tmpfs that hands out pages only when they are first written: a block
    larger than the room left in it (64 MB in a default Docker container) is created
    without complaint, and the first write past the room kills the process with SIGBUS
    mid-training. Reserving the pages here (``posix_fallocate``) turns that into a
    UserError before any worker starts."""
    try:
        shm = SharedMemory(create=True, size=nbytes)
    except OSError as exc:  # no /dev/shm in this container, out of file descriptors, ...
        raise UserError(f"training on {workers} cores needs shared memory for its workers, and "
                        f"making it failed: {exc}. Is /dev/shm mounted and writable? Otherwise "
                        "use --cores 1") from None
    fd = getattr(shm, "_fd", -1)  # the block's file descriptor (CPython's POSIX SharedMemory)
    if fd < 0:
        return shm
    try:
        os.posix_fallocate(fd, 0, nbytes)
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.ENOMEM, errno.EFBIG):
            return shm  # this file system cannot reserve pages: go on as before
        try:
            st = os.fstatvfs(fd)
            room = f", and it has {st.f_bavail * st.f_frsize / 2**20:.0f} MB free"
        except OSError:
            room = ""
        shm.close()
        shm.unlink()
        need = nbytes / 2**20
        raise UserError(
            f"training on {workers} cores needs {need:.0f} MB of shared memory (/dev/shm) for "
            f"batches of {max_batch} inputs of shape {tuple(input_shape)}{room} ({exc.strerror}). "
            f"Give it more room (in Docker: --shm-size={(math.ceil(need / 64) + 1) * 64}m), "
            "train on smaller images or batches, or use --cores 1") from None
    return shm


def _shutdown(procs, conns) -> None:
    """Stop every worker: a worker waiting for its next command reads the None; one
    waiting at a barrier wakes only for its socket hanging up, so close them too."""
    for conn in conns:
        try:
            conn.send(None)
        except (OSError, ValueError):
            pass
        conn.close()
    for p in procs:
        try:
            p.wait(2.0)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(2.0)
