"""A tiny, weightless insightface-style model pack built with ``onnx.helper``.

Real packs cannot be downloaded here, so tests (and anyone checking plumbing) build this:
- ``det_tiny.onnx``: SCRFD signature (input ``[1, 3, H, W]`` dynamic; 9 outputs: scores, box
  distances and 5 keypoints for strides 8/16/32, 2 anchors). It "detects" bright square
  blobs of about 96 px on a dark background: the score at stride 32 is the mean brightness
  of a 96 px window, with a fixed 96 px box and a fixed face-like keypoint layout around it.
- ``rec_tiny.onnx``: ArcFace signature (input ``[1, 3, 112, 112]``, one 512-d output): a
  fixed random projection of 4x4 average colours, so different crops embed differently.

It proves loading, routing, detection decoding, alignment and embedding end to end. It
says nothing about accuracy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

BLOB_PX = 96
STRIDES = (8, 16, 32)
# keypoints in stride-32 units around an anchor: eyes, nose, mouth corners
_KPS = np.array([-0.45, -0.35, 0.45, -0.35, 0.0, 0.1, -0.35, 0.55, 0.35, 0.55], np.float32)


def _detector(path: Path, opset: int) -> None:
    from onnx import TensorProto, helper

    nodes, inits = [], []

    def const(name: str, arr: np.ndarray) -> str:
        inits.append(helper.make_tensor(name, TensorProto.FLOAT if arr.dtype == np.float32 else TensorProto.INT64,
                                        arr.shape, arr.ravel().tolist()))
        return name

    const("zero", np.zeros((1,), np.float32))
    const("half", np.full((1,), 0.5, np.float32))
    const("shape_1", np.array([-1, 1], np.int64))
    const("shape_4", np.array([-1, 4], np.int64))
    const("shape_10", np.array([-1, 10], np.int64))
    scores, boxes, kps = [], [], []
    for s in STRIDES:
        # mean brightness over a 3-stride window centred on each anchor cell
        nodes.append(helper.make_node("AveragePool", ["input.1"], [f"pool{s}"], kernel_shape=[3 * s, 3 * s],
                                      strides=[s, s], pads=[s, s, s, s], count_include_pad=1))
        nodes.append(helper.make_node("ReduceMean", [f"pool{s}"], [f"mean{s}"], axes=[1], keepdims=1))
        nodes.append(helper.make_node("Mul", [f"mean{s}", "zero"], [f"z{s}"]))  # (1,1,h,w) zeros
        if s == 32:
            # input is (x - 127.5) / 128: a white window scores ~1, black ~0
            nodes.append(helper.make_node("Mul", [f"mean{s}", "half"], [f"sh{s}"]))
            nodes.append(helper.make_node("Add", [f"sh{s}", "half"], [f"sc{s}"]))
        else:
            nodes.append(helper.make_node("Add", [f"z{s}", "zero"], [f"sc{s}"]))
        for kind, width, values, out in (("score", 1, None, scores), ("bbox", 4, None, boxes),
                                         ("kps", 10, None, kps)):
            if kind == "score":
                src = f"sc{s}"
            else:
                vals = np.full((4,), BLOB_PX / 2 / 32, np.float32) if kind == "bbox" else _KPS * (32 / s)
                if kind == "bbox":
                    vals = vals * (32 / s)
                c = const(f"{kind}_c{s}", vals.reshape(1, width, 1, 1).astype(np.float32))
                src = f"{kind}_b{s}"
                nodes.append(helper.make_node("Add", [f"z{s}", c], [src]))  # broadcast to (1,width,h,w)
            nodes.append(helper.make_node("Transpose", [src], [f"{kind}_t{s}"], perm=[0, 2, 3, 1]))
            nodes.append(helper.make_node("Concat", [f"{kind}_t{s}", f"{kind}_t{s}"], [f"{kind}_a{s}"], axis=3))
            name = f"{kind}_{s}"
            nodes.append(helper.make_node("Reshape", [f"{kind}_a{s}", f"shape_{width}"], [name]))
            out.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [f"n{s}", width]))
    graph = helper.make_graph(nodes, "tiny_scrfd",
                              [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, "h", "w"])],
                              scores + boxes + kps, initializer=inits)
    _save(graph, path, opset)


def _recogniser(path: Path, opset: int, seed: int) -> None:
    from onnx import TensorProto, helper

    rng = np.random.default_rng(seed)
    w = rng.standard_normal((48, 512)).astype(np.float32)
    inits = [helper.make_tensor("proj", TensorProto.FLOAT, w.shape, w.ravel().tolist())]
    nodes = [
        helper.make_node("AveragePool", ["input.1"], ["cells"], kernel_shape=[28, 28], strides=[28, 28]),
        helper.make_node("Flatten", ["cells"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "proj"], ["683"]),
    ]
    graph = helper.make_graph(nodes, "tiny_arcface",
                              [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, 112, 112])],
                              [helper.make_tensor_value_info("683", TensorProto.FLOAT, [1, 512])],
                              initializer=inits)
    _save(graph, path, opset)


def _save(graph, path: Path, opset: int) -> None:
    import onnx
    from onnx import helper

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def build_tiny_pack(dest: Path, seed: int = 0, opset: int = 13) -> Path:
    """Write the two models into ``dest`` (created) and return it."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    _detector(dest / "det_tiny.onnx", opset)
    _recogniser(dest / "rec_tiny.onnx", opset, seed)
    return dest


def blob_image(width: int = 640, height: int = 480, centre: tuple[int, int] = (320, 240),
               side: int = BLOB_PX, colour=(255, 255, 255)) -> np.ndarray:
    """A dark BGR frame with one bright square: what the tiny detector sees as a face."""
    img = np.zeros((height, width, 3), np.uint8)
    x0, y0 = centre[0] - side // 2, centre[1] - side // 2
    img[max(0, y0):y0 + side, max(0, x0):x0 + side] = colour
    return img
