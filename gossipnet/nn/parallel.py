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
writes the batch and sends each worker its rows; each worker runs forward + backward on
them with the gradient of the *whole* batch's mean loss (so the parts add up to it) and
writes its gradients into its own row of the block. The workers then meet at a barrier
(eventfds, worker to worker: no round trip through the parent), and each sums the
gradient rows of its own slice of the parameters in a fixed order and applies the
optimizer's elementwise update (``Optimizer.update``) to that slice. The parent only
waits for every worker's "done". The sum and the update are the one-core step's
arithmetic, and dropout masks are drawn for the whole batch from the net's
(seed, step, layer) generator (each worker keeps its rows), so a step equals the
one-core step to float32 rounding (tests/test_nn_parallel.py). The previous design
summed the rows and stepped the optimizer in the parent: Adam on the fashion net's
400k parameters was 2.2 ms of serial time per step.

Lifecycle: workers are fresh interpreters (never forked: the node has threads), pin one
BLAS thread, and exit when their socket to the parent closes or their parent changes: a parent
killed with SIGKILL leaves no orphans. The shared memory is unlinked as soon as every
worker has mapped it, so nothing is left in /dev/shm whatever happens. A worker that
dies makes the step raise ``WorkerDied`` naming it, never hang, and stops the others.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import socket
import subprocess
import sys
import time
import weakref
from multiprocessing import resource_tracker
from multiprocessing.connection import Connection
from multiprocessing.shared_memory import SharedMemory

import numpy as np

from gossipnet.errors import UserError
from gossipnet.nn.loss import softmax_cross_entropy
from gossipnet.nn.net import Net
from gossipnet.nn.optim import Optimizer, decays, from_hyperparams

POLL_SECONDS = 1.0  # how often a waiting side checks that the other is still alive
MAX_MOMENTS = 2  # optimizer state arrays per parameter the block holds (Adam's m and v)
ALIGN = 16  # float32s per cache line: workers' parameter slices never share one


class WorkerDied(RuntimeError):
    """A training worker process exited mid-run (killed, out of memory, crashed)."""


def available_cores() -> int:
    """Cores this process may run on (its affinity mask, which containers and taskset set)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def check_cores(cores: object) -> int:
    """``cores`` as a positive int, or a UserError saying what to pass."""
    if isinstance(cores, bool) or not isinstance(cores, int) or cores < 1:
        raise UserError(f"--cores must be a whole number >= 1, got {cores!r}")
    return cores


def split_rows(n: int, parts: int) -> list[tuple[int, int]]:
    """Contiguous (start, stop) row ranges of a batch of ``n``, as even as possible;
    empty ranges are dropped (a batch smaller than the worker count)."""
    bounds = np.linspace(0, n, parts + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


class _Layout:
    """Where each array lives in the one shared block (offsets in bytes), and which slice
    of the flat parameter vector each worker updates."""

    def __init__(self, net: Net, workers: int, max_batch: int):
        self.names = list(net.params())
        self.shapes = [net.params()[k].shape for k in self.names]
        self.sizes = [net.params()[k].size for k in self.names]
        self.total = sum(self.sizes)
        self.starts = np.cumsum([0] + self.sizes[:-1]).tolist()
        c, h, w = net.input_shape
        self.max_batch, self.classes = max_batch, net.num_classes
        parts = {
            "params": (np.float32, (self.total,)),
            "moments": (np.float32, (MAX_MOMENTS, self.total)),
            "grads": (np.float32, (workers, self.total)),
            "x": (np.float32, (max_batch, c, h, w)),
            "y": (np.int64, (max_batch,)),
            "logits": (np.float32, (max_batch, self.classes)),
            "loss": (np.float64, (workers,)),
            "cpu": (np.float64, (workers,)),  # each worker's process CPU seconds so far
        }
        self.slots, offset = {}, 0
        for name, (dtype, shape) in parts.items():
            self.slots[name] = (dtype, shape, offset)
            offset += int(np.prod(shape)) * np.dtype(dtype).itemsize
            offset = -(-offset // 64) * 64  # cache-line aligned
        self.nbytes = offset
        cuts = [min(self.total, round(self.total * i / workers / ALIGN) * ALIGN) for i in range(workers)]
        self.slices = list(zip(cuts, cuts[1:] + [self.total]))

    def views(self, buf) -> dict[str, np.ndarray]:
        return {name: np.ndarray(shape, dtype, buffer=buf, offset=off)
                for name, (dtype, shape, off) in self.slots.items()}

    def unflatten(self, flat: np.ndarray) -> dict[str, np.ndarray]:
        return {name: flat[at : at + size].reshape(shape)
                for name, shape, size, at in zip(self.names, self.shapes, self.sizes, self.starts)}

    def segments(self, worker: int) -> list[tuple[str, int, int]]:
        """(parameter name, start, stop) in the flat vector: worker's slice, cut at parameters."""
        lo, hi = self.slices[worker]
        out = []
        for name, at, size in zip(self.names, self.starts, self.sizes):
            a, b = max(lo, at), min(hi, at + size)
            if a < b:
                out.append((name, a, b))
        return out


def _attach(name: str) -> SharedMemory:
    """Map the parent's block without registering it with the resource tracker (the
    parent owns and unlinks it; a worker's registration would make the tracker unlink
    it twice or warn of a leak at exit)."""
    register = resource_tracker.register
    resource_tracker.register = lambda *a, **k: None
    try:
        return SharedMemory(name=name)
    finally:
        resource_tracker.register = register


def _bind(net: Net, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
    """Make ``net`` compute with ``params`` and write its gradients into ``grads`` (views
    of the shared block: no copy in or out). Layers read their parameters at every pass
    and write gradients in place; names are Net's ``<layer>.<param>``."""
    for layer in net.layers:
        for k in layer.params:
            layer.params[k] = params[f"{layer.name}.{k}"]
            layer.grads[k] = grads[f"{layer.name}.{k}"]
    net.params().update(params)
    net.grads().update(grads)


class _Barrier:
    """Every worker's gradient row is written: each worker posts to every other worker's
    eventfd (semaphore mode) and takes one post from each of them off its own."""

    def __init__(self, fds: list[int], index: int, conn: Connection, parent_pid: int):
        self.mine = fds[index]
        self.others = [fd for j, fd in enumerate(fds) if j != index]
        self.conn, self.parent_pid = conn, parent_pid
        self.poller = select.poll()
        self.poller.register(self.mine, select.POLLIN)
        self.poller.register(conn.fileno(), select.POLLIN)

    def wait(self) -> bool:
        """True once every other worker has arrived; False if the parent stopped us or died
        meanwhile (a sibling died mid-step: the parent notices and stops everyone)."""
        for fd in self.others:
            os.eventfd_write(fd, 1)
        need = len(self.others)
        while need:
            try:
                os.eventfd_read(self.mine)
                need -= 1
                continue
            except BlockingIOError:
                pass
            ready = self.poller.poll(POLL_SECONDS * 1000)
            if any(fd == self.conn.fileno() for fd, _ in ready):
                return False  # the parent closed the socket or sent stop: no step is coming
            if not ready and os.getppid() != self.parent_pid:
                return False
        return True


def _worker(index: int, fd: int, barrier_fds: list[int], shm_name: str, spec, input_shape,
            workers: int, max_batch: int, parent_pid: int) -> None:
    """A worker's life: attach, then one step (forward, backward, barrier, update of its
    slice) per command until told to stop."""
    from gossipnet.nn import blas, heap

    blas.set_threads(1)
    heap.keep_freed_memory()  # a fresh process faulted every step's temporaries in (nn/heap.py)
    conn = Connection(fd)
    net = Net(spec, input_shape)
    layout = _Layout(net, workers, max_batch)
    shm = _attach(shm_name)
    v = layout.views(shm.buf)
    _bind(net, layout.unflatten(v["params"]), layout.unflatten(v["grads"][index]))
    barrier = _Barrier(barrier_fds, index, conn, parent_pid)
    lo, hi = layout.slices[index]
    mine = [(name, a, b, decays(name)) for name, a, b in layout.segments(index)]
    gsum, t1, t2 = (np.empty(hi - lo, np.float32) for _ in range(3))
    opt: Optimizer | None = None
    rows = None
    conn.send("ready")
    try:
        while True:
            while not conn.poll(POLL_SECONDS):
                if os.getppid() != parent_pid:
                    return  # the parent is gone (its socket end may live on in a grandchild)
            msg = conn.recv()
            if msg is None:
                return
            n, active, start, stop, seed, step, t, hyper, moment_names = msg
            if index < active:
                net.set_rng(seed, step, rows=(start, stop, n))
                logits = net.forward(v["x"][start:stop], train=True)
                loss, dlogits = softmax_cross_entropy(logits, v["y"][start:stop])
                dlogits *= np.float32((stop - start) / n)  # d(mean over the whole batch)
                net.backward(dlogits)  # into our row of the block
                v["logits"][start:stop] = logits
                v["loss"][index] = loss * (stop - start)
            if not barrier.wait():
                return
            if opt is None or opt.hyperparams() != hyper:
                opt = from_hyperparams(hyper, {})
            opt.t = t
            rows = v["grads"][:active]
            for name, a, b, decay in mine:
                g = gsum[a - lo : b - lo]
                if active == 1:
                    np.copyto(g, rows[0, a:b])
                else:
                    np.add(rows[0, a:b], rows[1, a:b], out=g)
                    for r in range(2, active):  # fixed order: the sum is reproducible
                        g += rows[r, a:b]
                moments = {m: v["moments"][k, a:b] for k, m in enumerate(moment_names)}
                opt.update(v["params"][a:b], g, moments, decay, (t1[a - lo : b - lo], t2[a - lo : b - lo]))
            v["cpu"][index] = time.process_time()
            conn.send(index)
    except (EOFError, OSError, KeyboardInterrupt):
        return  # the parent closed the socket or died
    finally:
        v = rows = net = None  # views of the block: drop them before unmapping it
        try:
            shm.close()
        except BufferError:
            pass  # a view is still referenced; the mapping goes with the process


def _main() -> None:
    """Entry point of ``python -m gossipnet.nn.parallel <json args>`` (a worker process)."""
    a = json.loads(sys.argv[1])
    _worker(a["index"], a["fd"], a["barrier"], a["shm"], a["spec"], tuple(a["input_shape"]),
            a["workers"], a["max_batch"], a["parent"])


class DataParallel:
    """Trains a net on ``workers`` processes: inside ``with dp.session(optimizer):``,
    ``dp.step(x, y, seed, step, optimizer)`` is the batch's forward, backward and
    optimizer update, as ``Net.loss_and_grads`` + ``optimizer.step`` would do it on one
    core with the same (seed, step) dropout masks.

    ``workers == 1`` runs in this process (no processes, no shared memory).
    """

    def __init__(self, net: Net, workers: int, max_batch: int):
        self.net, self.workers = net, check_cores(workers)
        self.max_batch = max_batch
        self._procs: list = []
        self._conns: list[Connection] = []
        self._finalizer = None
        self._session: Optimizer | None = None
        if self.workers == 1:
            return
        self.layout = _Layout(net, self.workers, max_batch)
        self._shm = self._shm_handle = SharedMemory(create=True, size=self.layout.nbytes)
        self._v = self.layout.views(self._shm.buf)
        barrier = [os.eventfd(0, os.EFD_SEMAPHORE | os.EFD_NONBLOCK | os.EFD_CLOEXEC)
                   for _ in range(self.workers)]
        try:
            for i in range(self.workers):
                self._start(i, barrier)
            for i in range(self.workers):
                self._recv(i)  # "ready": the worker has mapped the block
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
        """Launch worker ``i`` as ``python -m gossipnet.nn.parallel``, talking over a socket
        pair. Not multiprocessing's spawn: that re-imports the parent's __main__, which a
        script without an ``if __name__ == "__main__"`` guard would run again."""
        ours, theirs = socket.socketpair()
        args = {"index": i, "fd": theirs.fileno(), "barrier": barrier, "shm": self._shm.name,
                "spec": self.net.spec, "input_shape": list(self.net.input_shape),
                "workers": self.workers, "max_batch": self.max_batch, "parent": os.getpid()}
        env = dict(os.environ)
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
        try:
            proc = subprocess.Popen([sys.executable, "-m", "gossipnet.nn.parallel", json.dumps(args)],
                                    pass_fds=[theirs.fileno(), *barrier], env=env, stdin=subprocess.DEVNULL)
        finally:
            theirs.close()
        self._procs.append(proc)
        self._conns.append(Connection(ours.detach()))

    def _recv(self, i: int):
        """Worker ``i``'s next message; WorkerDied (after stopping every worker) if any
        worker is gone: the others would wait for it at the barrier forever."""
        conn = self._conns[i]
        while True:
            try:
                if conn.poll(POLL_SECONDS):
                    return conn.recv()
            except (EOFError, OSError):
                raise self._died(i) from None
            dead = next((j for j, p in enumerate(self._procs) if p.poll() is not None), None)
            if dead is not None:
                raise self._died(dead)

    def _send(self, i: int, msg) -> None:
        try:
            self._conns[i].send(msg)
        except OSError:
            raise self._died(i) from None

    def _died(self, i: int) -> WorkerDied:
        proc = self._procs[i]
        try:
            proc.wait(POLL_SECONDS)
        except subprocess.TimeoutExpired:
            pass
        err = WorkerDied(f"training worker {i} (pid {proc.pid}) died with exit code "
                         f"{proc.returncode}; the node cannot train on {self.workers} cores. "
                         "Was it killed or out of memory? Restart, or use --cores 1")
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
            self._session = None
            if self._v is not None:  # not closed meanwhile
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
            self.net.set_rng(seed, step)
            loss, logits = self.net.loss_and_grads(x, y)
            optimizer.step(self.net.grads())
            return loss, logits
        self._check_alive()
        if self._session is not optimizer:
            raise RuntimeError("DataParallel.step runs inside `with dp.session(optimizer):`")
        self.net.check_input(x)
        n = len(x)
        if n > self.max_batch:
            raise UserError(f"batch of {n} is larger than the {self.max_batch} the workers were sized for")
        v = self._v
        v["x"][:n] = x
        v["y"][:n] = y
        rows = split_rows(n, self.workers)
        hyper, moments = optimizer.hyperparams(), list(optimizer.state)
        for i in range(self.workers):
            a, b = rows[i] if i < len(rows) else (0, 0)
            self._send(i, (n, len(rows), a, b, seed, step, optimizer.t + 1, hyper, moments))
        for i in range(self.workers):
            self._recv(i)
        optimizer.t += 1
        loss = float(v["loss"][: len(rows)].sum()) / n
        return loss, v["logits"][:n].copy()

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


def _shutdown(procs, conns) -> None:
    for conn in conns:
        try:
            conn.send(None)
        except (OSError, ValueError):
            pass
    for p in procs:
        try:
            p.wait(2.0)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(2.0)
    for conn in conns:
        conn.close()


if __name__ == "__main__":
    _main()
