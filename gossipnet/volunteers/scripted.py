"""A volunteer in Python: does what the browser page does, with the numpy engine.

For the benchmark (how many updates per second a node validates and merges) and the
hostile-client tests: ``honest_update`` computes a lease exactly as gossipnet/web does,
and ``update_body`` packs any delta, honest or not, the way the page posts it.
"""

from __future__ import annotations

import numpy as np
import safetensors.numpy as stn

from gossipnet.data.normalize import normalise
from gossipnet.nn import Net, make_optimizer
from gossipnet.nn.train import train_sequence


def honest_update(lease: dict, weights_blob: bytes, images_blob: bytes) -> tuple[dict[str, np.ndarray], float]:
    """Train the lease from its weights and optimiser state on its images: (delta by
    parameter, mean loss)."""
    blob = stn.load(weights_blob)
    data = stn.load(images_blob)
    o = lease["optimizer"]
    net = Net(lease["spec"], tuple(lease["input_shape"]))
    weights = {k: v for k, v in blob.items() if not k.startswith(o["kind"] + ".")}
    net.load_state_dict(weights)
    opt = make_optimizer(o["kind"], net.params(), o["lr"], o["weight_decay"], o["momentum"])
    opt.load_state_dict({k: v for k, v in blob.items() if k.startswith(o["kind"] + ".")})
    x = normalise(data["x"], lease["normalise"]["mean"], lease["normalise"]["std"])
    losses = train_sequence(net, opt, x, data["y"].astype(np.int64), lease["batch_size"], lease["seed"])
    return {k: p - weights[k] for k, p in net.params().items()}, float(np.mean(losses))


def update_body(lease: dict, delta: dict[str, np.ndarray], loss: float, *, base_version: int | None = None,
                token: str | None = None) -> bytes:
    """The POST /volunteer/update body for ``delta`` (any lease fields may be overridden)."""
    meta = {"lease": token if token is not None else lease["lease"],
            "base_version": str(lease["base_version"] if base_version is None else base_version),
            "loss": repr(float(loss)), "images": str(lease["steps"] * lease["batch_size"])}
    return stn.save({f"delta.{k}": np.ascontiguousarray(v) for k, v in delta.items()}, metadata=meta)
