"""A trained convnet a user can take away: weights, architecture, class names, preprocessing.

``ModelCard`` is what a weights file alone does not say: the layer spec and input shape,
the class names in label order, and the per-channel mean and standard deviation (in pixel
values, 0-255) the training images were normalised with. The convnet learner stores it
in its state (so a daemon's checkpoint carries it), ``gossipnet train`` in its checkpoint's
metadata, and a downloaded model file in its metadata.

``load_model`` opens any of them: a ``gossipnet train --checkpoint`` file, a node's state
directory or its ``checkpoint.safetensors``, or a ``model.safetensors`` from a status page.
Classification uses ``gossipnet.data.images.decode_image``, the folder reader's own path.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gossipnet.checkpoint import Checkpoint, CheckpointStore, encode
from gossipnet.data.images import decode_image
from gossipnet.data.normalize import normalise
from gossipnet.errors import UserError
from gossipnet.nn import Net
from gossipnet.nn.state import read_checkpoint

CARD_FORMAT = "gossipnet-model/1"
CARD_TENSOR = "learner.model_card"  # in a convnet learner's state dict, as uint8 JSON
_NODE_PREFIX = "learner/"  # node checkpoints keep the learner's state under this prefix


@dataclass(frozen=True)
class ModelCard:
    """How to build the net and feed it: spec, input shape (C, H, W), classes, mean, std."""

    spec: tuple[dict, ...]
    input_shape: tuple[int, int, int]
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    dataset: str = ""

    def to_json(self) -> dict:
        return {"format": CARD_FORMAT, "spec": list(self.spec), "input_shape": list(self.input_shape),
                "classes": list(self.classes), "mean": list(self.mean), "std": list(self.std),
                "dataset": self.dataset}

    @classmethod
    def from_json(cls, doc: object, where: str) -> "ModelCard":
        """Check every field; a bad card is a ``UserError`` naming the file."""
        try:
            if not isinstance(doc, dict) or doc.get("format") != CARD_FORMAT:
                raise ValueError(f"format is not {CARD_FORMAT}")
            card = cls(tuple(doc["spec"]), tuple(int(v) for v in doc["input_shape"]),
                       tuple(str(c) for c in doc["classes"]), tuple(float(v) for v in doc["mean"]),
                       tuple(float(v) for v in doc["std"]), str(doc.get("dataset", "")))
            c = card.input_shape[0]
            if len(card.input_shape) != 3 or len(card.mean) != c or len(card.std) != c:
                raise ValueError("mean and std need one value per input channel")
            if not all(math.isfinite(v) for v in card.mean + card.std) or min(card.std) <= 0:
                raise ValueError("mean and std must be finite, std positive")
            if len(card.classes) != card.spec[-1].get("classes"):
                raise ValueError("the class list does not match the softmax layer")
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            raise UserError(f"{where}: the model description is damaged ({exc}); "
                            "export the model again") from None
        return card

    def to_bytes(self) -> np.ndarray:
        """The card as a uint8 array (for a learner's state dict)."""
        return np.frombuffer(json.dumps(self.to_json(), sort_keys=True).encode(), np.uint8).copy()


class TrainedModel:
    """A net ready to classify pictures, with its card.

    ``images``: how many images the weights learned from (a node's age), when the file says;
    ``lineage``: the init its unit order descends from (``rebasin.lineage``), when it says.
    Both let ``gossipnet run --start-from`` carry a model into a swarm at its true weight.
    """

    def __init__(self, card: ModelCard, weights: dict[str, np.ndarray], source: str = "",
                 images: float = 0.0, lineage: str | None = None):
        self.card, self.source = card, source
        self.images, self.lineage = images, lineage
        self.weights = {k: np.asarray(v, np.float32) for k, v in weights.items()}
        self._net: Net | None = None

    @property
    def net(self) -> Net:
        """The numpy net holding these weights, built on first use (checks names and shapes)."""
        if self._net is None:
            net = Net(self.card.spec, self.card.input_shape)
            try:
                net.load_state_dict(self.weights)
            except UserError as exc:
                raise UserError(f"{self.source or 'model'}: {exc}") from None
            self._net = net
        return self._net

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities (N, classes), float64, for uint8 (N, C, H, W) pictures."""
        x = normalise(np.asarray(images, np.uint8), np.array(self.card.mean), np.array(self.card.std))
        logits = self.net.forward(x).astype(np.float64)
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(axis=1, keepdims=True)

    def decode(self, source: str | os.PathLike | bytes, **limits) -> np.ndarray:
        """One picture (path or bytes) as this model's (C, H, W) uint8 input; ``BadImage`` if not."""
        c, h, w = self.card.input_shape
        if h != w:
            raise UserError(f"{self.source}: non-square inputs ({h}x{w}) are not supported")
        return decode_image(source, h, c, **limits)

    def top_k(self, probs: np.ndarray, k: int) -> list[dict]:
        """The ``k`` best labels of one probability row, best first, as JSON-able dicts."""
        order = np.argsort(-probs, kind="stable")[: max(1, k)]
        return [{"label": self.card.classes[i], "probability": float(probs[i])} for i in order]

    def to_bytes(self) -> bytes:
        """This model as a safetensors file (a gossipnet checkpoint any safetensors reader opens)."""
        tensors = {f"net.{k}": v for k, v in self.weights.items()}
        return encode(Checkpoint(tensors, {"model": self.card.to_json()}))


def load_model(path: str | os.PathLike) -> TrainedModel:
    """A trained model from a train checkpoint, a model file, or a node's state directory."""
    p = Path(path).expanduser()
    if p.is_dir():
        if not (p / "checkpoint.safetensors").exists() and not (p / "checkpoint.prev.safetensors").exists():
            raise UserError(f"{p} holds no checkpoint.safetensors; give a node's --state-dir (after it "
                            "has written its first checkpoint) or a file from gossipnet train --checkpoint")
        ckpt = CheckpointStore(p).load()
        assert ckpt is not None  # a file exists, so load() returns one or raises
        where = str(p / "checkpoint.safetensors")
    else:
        ckpt = read_checkpoint(p, "model file")
        where = str(p)
    return model_from_checkpoint(ckpt, where)


def model_from_checkpoint(ckpt: Checkpoint, where: str) -> TrainedModel:
    """Find the card and the net's weights in any of the three layouts."""
    tensors, meta = ckpt.tensors, ckpt.meta
    if isinstance(meta.get("model"), dict):
        card = ModelCard.from_json(meta["model"], where)
        prefix = "net."
    elif _NODE_PREFIX + CARD_TENSOR in tensors:
        raw = bytes(np.asarray(tensors[_NODE_PREFIX + CARD_TENSOR], np.uint8))
        try:
            doc = json.loads(raw)
        except ValueError:
            doc = None
        card = ModelCard.from_json(doc, where)
        prefix = _NODE_PREFIX + "net."
    else:
        kind = "a neuroevolution island's" if _NODE_PREFIX + "learner.algo" in tensors else "its"
        raise UserError(f"{where} holds no model description ({kind} checkpoint has no class names and "
                        "preprocessing): only convnet checkpoints written by this version of gossipnet "
                        "can be used for prediction; train again or let the node write a new checkpoint")
    weights = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    own = prefix[: -len("net.")]  # where this layout keeps the learner's or trainer's counters
    images = _scalar(tensors, own + "learner.age", own + "trainer.images")
    raw = tensors.get(own + "learner.lineage")
    lineage = bytes(np.asarray(raw, np.uint8)).decode("ascii", "replace") if raw is not None else None
    return TrainedModel(card, weights, where, images=images, lineage=lineage)


def _scalar(tensors: dict[str, np.ndarray], *names: str) -> float:
    """The first of ``names`` that holds a finite non-negative scalar, else 0."""
    for name in names:
        try:
            v = float(np.asarray(tensors[name]).reshape(()))
        except (KeyError, TypeError, ValueError):
            continue
        if math.isfinite(v) and v >= 0:
            return v
    return 0.0
