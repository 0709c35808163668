"""Data parallelism inside a node: the same step as one core, clean worker lifecycles."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gossipnet.commands.demo import cores_per_node
from gossipnet.config import build_config
from gossipnet.errors import UserError
from gossipnet.nn import Net, Trainer, make_optimizer
from gossipnet.nn.parallel import DataParallel, WorkerDied, available_cores, check_cores
from gossipnet.nn.parallel_worker import SPEED_SMOOTHING, learn_row_seconds, speeds_of, split_rows
from tests.conftest import skip_or_fail

ROOT = Path(__file__).resolve().parents[1]
# conv, pool, fc, dropout: every layer kind whose step could differ between one and many cores
SPEC = [
    {"type": "conv", "filters": 4, "size": 3, "stride": 1, "pad": 1}, {"type": "relu"},
    {"type": "pool", "size": 2, "stride": 2},
    {"type": "fc", "units": 16}, {"type": "relu"}, {"type": "dropout", "rate": 0.5},
    {"type": "softmax", "classes": 5},
]
SHAPE = (1, 8, 8)


def _data(n=40, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, *SHAPE)).astype(np.float32), rng.integers(0, 5, n)


def _trainer(kind: str, workers: int, batch: int = 13, balance: bool = True):
    net = Net(SPEC, SHAPE, seed=3)
    # weight decay on: the workers' slices of the update must decay weights, not biases
    lr = 0.05 if kind == "sgd" else 0.01
    opt = make_optimizer(kind, net.params(), lr=lr, weight_decay=0.01)
    # a rate that changes every step: the workers must see each step's
    tr = Trainer(net, opt, batch_size=batch, seed=7, lr_schedule=lambda step: lr * (6 - step) / 6)
    if workers > 1:
        tr.parallel = DataParallel(net, workers, batch, balance=balance)
    return tr


@pytest.mark.parametrize("kind", ["sgd", "adam"])
def test_multi_core_steps_equal_one_core_steps_to_float32_rounding(kind):
    x, y = _data()
    one, three = _trainer(kind, 1), _trainer(kind, 3)
    try:
        r1 = one.train(x, y, 6)  # batches of 13 from 40 images: a short last batch too
        r3 = three.train(x, y, 6)
        for name, w in one.net.params().items():
            np.testing.assert_allclose(three.net.params()[name], w, rtol=1e-4, atol=1e-5, err_msg=name)
        for moment, arrays in one.optimizer.state.items():  # the workers' moments came back
            for name, m in arrays.items():
                np.testing.assert_allclose(three.optimizer.state[moment][name], m, rtol=1e-4, atol=1e-6,
                                           err_msg=f"{moment}.{name}")
        assert three.optimizer.t == one.optimizer.t == 6
        assert r3["loss"] == pytest.approx(r1["loss"], rel=1e-5)
        assert r3["accuracy"] == r1["accuracy"]
        # and the steps moved the weights at all (so equality is not trivial)
        start = Net(SPEC, SHAPE, seed=3).params()
        assert max(np.abs(start[k] - w).max() for k, w in one.net.params().items()) > 1e-3
    finally:
        three.parallel.close()


def test_an_uneven_split_is_still_the_one_core_step():
    """The rows each worker takes follow its measured speed; whatever they are, the step is
    the same. A worker timed 5x slower than the other gets a sixth of each batch here."""
    x, y = _data()
    one, two = _trainer("adam", 1), _trainer("adam", 2, balance=False)  # keeps the skew below
    try:
        two.parallel._v["row_seconds"][:] = [1.0, 5.0]
        assert split_rows(13, 2, [1.0, 0.2]) == [(0, 11), (11, 13)]
        one.train(x, y, 6)
        two.train(x, y, 6)
        assert two.parallel.last_split == ((0, 11), (11, 13))
        for name, w in one.net.params().items():
            np.testing.assert_allclose(two.net.params()[name], w, rtol=1e-4, atol=1e-5, err_msg=name)
    finally:
        two.parallel.close()


def test_the_split_follows_the_workers_measured_speeds():
    tr = _trainer("sgd", 2, batch=20)
    x, y = _data()
    dp = tr.parallel
    try:
        tr.train(x, y, 2)  # the workers' own timings
        seconds = dp.row_seconds()
        assert seconds is not None and all(t > 0 for t in seconds)
        # the next step is split by them: the faster worker takes its share
        tr.train(x, y, 1)
        speeds = speeds_of(np.array(seconds))
        assert dp.last_split == tuple(split_rows(20, 2, speeds))
        assert dp.last_split[0][1] == round(20 * speeds[0] / sum(speeds))
        assert dp.row_seconds() != seconds  # and that step was timed in turn
        assert len(dp.last_busy) == 2 and all(t > 0 for t in dp.last_busy)
    finally:
        dp.close()


def test_the_seconds_per_row_are_a_moving_average_of_each_step():
    row_seconds = np.zeros(2)
    assert speeds_of(row_seconds) is None  # untimed: an even split
    learn_row_seconds(row_seconds, [(0, 10), (10, 20)], np.array([0.010, 0.030]))  # 1 and 3 ms a row
    assert row_seconds == pytest.approx([0.001, 0.003])
    learn_row_seconds(row_seconds, [(0, 15), (15, 20)], np.array([0.030, 0.005]))  # 2 and 1 ms a row now
    a = SPEED_SMOOTHING
    assert row_seconds == pytest.approx([0.001 + a * 0.001, 0.003 - a * 0.002])
    assert speeds_of(row_seconds) == pytest.approx([1 / t for t in row_seconds])


def test_leaving_run_early_applies_every_step_it_sent():
    """A caller that stops reading ``run`` leaves the steps already sent in flight: the
    session waits them out, so the net and the optimizer hold all of them on exit."""
    x, y = _data(26)
    net1 = Net(SPEC, SHAPE, seed=3)
    opt1 = make_optimizer("sgd", net1.params(), lr=0.05)
    net2 = Net(SPEC, SHAPE, seed=3)
    opt2 = make_optimizer("sgd", net2.params(), lr=0.05)
    dp = DataParallel(net2, 2, 13)
    batches = [(x[:13], y[:13], 0, 0), (x[13:], y[13:], 0, 1)]
    try:
        with dp.session(opt2):
            for _ in dp.run(iter(batches), opt2):
                break  # the second batch was sent before the first result came back
        assert opt2.t == 2
        for xb, yb, seed, step in batches:
            net1.set_rng(seed, step)
            net1.loss_and_grads(xb, yb)
            opt1.step(net1.grads())
        for name, w in net1.params().items():
            np.testing.assert_allclose(net2.params()[name], w, rtol=1e-4, atol=1e-5, err_msg=name)
        with dp.session(opt2):  # and the workers carry on from there
            loss, _ = dp.step(x[:13], y[:13], 0, 2, opt2)
        assert np.isfinite(loss) and opt2.t == 3
    finally:
        dp.close()


def test_step_reports_never_pile_up_in_the_workers_sockets():
    """Any worker may tell the parent a step is done (the first at the next barrier, or
    one with no next command), so two may report the same step: the parent reads them
    all, or a socket would fill up and block its worker mid-run."""
    tr = _trainer("sgd", 3, batch=6)
    tr.lr_schedule = None  # _trainer's schedule reaches 0 at step 6
    x, y = _data(60)
    dp = tr.parallel
    try:
        tr.train(x, y, 300)
        assert dp._done == dp._sent == 300
        left = 0
        while dp._ready.poll(0):
            left += len(dp._reports(wait=False))
        assert left <= 2 * dp.workers  # at most the last step's few duplicates
        tr.train(x, y, 5)  # and the next chunk goes on from there
        assert dp._done == 305
    finally:
        dp.close()


def test_dropout_masks_are_the_rows_of_the_whole_batch_mask():
    net = Net(SPEC, SHAPE, seed=0)
    x, _ = _data(10)
    net.set_rng(1, 2)
    whole = net.forward(x, train=True)
    net.set_rng(1, 2, rows=(4, 10, 10))
    part = net.forward(x[4:], train=True)
    np.testing.assert_allclose(part, whole[4:], rtol=1e-6, atol=1e-6)
    net.set_rng(1, 3, rows=(4, 10, 10))  # another step draws other masks
    assert not np.allclose(net.forward(x[4:], train=True), whole[4:])


def test_split_rows_covers_the_batch_once_and_drops_empty_parts():
    assert split_rows(13, 3) == [(0, 4), (4, 9), (9, 13)]
    assert split_rows(2, 4) == [(0, 1), (1, 2)]
    for n in range(1, 20):
        for parts in range(1, 6):
            rows = split_rows(n, parts)
            assert [r for a, b in rows for r in range(a, b)] == list(range(n))


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 600), st.lists(st.floats(0.01, 100.0), min_size=1, max_size=8))
def test_a_split_by_speed_covers_the_batch_once_in_proportion(n, speeds):
    rows = split_rows(n, len(speeds), speeds)
    assert [r for a, b in rows for r in range(a, b)] == list(range(n))
    if n >= len(speeds):
        assert len(rows) == len(speeds) and all(b > a for a, b in rows)  # every worker has rows
        if n >= 8 * len(speeds) and max(speeds) / min(speeds) < 4:
            for (a, b), s in zip(rows, speeds):  # within a row or two of its share
                assert abs((b - a) - n * s / sum(speeds)) <= len(speeds) + 1


def test_cores_settings_are_checked_and_divided():
    assert available_cores() >= 1
    assert check_cores(3) == 3
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(UserError, match="--cores"):
            check_cores(bad)
    assert cores_per_node(8, 3) == 2
    assert cores_per_node(2, 3) == 1  # never zero
    assert cores_per_node(None, 1) == available_cores()
    assert build_config({}, {"cores": 4}).cores == 4
    assert build_config({}, {}).cores is None  # None: every available core
    with pytest.raises(UserError, match="--cores"):
        build_config({}, {"cores": 0})


def test_a_demo_given_more_cores_than_it_may_use_is_warned_of(monkeypatch, caplog):
    import gossipnet.nn.parallel as parallel

    monkeypatch.setattr(parallel, "available_cores", lambda: 2)
    assert cores_per_node(2, 3) == 1 and not caplog.records
    assert cores_per_node(8, 3) == 2  # as asked: 6 workers on 2 cores, but said so
    assert [r.getMessage() for r in caplog.records] == [
        "--cores 8: this process may run on only 2 cores, so the nodes' training workers will "
        "take turns on them and train slower than on --cores 2"]
    caplog.clear()
    assert cores_per_node(3, 1) == 3  # one node: its own workers warn of it, not the demo too
    assert not caplog.records


def test_without_linux_the_default_is_one_core_and_more_is_a_clear_error(monkeypatch):
    """The workers need eventfd and POLLRDHUP: elsewhere (macOS) a node trains on one core
    by default, and asking for more says why not instead of failing in the training thread."""
    monkeypatch.delattr(os, "eventfd")
    assert available_cores() == 1
    assert check_cores(1) == 1
    with pytest.raises(UserError, match="--cores 2: training on several cores needs Linux"):
        check_cores(2)
    with pytest.raises(UserError, match="needs Linux"):
        DataParallel(Net(SPEC, SHAPE), 2, 8)


def test_cores_flag_reaches_the_learner(tmp_path):
    from gossipnet.cli import build_parser
    from gossipnet.commands.run import config_from_args
    from gossipnet.commands.learner_factory import build_learner

    args = build_parser().parse_args(["run", "--cores", "2", "--state-dir", str(tmp_path),
                                      "--host", "127.0.0.1", "--net", "tiny"])
    cfg = config_from_args(args)
    assert cfg.cores == 2
    learner = build_learner(cfg, "node-a")
    assert learner.config.cores == 2
    learner.close()
    args = build_parser().parse_args(["run", "--state-dir", str(tmp_path), "--host", "127.0.0.1"])
    assert build_learner(config_from_args(args), "node-a").config.cores == available_cores()


def test_a_killed_worker_is_a_clear_error_not_a_hang():
    tr = _trainer("sgd", 2)
    x, y = _data()
    try:
        tr.train(x, y, 1)
        victim = tr.parallel.pids()[1]
        os.kill(victim, signal.SIGKILL)
        with pytest.raises(WorkerDied, match=f"pid {victim}"):
            tr.train(x, y, 1)
        # the survivor was waiting for the victim at a barrier: it left on its own when the
        # parent hung up (0), it was not killed after the parent's grace period (-9)
        assert tr.parallel._procs[0].returncode == 0
    finally:
        tr.parallel.close()
    assert not tr.parallel.alive()


def _proc_stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (state first), or None once the
    process is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return None


def _cpu_ticks(pid: int) -> int:
    """User + system CPU clock ticks a process has used (0 if it is gone)."""
    fields = _proc_stat(pid)
    return 0 if fields is None else int(fields[11]) + int(fields[12])


def test_gossipnet_train_says_a_worker_died_in_one_line_and_keeps_the_model(tmp_path):
    ckpt = tmp_path / "model.safetensors"
    proc = subprocess.Popen(
        [sys.executable, "-m", "gossipnet", "train", "--net", "tiny", "--epochs", "50", "--cores", "2",
         "--checkpoint", str(ckpt), "--quiet"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    try:
        children: list[int] = []
        deadline = time.monotonic() + 60
        while len(children) < 2 or _cpu_ticks(children[1]) < 150:  # a worker has trained a while
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.05)
            with open(f"/proc/{proc.pid}/task/{proc.pid}/children") as f:
                children = [int(c) for c in f.read().split()]
        os.kill(children[1], signal.SIGKILL)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 2, err
    lines = err.strip().splitlines()
    assert "Traceback" not in err and lines[-1].startswith("gossipnet train: error: training worker ")
    assert f"(pid {children[1]}) died with exit code -9" in lines[-1]
    assert "the model as of step" in lines[-1]
    assert ckpt.exists()


@pytest.mark.parametrize("workers", [1, 2])
def test_a_rate_of_zero_is_a_clear_error_on_one_core_and_on_several(workers):
    """The optimizer refuses the rate when the schedule sets it, before any step takes it:
    the steps before it count, and on several cores the workers live on."""
    tr = _trainer("sgd", workers)  # its schedule reaches a rate of 0 at step 6
    x, y = _data()
    try:
        with pytest.raises(UserError, match="learning rate must be a positive number, got 0.0"):
            tr.train(x, y, 7)
        assert tr.step == 6 and tr.optimizer.t == 6 and tr.optimizer.lr > 0
        if workers > 1:
            assert tr.parallel.alive()
        tr.lr_schedule = None
        tr.optimizer.lr = 0.01
        assert np.isfinite(tr.train(x, y, 1)["loss"])
    finally:
        if tr.parallel is not None:
            tr.parallel.close()


@pytest.mark.parametrize("cores", [1, 2])
def test_more_workers_than_cores_is_warned_of(monkeypatch, caplog, cores):
    import gossipnet.nn.parallel as parallel

    monkeypatch.setattr(parallel, "available_cores", lambda: cores)
    dp = DataParallel(Net(SPEC, SHAPE), 2, 4)
    dp.close()
    warned = [r.getMessage() for r in caplog.records if r.name == "gossipnet.nn.parallel"]
    if cores >= 2:
        assert warned == []
    else:
        assert len(warned) == 1 and "on only 1 core:" in warned[0] and "--cores 1" in warned[0]


def test_far_more_workers_than_cores_is_refused_before_any_starts(monkeypatch):
    import gossipnet.nn.parallel as parallel

    monkeypatch.setattr(parallel, "available_cores", lambda: 2)
    started = []
    monkeypatch.setattr(parallel.DataParallel, "_start", lambda self, *a: started.append(a))
    with pytest.raises(UserError, match=r"--cores 9: this process may run on 2 cores.*use --cores 2"):
        DataParallel(Net(SPEC, SHAPE), 2 * parallel.MAX_WORKERS_PER_CORE + 1, 8)
    assert started == []


def test_close_stops_every_worker():
    tr = _trainer("adam", 2)
    x, y = _data()
    tr.train(x, y, 1)
    procs = list(tr.parallel._procs)
    tr.parallel.close()
    assert all(p.poll() is not None for p in procs)
    with pytest.raises(WorkerDied, match="shut down"):
        tr.train(x, y, 1)


# In a private mount namespace with its own small /dev/shm: workers sized for batches of
# argv[1] CIFAR images (128 need 5 MB of shared memory, 16 need 1 MB) train two steps.
SMALL_SHM = textwrap.dedent(f"""
    import os, sys
    sys.path.insert(0, {str(ROOT)!r})
    import numpy as np
    from gossipnet.errors import UserError
    from gossipnet.nn import SGD, Net, get_preset
    from gossipnet.nn.parallel import DataParallel
    batch = int(sys.argv[1])
    p = get_preset("convnetjs-cifar10")
    net = Net(p.spec, p.input_shape, seed=0)
    opt = SGD(net.params(), lr=0.01)
    try:
        dp = DataParallel(net, 2, batch)
    except UserError as exc:
        print("REFUSED", exc, "LEFT", os.listdir("/dev/shm"))
        sys.exit(0)
    x = np.zeros((batch, *p.input_shape), np.float32)
    with dp.session(opt):
        for _ in dp.run(((x, np.zeros(batch, np.int64), 0, s) for s in range(2)), opt):
            pass
    dp.close()
    print("TRAINED", "LEFT", os.listdir("/dev/shm"))
""")


@pytest.mark.parametrize("mount, batch, said", [
    ("size=4m", 128, "needs 5 MB of shared memory (/dev/shm) for batches of 128 inputs of shape "
                     "(3, 32, 32), and it has 4 MB free"),
    ("size=4m", 16, None),
    ("size=4m,ro", 16, "Is /dev/shm mounted and writable?"),
])
def test_a_shared_memory_the_workers_cannot_use_is_a_clear_error_not_a_crash(mount, batch, said):
    """/dev/shm hands out pages on first write: a block larger than the room left in it used
    to be created without complaint and kill the node with SIGBUS at its first batch."""
    if sys.platform != "linux" or os.geteuid() != 0 or not shutil.which("unshare"):
        skip_or_fail("mounting a small /dev/shm needs Linux, root and unshare(1)")
    done = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c",
         f'mount -t tmpfs -o {mount} tmpfs /dev/shm || exit 97; exec "$0" -c "$1" "$2"',
         sys.executable, SMALL_SHM, str(batch)],
        capture_output=True, text=True, timeout=120)
    if done.returncode == 97 or done.stderr.startswith("unshare:"):  # mount or unshare refused
        skip_or_fail(f"cannot mount a private /dev/shm here: {done.stderr.strip()[-300:]}")
    assert done.returncode == 0, f"exit {done.returncode}: {done.stderr[-2000:]}"
    assert done.stdout.startswith("REFUSED" if said else "TRAINED"), done.stdout
    assert done.stdout.rstrip().endswith("LEFT []")  # nothing left behind in /dev/shm
    if said:
        assert said in done.stdout and "--cores 1" in done.stdout


def _gone(pid: int) -> bool:
    fields = _proc_stat(pid)
    return fields is None or fields[0] == "Z"  # a zombie has exited


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_workers_exit_when_their_parent_dies(sig):
    """No orphans: a parent killed without any chance to clean up takes its workers along."""
    script = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(ROOT)!r})
        from gossipnet.nn import Net
        from gossipnet.nn.parallel import DataParallel
        net = Net({SPEC!r}, {SHAPE!r})
        dp = DataParallel(net, 2, 8)
        print(" ".join(map(str, dp.pids())), flush=True)
        time.sleep(120)
    """)
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        pids = [int(p) for p in parent.stdout.readline().split()]
        assert len(pids) == 2
        parent.send_signal(sig)
        parent.wait(30)
        deadline = time.monotonic() + 30
        while not all(_gone(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert all(_gone(p) for p in pids), f"workers {pids} outlived their parent"
    finally:
        parent.kill()
        parent.wait()


def test_a_learner_on_two_cores_trains_and_reports_like_one():
    from gossipnet.data import load_dataset
    from gossipnet.learners.convnet import ConvnetConfig, ConvnetLearner

    data = load_dataset("embedded")
    idx = np.arange(300)
    one = ConvnetLearner(data, idx, ConvnetConfig(net="tiny", seed=1, cores=1, eval_images=50))
    two = ConvnetLearner(data, idx, ConvnetConfig(net="tiny", seed=1, cores=2, eval_images=50))
    try:
        a, b = one.train(4), two.train(4)
        assert two.parallel is not None and two.parallel.alive()
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5)
        for name, w in one.net.params().items():
            np.testing.assert_allclose(two.net.params()[name], w, rtol=1e-4, atol=1e-5, err_msg=name)
        m = two.metrics()
        # the process (every thread + the workers) has used at least what training used
        assert 0 < m["train_cpu_s"] <= m["process_cpu_s"] + 1e-3
    finally:
        two.close()
    assert two.parallel is None
    two.train(1)  # trains again after close: new workers
    two.close()


def test_a_node_restarts_workers_that_die_and_trains_on_one_core_if_they_keep_dying(caplog):
    """The OOM killer or a stray kill takes a worker: the node loses the rest of that chunk,
    not its life; new workers train the next chunk. Workers that keep dying are given up."""
    from gossipnet.data import load_dataset
    from gossipnet.learners import convnet

    data = load_dataset("embedded")
    learner = convnet.ConvnetLearner(data, np.arange(300), convnet.ConvnetConfig(
        net="tiny", seed=1, cores=2, eval_images=50))
    deaths = convnet.WORKER_DEATHS_TO_ONE_CORE
    try:
        learner.train(2)
        for death in range(1, deaths + 1):
            pids = learner.parallel.pids()
            os.kill(pids[1], signal.SIGKILL)
            assert learner.train(4) == {}  # the chunk it died in
            assert learner.parallel is None and all(_gone(p) for p in pids)
            out = learner.train(2)
            assert np.isfinite(out["loss"])
            if death < deaths:  # new workers, on as many cores
                assert learner.parallel.alive() and set(pids).isdisjoint(learner.parallel.pids())
        assert learner.cores == 1 and learner.parallel is None  # given up: one core from now on
        assert all(np.isfinite(w).all() for w in learner.net.params().values())
        m = learner.metrics()
        assert m["worker_restarts"] == deaths - 1 and m["cores"] == 1
        said = [r for r in caplog.records if r.name == "gossipnet.learners.convnet"]
        assert [r.levelname for r in said] == ["WARNING"] * (deaths - 1) + ["ERROR"]
        assert "died with exit code -9" in said[0].getMessage()
        assert "training on one core from now on" in said[-1].getMessage()
    finally:
        learner.close()


def test_training_steps_do_not_fault_their_temporaries_back_in():
    """A fresh process's malloc returned each step's large temporaries to the kernel and
    faulted them in again: thousands of page faults per step (gossipnet/nn/heap.py)."""
    import resource

    from gossipnet.nn import get_preset

    p = get_preset("fashion")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((96, *p.input_shape)).astype(np.float32)
    y = rng.integers(0, 10, 96)
    net = Net(p.spec, p.input_shape)
    tr = Trainer(net, make_optimizer("adam", net.params(), 1e-3), batch_size=32)
    tr.train(x, y, 3)  # warm up: the heap grows to the step's peak once
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    tr.train(x, y, 3)
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 3
    assert faults < 200, f"{faults:.0f} page faults per step (about 2,000 without nn/heap.py)"


@pytest.mark.parametrize("workers", [1, 2])
def test_an_empty_batch_is_a_clear_error_and_the_workers_live_on(workers):
    x, y = _data(13)
    net = Net(SPEC, SHAPE, seed=3)
    opt = make_optimizer("sgd", net.params(), lr=0.05)
    dp = DataParallel(net, workers, 13)
    try:
        with dp.session(opt):
            with pytest.raises(UserError, match="empty batch"):
                dp.step(x[:0], y[:0], 0, 0, opt)
            loss, logits = dp.step(x, y, 0, 0, opt)  # the next step trains
        assert np.isfinite(loss) and logits.shape == (13, 5) and opt.t == 1
    finally:
        dp.close()
