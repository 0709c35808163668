"""One data-parallel training worker: the process that runs on each core.

``nn/parallel.py`` (the parent side) describes the step; this is the other side: map the
shared block, compute on it in place (``bind``), meet the other workers at a barrier,
update this worker's slice of the parameters, meet them again. Started as
``python -m gossipnet.nn.parallel_worker <json args>``, a fresh interpreter.
"""

from __future__ import annotations

import json
import os
import select
import sys
import time
from multiprocessing import resource_tracker
from multiprocessing.connection import Connection
from multiprocessing.shared_memory import SharedMemory

import numpy as np

from gossipnet.nn.loss import softmax_cross_entropy
from gossipnet.nn.net import Net
from gossipnet.nn.optim import Optimizer, decays, from_hyperparams

POLL_SECONDS = 1.0  # how often a waiting side checks that the other is still alive
MAX_MOMENTS = 2  # optimizer state arrays per parameter the block holds (Adam's m and v)
IN_FLIGHT = 3  # steps the parent may have sent and not yet collected: batch slots in the block
SPIN_SECONDS = 0.0002  # how long a worker first at a barrier spins before it sleeps (_Barrier)
ALIGN = 16  # float32s per cache line: workers' parameter slices never share one
# weight of the newest step in each worker's seconds-per-row average (0.1-1.0 replayed
# against 1,500 recorded steps: 0.5-0.8 left the least waiting, docs/RESULTS.md)
SPEED_SMOOTHING = 0.5


def split_rows(n: int, parts: int, speeds: list[float] | None = None) -> list[tuple[int, int]]:
    """Contiguous (start, stop) row ranges of a batch of ``n``: in proportion to ``speeds``
    (rows per second of each part), else as even as possible. Every part gets a row when
    there are enough; with fewer rows than parts, the empty ranges are dropped."""
    if speeds is None or n < parts:
        bounds = np.linspace(0, n, parts + 1).round().astype(int).tolist()
        return [(a, b) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
    total, acc, bounds = sum(speeds), 0.0, [0]
    for i, s in enumerate(speeds[:-1], 1):
        acc += s
        # at least one row for this part and for each part after it
        bounds.append(min(max(round(n * acc / total), bounds[-1] + 1), n - (parts - i)))
    bounds.append(n)
    return list(zip(bounds[:-1], bounds[1:]))


def speeds_of(row_seconds: np.ndarray) -> list[float] | None:
    """Rows per second of each worker from the block's seconds-per-row averages; None (an
    even split) until every worker has been timed."""
    if not (row_seconds > 0).all():
        return None
    return [1.0 / float(t) for t in row_seconds]


def learn_row_seconds(row_seconds: np.ndarray, rows: list[tuple[int, int]], busy: np.ndarray) -> None:
    """Fold one step's compute seconds per worker (``busy``, on ``rows``) into the
    seconds-per-row averages, in place; 0 means not timed yet."""
    for i, (a, b) in enumerate(rows):
        t = max(float(busy[i]) / (b - a), 1e-9)
        old = float(row_seconds[i])
        row_seconds[i] = t if old <= 0 else old + SPEED_SMOOTHING * (t - old)


class Layout:
    """Where each array lives in the one shared block (offsets in bytes), and which slice
    of the flat parameter vector each worker updates. Batches, logits and losses have
    ``slots`` copies: one per step the parent may have in flight."""

    def __init__(self, net: Net, workers: int, max_batch: int, slots: int):
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
            "x": (np.float32, (slots, max_batch, c, h, w)),
            "y": (np.int64, (slots, max_batch)),
            "logits": (np.float32, (slots, max_batch, self.classes)),
            "loss": (np.float64, (slots, workers)),
            "busy": (np.float64, (slots, workers)),  # each worker's seconds on its rows
            "rows": (np.int64, (slots, workers, 2)),  # each worker's (start, stop); (0, 0): none
            # each worker's seconds per row, a moving average (0: not yet timed): the next split
            "row_seconds": (np.float64, (workers,)),
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


class _Commands:
    """The parent's commands to this worker, in order; None (or the socket closing) is stop."""

    def __init__(self, conn: Connection, parent_pid: int):
        self.conn, self.parent_pid = conn, parent_pid
        self.ready = select.poll()  # made once: Connection.poll builds a selector per call
        self.ready.register(conn.fileno(), select.POLLIN)

    def pending(self) -> bool:
        """Whether the next command is already here."""
        return bool(self.ready.poll(0))

    def next(self):
        """The next step's command, or None once the parent said stop or is gone."""
        while not self.ready.poll(POLL_SECONDS * 1000):
            if os.getppid() != self.parent_pid:
                return None  # the parent is gone (its socket end may live on in a grandchild)
        return self.conn.recv()


class _Barrier:
    """Every worker has arrived: each worker posts to every other worker's eventfd
    (semaphore mode) and takes one post from each of them off its own. The posts count
    up, so a fast worker's post for the next meeting only ever lands after everyone has
    arrived at this one, and two meetings a step share the eventfds.

    A worker that arrives first spins for ``SPIN_SECONDS`` before it sleeps: the other
    usually arrives within that, and a sleeping worker woke late enough on this VM that
    two cores did 1.63x one core without the spin and 1.71-1.80x with it (docs/RESULTS.md).

    A sleeping worker wakes for its eventfd or for the parent hanging up (``POLLRDHUP``:
    the parent stops workers by closing their sockets, after a sibling died for one), never
    for a command arriving: the parent sends the next steps' while workers wait here, and
    a send that wakes a sleeping process costs the sender ~95 us instead of ~10 (a socket
    pair on this VM), besides the wake-up itself."""

    def __init__(self, fds: list[int], index: int, conn_fd: int, parent_pid: int):
        self.mine = fds[index]
        self.others = [fd for j, fd in enumerate(fds) if j != index]
        self.conn_fd, self.parent_pid = conn_fd, parent_pid
        self.poller = select.poll()
        self.poller.register(self.mine, select.POLLIN)
        self.poller.register(self.conn_fd, select.POLLRDHUP)

    def wait(self, early=None) -> bool:
        """True once every other worker has arrived; False if the parent stopped us or died
        meanwhile (a sibling died mid-step: the parent notices and stops everyone).
        ``early()`` is called if this worker has to wait: work for time it would idle."""
        for fd in self.others:
            os.eventfd_write(fd, 1)
        need = len(self.others)
        spin_until = time.perf_counter() + SPIN_SECONDS
        while need:
            try:
                os.eventfd_read(self.mine)
                need -= 1
                continue
            except BlockingIOError:
                pass
            if early is not None:
                early()
                early, spin_until = None, time.perf_counter() + SPIN_SECONDS
                continue
            if time.perf_counter() < spin_until:
                continue
            ready = self.poller.poll(POLL_SECONDS * 1000)
            if any(fd == self.conn_fd for fd, _ in ready):
                return False  # the parent hung up: no step is coming
            if not ready and os.getppid() != self.parent_pid:
                return False
        return True


def _worker(index: int, fd: int, barrier_fds: list[int], shm_name: str, spec, input_shape,
            workers: int, max_batch: int, slots: int, parent_pid: int, balance: bool = True) -> None:
    """A worker's life: attach, then one step (its rows, forward, backward, barrier, update
    of its slice, barrier) per command until told to stop.

    Every worker splits each batch alike, from the seconds per row in the block, and takes
    its own part; worker 0 folds each step's timings in between the two barriers, so the
    next step's split already follows them (``balance``; otherwise the averages stay as
    they are: even unless set). The parent used to split the batch when it sent the step,
    three steps before it ran. One core's speed against the other's drifts over seconds
    here (their ratio's autocorrelation from one step to the next: 0.9), so the latest
    step predicts best: the mean wait at the first barrier fell from 1.59 to 1.26 ms a
    step (medians of 15 alternating runs of 250 steps, docs/RESULTS.md)."""
    from gossipnet.nn import blas, heap

    blas.set_threads(1)
    heap.keep_freed_memory()  # a fresh process faulted every step's temporaries in (nn/heap.py)
    conn = Connection(fd)
    net = Net(spec, input_shape)
    layout = Layout(net, workers, max_batch, slots)
    shm = _attach(shm_name)
    v = layout.views(shm.buf)
    _bind(net, layout.unflatten(v["params"]), layout.unflatten(v["grads"][index]))
    commands = _Commands(conn, parent_pid)
    barrier = _Barrier(barrier_fds, index, conn.fileno(), parent_pid)
    lo, hi = layout.slices[index]
    # weight decay applies to the weights' parts of our slice, not to biases
    decayed = [(a - lo, b - lo) for name, a, b in layout.segments(index) if decays(name)]
    gsum, t1, t2 = (np.empty(hi - lo, np.float32) for _ in range(3))
    opt: Optimizer | None = None
    rows = params = moments = None
    done = told = 0  # the last step this worker is past its second barrier in; told the parent

    def tell() -> None:
        """Tell the parent that every step up to ``done`` is done (everyone is past it)."""
        nonlocal told
        if done > told:
            conn.send(done)
            told = done

    conn.send("ready")
    try:
        while True:
            msg = commands.next()
            if msg is None:
                return
            number, slot, n, seed, step, t, hyper, moment_names = msg
            split = split_rows(n, workers, speeds_of(v["row_seconds"]))
            active = len(split)
            start, stop = split[index] if index < active else (0, 0)
            v["rows"][slot, index] = start, stop
            if index >= active:  # fewer rows than workers
                v["loss"][slot, index] = v["busy"][slot, index] = 0.0
            else:
                began = time.perf_counter()
                net.set_rng(seed, step, rows=(start, stop, n))
                logits = net.forward(v["x"][slot, start:stop], train=True)
                loss, dlogits = softmax_cross_entropy(logits, v["y"][slot, start:stop])
                dlogits *= np.float32((stop - start) / n)  # d(mean over the whole batch)
                net.backward(dlogits)  # into our row of the block
                v["logits"][slot, start:stop] = logits
                v["loss"][slot, index] = loss * (stop - start)
                v["busy"][slot, index] = time.perf_counter() - began
            # every gradient row is written; the first here tells the parent the last step
            # is done (the message wakes it, which costs the sender: here it costs nothing)
            if not barrier.wait(early=tell):
                return
            if index == 0 and balance and active == workers:  # every worker's timing is in
                learn_row_seconds(v["row_seconds"], split, v["busy"][slot])
            if hyper is not None:  # sent when they change (the learning rate may, every step)
                opt = from_hyperparams(hyper, {})
            opt.t = t
            rows, params = v["grads"][:active, lo:hi], v["params"][lo:hi]
            if active == 1:
                np.copyto(gsum, rows[0])
            else:
                np.add(rows[0], rows[1], out=gsum)
                for r in range(2, active):  # fixed order: the sum is reproducible
                    gsum += rows[r]
            for a, b in decayed:
                opt.add_decay(params[a:b], gsum[a:b], t1[a:b])
            # the whole slice at once: the update is elementwise, so slicing changes no value
            moments = {m: v["moments"][k, lo:hi] for k, m in enumerate(moment_names)}
            opt.update(params, gsum, moments, False, (t1, t2))
            v["cpu"][index] = time.process_time()
            if not barrier.wait():  # every slice is updated: the next forward reads them all
                return
            done = number
            if not commands.pending():  # the parent may be waiting for this very step
                tell()
    except (EOFError, OSError, KeyboardInterrupt):
        return  # the parent closed the socket or died
    finally:
        v = rows = params = moments = net = None  # views of the block: drop them before unmapping it
        try:
            shm.close()
        except BufferError:
            pass  # a view is still referenced; the mapping goes with the process


def _main() -> None:
    """Entry point of ``python -m gossipnet.nn.parallel_worker <json args>``."""
    a = json.loads(sys.argv[1])
    _worker(a["index"], a["fd"], a["barrier"], a["shm"], a["spec"], tuple(a["input_shape"]),
            a["workers"], a["max_batch"], a["slots"], a["parent"], a["balance"])


if __name__ == "__main__":
    _main()
