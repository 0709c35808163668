"""A float32 numpy convnet engine: layers, nets from declarative specs, optimizers, training.

Pure numpy (no asyncio, no sockets): a node's learner and the in-process simulator drive
it with plain calls.
"""

from gossipnet.nn.net import Net
from gossipnet.nn.optim import SGD, Adam, Optimizer, cosine_lr, make_optimizer
from gossipnet.nn.spec import PRESETS, NetPreset, canonical_spec, fingerprint, fit_preset, get_preset
from gossipnet.nn.state import load_state, save_state
from gossipnet.nn.train import Trainer, evaluate

__all__ = [
    "PRESETS", "SGD", "Adam", "Net", "NetPreset", "Optimizer", "Trainer", "canonical_spec",
    "cosine_lr", "evaluate", "fingerprint", "fit_preset", "get_preset", "load_state", "make_optimizer",
    "save_state",
]
