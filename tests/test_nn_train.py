"""Optimizers, state files, and the resumable trainer."""

from __future__ import annotations

import numpy as np
import pytest

from gossipnet.errors import UserError
from gossipnet.nn import SGD, Adam, Net, Trainer, cosine_lr, evaluate, make_optimizer
from gossipnet.nn.state import load_state, save_state, strip_prefix, with_prefix

SPEC = [
    {"type": "conv", "filters": 4, "size": 3, "pad": 1},
    {"type": "relu"},
    {"type": "pool", "size": 2},
    {"type": "fc", "units": 16},
    {"type": "relu"},
    {"type": "dropout", "rate": 0.25},
    {"type": "softmax", "classes": 3},
]
SHAPE = (1, 8, 8)


def toy_data(n: int = 96, seed: int = 0):
    """Three classes told apart by where a bright blob sits: learnable in a few steps."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.normal(0, 0.3, (n, *SHAPE)).astype(np.float32)
    for i, c in enumerate(y):
        x[i, 0, 1 + 2 * c : 3 + 2 * c, 2:6] += 2.0
    return x, y.astype(np.int64)


def quadratic(opt_cls, **kw):
    """Minimise sum((w - 3)^2) and return the final w."""
    w = {"w.weight": np.zeros(4, np.float32)}
    opt = opt_cls(w, **kw)
    for _ in range(300):
        opt.step({"w.weight": 2 * (w["w.weight"] - 3)})
    return w["w.weight"]


def test_sgd_and_adam_minimise_a_quadratic():
    np.testing.assert_allclose(quadratic(SGD, lr=0.05, momentum=0.9), 3, atol=1e-3)
    np.testing.assert_allclose(quadratic(Adam, lr=0.1), 3, atol=1e-2)


def test_weight_decay_pulls_weights_but_not_biases_towards_zero():
    params = {"l.weight": np.ones(3, np.float32), "l.bias": np.ones(3, np.float32)}
    opt = SGD(params, lr=0.1, momentum=0.0, weight_decay=0.5)
    opt.step({"l.weight": np.zeros(3, np.float32), "l.bias": np.zeros(3, np.float32)})
    np.testing.assert_allclose(params["l.weight"], 0.95)
    np.testing.assert_allclose(params["l.bias"], 1.0)


def test_sgd_momentum_matches_the_pytorch_recurrence():
    p = {"a.weight": np.array([1.0], np.float32)}
    opt = SGD(p, lr=0.1, momentum=0.9)
    g = {"a.weight": np.array([1.0], np.float32)}
    opt.step(g)  # v=1, w=0.9
    opt.step(g)  # v=1.9, w=0.71
    np.testing.assert_allclose(p["a.weight"], [0.71], rtol=1e-6)


def test_optimizer_state_round_trip_reproduces_the_next_update():
    for kind in ("sgd", "adam"):
        rng = np.random.default_rng(0)
        p1 = {"x.weight": rng.standard_normal(5).astype(np.float32)}
        o1 = make_optimizer(kind, p1, 0.01)
        grads = [{"x.weight": rng.standard_normal(5).astype(np.float32)} for _ in range(4)]
        for g in grads[:3]:
            o1.step(g)
        p2 = {"x.weight": p1["x.weight"].copy()}
        o2 = make_optimizer(kind, p2, 0.01)
        o2.load_state_dict(o1.state_dict())
        o1.step(grads[3])
        o2.step(grads[3])
        np.testing.assert_array_equal(p1["x.weight"], p2["x.weight"])
        with pytest.raises(UserError, match="does not fit"):
            make_optimizer("adam" if kind == "sgd" else "sgd", p2, 0.01).load_state_dict(o1.state_dict())


def test_bad_optimizer_settings_are_user_errors():
    p = {"x.weight": np.zeros(2, np.float32)}
    for bad in (0, -1, float("nan")):
        with pytest.raises(UserError, match="learning rate"):
            SGD(p, lr=bad)
    with pytest.raises(UserError, match="momentum"):
        SGD(p, momentum=1.0)
    with pytest.raises(UserError, match="unknown optimizer"):
        make_optimizer("rmsprop", p, 0.1)


def test_cosine_schedule_warms_up_then_decays():
    lrs = [cosine_lr(1.0, s, 100, warmup=10) for s in range(120)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert lrs[55] == pytest.approx(0.5, abs=0.03)
    assert all(a >= b for a, b in zip(lrs[10:100], lrs[11:100]))
    assert lrs[119] == pytest.approx(0.005)


def test_state_file_round_trip_and_mismatch_errors(tmp_path):
    net = Net(SPEC, SHAPE, seed=3)
    path = tmp_path / "w.safetensors"
    save_state(path, with_prefix("net.", net.state_dict()), {"fingerprint": net.fingerprint})
    tensors, meta = load_state(path)
    assert meta == {"fingerprint": net.fingerprint}
    other = Net(SPEC, SHAPE, seed=4)
    other.load_state_dict(strip_prefix("net.", tensors))
    for k in net.params():
        np.testing.assert_array_equal(other.params()[k], net.params()[k])
    wrong = dict(strip_prefix("net.", tensors))
    wrong["fc1.weight"] = np.zeros((3, 3), np.float32)
    with pytest.raises(UserError, match="fc1.weight.*shape"):
        other.load_state_dict(wrong)
    nan = dict(strip_prefix("net.", tensors))
    nan["conv1.bias"] = np.full(4, np.nan, np.float32)
    before = other.params()["conv1.weight"].copy()
    with pytest.raises(UserError, match="NaN"):
        other.load_state_dict(nan)
    np.testing.assert_array_equal(other.params()["conv1.weight"], before)  # untouched on error
    with pytest.raises(UserError, match="missing"):
        other.load_state_dict({})


def test_corrupt_or_missing_state_files_are_user_errors(tmp_path):
    path = tmp_path / "w.safetensors"
    with pytest.raises(UserError, match="does not exist"):
        load_state(path)
    save_state(path, {"a": np.ones(100, np.float32)})
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF  # flip bits in the tensor bytes
    path.write_bytes(bytes(data))
    with pytest.raises(UserError, match="corrupt"):
        load_state(path)
    path.write_bytes(b"\x05\x00")
    with pytest.raises(UserError, match="corrupt"):
        load_state(path)
    with pytest.raises(UserError, match="cannot write"):
        save_state(tmp_path / "w.safetensors" / "sub", {"a": np.ones(1, np.float32)})


def make_trainer(seed: int = 0, batch: int = 16):
    net = Net(SPEC, SHAPE, seed=seed)
    return Trainer(net, make_optimizer("adam", net.params(), 0.01), batch, seed=seed)


def test_trainer_learns_a_separable_toy_problem():
    x, y = toy_data()
    tr = make_trainer()
    before = evaluate(tr.net, x, y)
    report = tr.train(x, y, 60)
    after = evaluate(tr.net, x, y)
    assert after["accuracy"] >= 0.95 > before["accuracy"]
    assert after["loss"] < before["loss"]
    assert report["images_per_s"] > 0 and report["epoch"] == pytest.approx(10.0)
    assert tr.images == 60 * 16


def test_training_is_deterministic_given_the_seed():
    x, y = toy_data()
    a, b, c = make_trainer(1), make_trainer(1), make_trainer(2)
    for t in (a, b, c):
        t.train(x, y, 7)
    for k in a.net.params():
        np.testing.assert_array_equal(a.net.params()[k], b.net.params()[k])
    assert not np.array_equal(a.net.params()["fc1.weight"], c.net.params()["fc1.weight"])


def test_chunked_resumed_training_equals_one_long_run(tmp_path):
    """Stop mid-epoch, save net+optimizer+trainer, restore into fresh objects, continue."""
    x, y = toy_data(90)  # 90 / 16: epochs end with a partial batch
    long = make_trainer(5)
    long.train(x, y, 13)
    first = make_trainer(5)
    first.train(x, y, 4)
    first.train(x, y, 4)
    path = tmp_path / "ckpt.safetensors"
    save_state(path, {**with_prefix("net.", first.net.state_dict()),
                      **first.optimizer.state_dict(), **first.state_dict()})
    tensors, _ = load_state(path)
    resumed = make_trainer(99)  # different init: everything but the seed must come from the file
    resumed.seed = 5  # the run's own seed (--seed) is never taken from a checkpoint
    resumed.net.load_state_dict(strip_prefix("net.", tensors))
    resumed.optimizer.load_state_dict(tensors)
    resumed.load_state_dict(tensors)
    resumed.train(x, y, 5)
    assert resumed.step == long.step == 13 and resumed.epoch == long.epoch
    for k in long.net.params():
        np.testing.assert_array_equal(resumed.net.params()[k], long.net.params()[k], err_msg=k)


def test_a_checkpoint_of_another_seed_keeps_ours_and_starts_a_new_epoch(caplog):
    x, y = toy_data(90)
    first = make_trainer(5)
    first.train(x, y, 3)
    resumed = make_trainer(6)
    resumed.load_state_dict(first.state_dict())
    assert resumed.seed == 6 and resumed.position == 0 and resumed.epoch == first.epoch + 1
    assert "keeping 6" in caplog.text
    resumed.train(x, y, 2)


def test_trainer_rejects_bad_data_and_settings():
    x, y = toy_data(20)
    tr = make_trainer()
    with pytest.raises(UserError, match="batch size"):
        Trainer(tr.net, tr.optimizer, 0)
    with pytest.raises(UserError, match="labels"):
        tr.train(x, y[:10], 1)
    with pytest.raises(UserError, match="empty"):
        tr.train(x[:0], y[:0], 1)
    tr.train(x, y, 1)
    with pytest.raises(UserError, match="changed size"):
        tr.train(x[:10], y[:10], 1)
    with pytest.raises(UserError, match="trainer state"):
        tr.load_state_dict({})


def test_diverging_training_is_reported():
    x, y = toy_data(32)
    net = Net(SPEC, SHAPE)
    tr = Trainer(net, SGD(net.params(), lr=1e30, momentum=0.0), 16)
    with np.errstate(all="ignore"), pytest.raises(UserError, match="diverged"):
        tr.train(x, y, 5)
