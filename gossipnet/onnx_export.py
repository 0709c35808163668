"""Write a trained model as a standard ONNX graph (opset 13), checked by ``onnx.checker``.

The graph takes what a user has after resizing a picture, not gossipnet's normalised
tensor, so nothing of gossipnet is needed to use it:

- input ``image``: float32, NCHW, shape (N, C, H, W) with a free batch dimension N;
  pixel values 0-255 (not scaled to 0-1), channels in R, G, B order (C=3) or luma (C=1),
  the picture squashed to H x W as ``gossipnet.data.images.decode_image`` does;
- the graph subtracts the training mean and divides by the standard deviation per channel
  (both in ``metadata_props`` too), then runs the convnet;
- outputs ``logits`` (N, classes) and ``probabilities`` (softmax over classes);
- ``metadata_props``: ``classes`` (JSON list in label order), ``mean``, ``std`` (JSON),
  ``input_layout`` ("NCHW"), ``input_scale`` ("0-255"), ``color_mode``, ``resize``.

Layers map one to one: conv -> Conv (PyTorch's weight layout, which the numpy engine keeps),
pool -> MaxPool (floor), relu -> Relu, fc/softmax layer -> Flatten + Gemm(transB), and
dropout is the identity at inference, so it is left out. ``onnx`` is an optional
dependency (``pip install 'gossipnet[onnx]'``); importing this module without it is fine,
calling ``export_onnx`` raises a ``UserError`` with that command.
"""

from __future__ import annotations

import json

import numpy as np

from gossipnet.errors import UserError
from gossipnet.model import TrainedModel

OPSET = 13  # Softmax over one axis (opset 13 semantics); supported by every current runtime
INSTALL_HINT = "pip install 'gossipnet[onnx]' (or: pip install onnx)"


def onnx_available() -> bool:
    try:
        import onnx  # noqa: F401
    except ImportError:
        return False
    return True


def export_onnx(model: TrainedModel) -> bytes:
    """The serialised ONNX model; raises ``UserError`` if the onnx package is missing."""
    try:
        import onnx
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:
        raise UserError(f"exporting to ONNX needs the onnx package: {INSTALL_HINT}") from None
    card = model.card
    net = model.net  # builds and checks the weights
    c, h, w = card.input_shape
    inits = [
        numpy_helper.from_array(np.array(card.mean, np.float32).reshape(1, c, 1, 1), "input_mean"),
        numpy_helper.from_array(np.array(card.std, np.float32).reshape(1, c, 1, 1), "input_std"),
    ]
    nodes = [helper.make_node("Sub", ["image", "input_mean"], ["centred"]),
             helper.make_node("Div", ["centred", "input_std"], ["x0"])]
    x, flat = "x0", False
    counts: dict[str, int] = {}
    params = net.params()
    for layer in net.spec:
        kind = layer["type"]
        counts[kind] = counts.get(kind, 0) + 1
        name = kind if kind == "softmax" else f"{kind}{counts[kind]}"
        if kind in ("flatten", "fc", "softmax") and not flat:  # NCHW order, as Net's Flatten
            nodes.append(helper.make_node("Flatten", [x], [f"{name}_flat"], axis=1))
            x, flat = f"{name}_flat", True
        if kind in ("flatten", "dropout"):
            continue  # dropout is the identity at inference
        out = "logits" if kind == "softmax" else f"{name}_out"
        if kind in ("conv", "fc", "softmax"):
            inits += [numpy_helper.from_array(params[f"{name}.weight"], f"{name}.weight"),
                      numpy_helper.from_array(params[f"{name}.bias"], f"{name}.bias")]
        if kind == "conv":
            p = layer["pad"]
            nodes.append(helper.make_node("Conv", [x, f"{name}.weight", f"{name}.bias"], [out], name=name,
                                          kernel_shape=[layer["size"]] * 2, strides=[layer["stride"]] * 2,
                                          pads=[p, p, p, p]))
        elif kind == "pool":
            nodes.append(helper.make_node("MaxPool", [x], [out], name=name, kernel_shape=[layer["size"]] * 2,
                                          strides=[layer["stride"]] * 2))
        elif kind == "relu":
            nodes.append(helper.make_node("Relu", [x], [out], name=name))
        else:  # fc, and the softmax layer's logits
            nodes.append(helper.make_node("Gemm", [x, f"{name}.weight", f"{name}.bias"], [out], name=name,
                                          transB=1))
        x = out
    nodes.append(helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1))
    k = len(card.classes)
    graph = helper.make_graph(
        nodes, "gossipnet_convnet",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", c, h, w])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", k]),
         helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", k])],
        initializer=inits,
    )
    onnx_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                   producer_name="gossipnet", doc_string=preprocessing_doc(model))
    onnx_model.ir_version = 8  # readable by onnxruntime >= 1.14, not only the newest
    helper.set_model_props(onnx_model, metadata(model))
    onnx.checker.check_model(onnx_model, full_check=True)
    return onnx_model.SerializeToString()


def metadata(model: TrainedModel) -> dict[str, str]:
    card = model.card
    c, h, w = card.input_shape
    return {
        "classes": json.dumps(list(card.classes)),
        "mean": json.dumps(list(card.mean)),
        "std": json.dumps(list(card.std)),
        "input_name": "image",
        "input_layout": "NCHW",
        "input_scale": "0-255",
        "color_mode": "grayscale" if c == 1 else "rgb",
        "resize": f"squash to {w}x{h}, bilinear",
        "dataset": card.dataset,
    }


def preprocessing_doc(model: TrainedModel) -> str:
    c, h, w = model.card.input_shape
    colour = "grey (luma)" if c == 1 else "RGB"
    return (f"gossipnet convnet. Input 'image': float32 NCHW (N, {c}, {h}, {w}), {colour} pixel values "
            f"0-255 of the picture squashed to {w}x{h}; normalisation is inside the graph. Outputs "
            "'logits' and 'probabilities' (N, classes); class names in metadata_props['classes'].")
