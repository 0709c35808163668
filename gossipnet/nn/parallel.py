"""Data parallelism inside one node: worker processes split each batch and sum gradients.

Why processes and not BLAS threads: OpenBLAS's threads meet at every GEMM, and this
engine's GEMMs are small (16-64 output columns), so two BLAS threads ran the CIFAR net
at 0.35x one thread (issue 17: 613 vs 1,754 images/s, idle machine). Splitting the
*batch* instead gives each core a whole forward and backward pass to itself with one
BLAS thread; the cores only meet once per step, to sum gradients. Why processes and not
Python threads: the im2col copies, pooling and the per-layer Python glue hold the GIL,
and the node's event loop shares that GIL; a worker process holds none of it.

One step: the parent writes the parameters and the batch into shared memory
(``multiprocessing.shared_memory``), each worker runs forward + backward on its rows
with the gradient of the *whole* batch's mean loss (so the parts add up to it), writes
its gradients into its own row of a shared block, and the parent sums the rows in a
fixed order. Dropout masks are drawn for the whole batch from the net's
(seed, step, layer) generator and each worker keeps its rows, so a step equals the
one-core step to float32 rounding (tests/test_nn_parallel.py).

Lifecycle: workers are fresh interpreters (never forked: the node has threads), pin one
BLAS thread, and exit when their socket to the parent closes or their parent changes: a parent
killed with SIGKILL leaves no orphans. The shared memory is unlinked as soon as every
worker has mapped it, so nothing is left in /dev/shm whatever happens. A worker that
dies makes the next step raise ``WorkerDied`` naming it, never hang.
"""

from __future__ import annotations

import json
import os
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

POLL_SECONDS = 1.0  # how often a waiting side checks that the other is still alive


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
    """Where each array lives in the one shared block (offsets in bytes)."""

    def __init__(self, net: Net, workers: int, max_batch: int):
        self.names = list(net.params())
        self.shapes = [net.params()[k].shape for k in self.names]
        self.sizes = [net.params()[k].size for k in self.names]
        self.total = sum(self.sizes)
        c, h, w = net.input_shape
        self.max_batch, self.classes = max_batch, net.num_classes
        parts = {
            "params": (np.float32, (self.total,)),
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

    def views(self, buf) -> dict[str, np.ndarray]:
        return {name: np.ndarray(shape, dtype, buffer=buf, offset=off)
                for name, (dtype, shape, off) in self.slots.items()}

    def unflatten(self, flat: np.ndarray) -> dict[str, np.ndarray]:
        out, at = {}, 0
        for name, shape, size in zip(self.names, self.shapes, self.sizes):
            out[name] = flat[at : at + size].reshape(shape)
            at += size
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


def _worker(index: int, fd: int, shm_name: str, spec, input_shape, workers: int,
            max_batch: int, parent_pid: int) -> None:
    """A worker's life: attach, then one forward + backward per command until told to stop."""
    from gossipnet.nn import blas, heap

    blas.set_threads(1)
    heap.keep_freed_memory()  # a fresh process faulted every step's temporaries in (nn/heap.py)
    conn = Connection(fd)
    net = Net(spec, input_shape)
    layout = _Layout(net, workers, max_batch)
    shm = _attach(shm_name)
    v = layout.views(shm.buf)
    params = layout.unflatten(v["params"])
    grads_out = layout.unflatten(v["grads"][index])
    conn.send("ready")
    try:
        while True:
            while not conn.poll(POLL_SECONDS):
                if os.getppid() != parent_pid:
                    return  # the parent is gone (its socket end may live on in a grandchild)
            msg = conn.recv()
            if msg is None:
                return
            n, start, stop, seed, step = msg
            for name, p in net.params().items():
                p[...] = params[name]
            net.set_rng(seed, step, rows=(start, stop, n))
            logits = net.forward(v["x"][start:stop], train=True)
            loss, dlogits = softmax_cross_entropy(logits, v["y"][start:stop])
            dlogits *= np.float32((stop - start) / n)  # d(mean over the whole batch)
            net.backward(dlogits)
            for name, g in net.grads().items():
                grads_out[name][...] = g
            v["logits"][start:stop] = logits
            v["loss"][index] = loss * (stop - start)
            v["cpu"][index] = time.process_time()
            conn.send(index)
    except (EOFError, OSError, KeyboardInterrupt):
        return  # the parent closed the socket or died
    finally:
        del v, params, grads_out
        shm.close()


def _main() -> None:
    """Entry point of ``python -m gossipnet.nn.parallel <json args>`` (a worker process)."""
    import json
    import sys

    a = json.loads(sys.argv[1])
    _worker(a["index"], a["fd"], a["shm"], a["spec"], tuple(a["input_shape"]), a["workers"],
            a["max_batch"], a["parent"])


class DataParallel:
    """Computes a net's gradients on ``workers`` processes; ``loss_and_grads`` fills
    ``net.grads()`` as ``Net.loss_and_grads`` would, from the same (seed, step) masks.

    ``workers == 1`` runs in this process (no processes, no shared memory).
    """

    def __init__(self, net: Net, workers: int, max_batch: int):
        self.net, self.workers = net, check_cores(workers)
        self.max_batch = max_batch
        self._procs: list = []
        self._conns: list[Connection] = []
        if self.workers == 1:
            return
        self.layout = _Layout(net, self.workers, max_batch)
        self._shm = self._shm_handle = SharedMemory(create=True, size=self.layout.nbytes)
        self._v = self.layout.views(self._shm.buf)
        self._params = self.layout.unflatten(self._v["params"])
        try:
            for i in range(self.workers):
                self._start(i)
            for i in range(self.workers):
                self._recv(i)  # "ready": the worker has mapped the block
        except BaseException:
            self.close()
            raise
        finally:
            # Every worker holds a mapping now (or we failed): drop the name so nothing
            # outlives us in /dev/shm, even after SIGKILL.
            self._shm_handle.unlink()
        self._finalizer = weakref.finalize(self, _shutdown, self._procs, self._conns)

    def _start(self, i: int) -> None:
        """Launch worker ``i`` as ``python -m gossipnet.nn.parallel``, talking over a socket
        pair. Not multiprocessing's spawn: that re-imports the parent's __main__, which a
        script without an ``if __name__ == "__main__"`` guard would run again."""
        ours, theirs = socket.socketpair()
        args = {"index": i, "fd": theirs.fileno(), "shm": self._shm.name, "spec": self.net.spec,
                "input_shape": list(self.net.input_shape), "workers": self.workers,
                "max_batch": self.max_batch, "parent": os.getpid()}
        env = dict(os.environ)
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
        try:
            proc = subprocess.Popen([sys.executable, "-m", "gossipnet.nn.parallel", json.dumps(args)],
                                    pass_fds=[theirs.fileno()], env=env, stdin=subprocess.DEVNULL)
        finally:
            theirs.close()
        self._procs.append(proc)
        self._conns.append(Connection(ours.detach()))

    def _recv(self, i: int):
        conn, proc = self._conns[i], self._procs[i]
        while True:
            try:
                if conn.poll(POLL_SECONDS):
                    return conn.recv()
            except (EOFError, OSError):
                pass
            else:
                if proc.poll() is None:
                    continue
            raise self._died(i)

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
        return WorkerDied(f"training worker {i} (pid {proc.pid}) died with exit code "
                          f"{proc.returncode}; the node cannot train on {self.workers} cores. "
                          "Was it killed or out of memory? Restart, or use --cores 1")

    def loss_and_grads(self, x: np.ndarray, y: np.ndarray, seed: int, step: int) -> tuple[float, np.ndarray]:
        """One training forward + backward of the batch: the mean loss and the logits."""
        if self.workers == 1:
            self.net.set_rng(seed, step)
            return self.net.loss_and_grads(x, y)
        if self._finalizer is None or not self._finalizer.alive:
            raise WorkerDied("the training workers were shut down; create a new DataParallel")
        self.net.check_input(x)
        n = len(x)
        if n > self.max_batch:
            raise UserError(f"batch of {n} is larger than the {self.max_batch} the workers were sized for")
        v = self._v
        for name, p in self.net.params().items():
            self._params[name][...] = p
        v["x"][:n] = x
        v["y"][:n] = y
        rows = split_rows(n, self.workers)
        for i, (a, b) in enumerate(rows):
            self._send(i, (n, a, b, seed, step))
        for i in range(len(rows)):
            self._recv(i)
        g = v["grads"]
        grads = self.net.grads()
        for name, (a, size) in zip(self.layout.names, self._offsets()):
            out = grads[name].reshape(-1)
            np.copyto(out, g[0, a : a + size])
            for i in range(1, len(rows)):  # fixed order: the sum is reproducible
                out += g[i, a : a + size]
        loss = float(v["loss"][: len(rows)].sum()) / n
        return loss, v["logits"][:n].copy()

    def _offsets(self):
        at = 0
        for size in self.layout.sizes:
            yield at, size
            at += size

    def close(self) -> None:
        """Stop the workers and release the shared memory (idempotent)."""
        fin = getattr(self, "_finalizer", None)
        if fin is not None:
            fin()
        else:
            _shutdown(self._procs, self._conns)
        if self.workers > 1 and getattr(self, "_shm", None) is not None:
            self._v = self._params = None
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
