"""dlib's face-recognition ResNet (``dlib_face_recognition_resnet_model_v1.dat``) as an ONNX graph.

dlib-bin runs the network on its own BLAS-less CPU code (~150 ms a face here); ONNX Runtime
runs the same weights several times faster. This module reads dlib's serialisation format
itself (no dlib needed to convert), checks the file against the network dlib's example
``dnn_face_recognition_ex.cpp`` defines (``anet_type``), and writes the equivalent graph.

dlib's format, as read here (dlib/serialize.h, dlib/dnn/core.h, layers.h, tensor.h):
- integers: one control byte (0x80 = negative, low nibble = byte count), then the bytes,
  least significant first;
- float/double scalars: an integer mantissa then an integer exponent (value = m * 2**e);
- strings: length (integer) then the bytes; bools: the characters '0' / '1';
- tensors: version 2, then num_samples, k, nr, nc, then raw little-endian float32;
  alias tensors (views into a layer's ``params``): version 1 then the four sizes only;
- a network is serialised outermost layer first, recursively: ``add_loss_layer`` (version 1,
  loss details, subnet); ``add_layer`` (version 1-2, subnet, details, 3 flags, x_grad,
  cached_output[, params_grad]); the innermost ``add_layer`` holds the input layer (version
  2-3, input, details, flags, 3 tensors[, sample_expansion_factor]); ``tag``/``skip`` layers
  write only their version (1) and subnet. Tags and skips carry no id in the file, so the
  topology comes from ``anet_type`` below and the file is checked against it, layer by layer.

Graph: input uint8 [N, 150, 150, 3] RGB chips (what ``dlib.get_face_chip`` returns), minus
dlib's channel means, / 256, NCHW; each conv is folded with the affine layer after it (the
trained net's batch norms, already frozen to ``affine_`` in the file); ``add_prev`` of
tensors of different sizes zero-pads the smaller at the end, as dlib's ``tt::add`` does.
Output: float32 [N, 128], the descriptor ``compute_face_descriptor`` returns.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

CONVERTER_VERSION = 1  # bump when the graph built from the same .dat changes
CHIP_PX = 150
VERIFY_MIN_COSINE = 0.9999  # per face, converted vs dlib's own descriptor
MAX_ABS_WEIGHT = 1e3  # trained weights here are |w| < ~40; a flipped exponent byte lands far outside


class DatFormatError(ValueError):
    """The .dat file is not the dlib face ResNet this converter knows; names the layer."""


# -- the architecture: dnn_face_recognition_ex.cpp's anet_type, outermost layer first ----------
@dataclass
class Layer:
    kind: str  # con, affine, relu, max_pool, avg_pool, add_prev, fc, tag, skip
    where: str  # human description for error messages
    args: tuple = ()
    params: dict = field(default_factory=dict)

    @property
    def is_add_layer(self) -> bool:
        return self.kind not in ("tag", "skip")


def _block(n: int, stride: int, where: str) -> list[Layer]:
    # block = BN<con<N,3,3,1,1, relu<BN<con<N,3,3,stride,stride, SUBNET>>>>>, BN = affine
    return [Layer("affine", f"{where} affine 2"), Layer("con", f"{where} con 3x3/1 x{n}", (n, 3, 3, 1, 1)),
            Layer("relu", f"{where} relu 1"), Layer("affine", f"{where} affine 1"),
            Layer("con", f"{where} con 3x3/{stride} x{n}", (n, 3, 3, stride, stride))]


def _ares(n: int, where: str) -> list[Layer]:
    # relu<add_prev1<block<N,affine,1,tag1<SUBNET>>>>
    return [Layer("relu", f"{where} relu out"), Layer("add_prev", f"{where} add_prev1", (1,)),
            *_block(n, 1, where), Layer("tag", f"{where} tag1", (1,))]


def _ares_down(n: int, where: str) -> list[Layer]:
    # relu<add_prev2<avg_pool<2,2,2,2,skip1<tag2<block<N,affine,2,tag1<SUBNET>>>>>>>
    return [Layer("relu", f"{where} relu out"), Layer("add_prev", f"{where} add_prev2", (2,)),
            Layer("avg_pool", f"{where} avg_pool 2x2/2", (2, 2, 2, 2)), Layer("skip", f"{where} skip1", (1,)),
            Layer("tag", f"{where} tag2", (2,)), *_block(n, 2, where), Layer("tag", f"{where} tag1", (1,))]


def architecture() -> list[Layer]:
    layers = [Layer("fc", "fc_no_bias 128", (128,)), Layer("avg_pool", "avg_pool_everything", (0, 0, 1, 1))]
    layers += _ares_down(256, "level0 ares_down 256")
    for i, n in enumerate((256, 256)):
        layers += _ares(n, f"level1 ares {n} #{i + 1}")
    layers += _ares_down(256, "level1 ares_down 256")
    for i, n in enumerate((128, 128)):
        layers += _ares(n, f"level2 ares {n} #{i + 1}")
    layers += _ares_down(128, "level2 ares_down 128")
    for i, n in enumerate((64, 64, 64)):
        layers += _ares(n, f"level3 ares {n} #{i + 1}")
    layers += _ares_down(64, "level3 ares_down 64")
    for i, n in enumerate((32, 32, 32)):
        layers += _ares(n, f"level4 ares {n} #{i + 1}")
    layers += [Layer("max_pool", "stem max_pool 3x3/2", (3, 3, 2, 2)), Layer("relu", "stem relu"),
               Layer("affine", "stem affine"), Layer("con", "stem con 7x7/2 x32", (32, 7, 7, 2, 2))]
    for i, layer in enumerate(layers):
        layer.where = f"layer {i + 1} ({layer.where})"
    return layers


# -- reading dlib's primitives ------------------------------------------------------------------
class _Reader:
    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0
        self.where = "file header"

    def fail(self, msg: str) -> DatFormatError:
        return DatFormatError(f"{self.where}, byte {self.pos}: {msg}")

    def take(self, n: int, what: str) -> bytes:
        if self.pos + n > len(self.data):
            raise self.fail(f"file ends inside {what} (truncated .dat?)")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def int(self, what: str, signed: bool = True) -> int:
        ctl = self.take(1, what)[0]
        size = ctl & 0x0F
        if size == 0 or size > 8 or ctl & 0x70:
            raise self.fail(f"bad integer control byte 0x{ctl:02x} for {what}")
        if ctl & 0x80 and not signed:
            raise self.fail(f"negative value for unsigned {what}")
        value = int.from_bytes(self.take(size, what), "little")
        return -value if ctl & 0x80 else value

    def float(self, what: str) -> float:
        mantissa = self.int(f"{what} (mantissa)")
        exponent = self.int(f"{what} (exponent)")
        if exponent >= 32000:  # dlib's float_details codes for inf / -inf / nan
            raise self.fail(f"{what} is not finite")
        return float(np.ldexp(float(mantissa), exponent))

    def bool(self, what: str) -> bool:
        ch = self.take(1, what)
        if ch not in (b"0", b"1"):
            raise self.fail(f"bad bool {ch!r} for {what}")
        return ch == b"1"

    def str(self, what: str, max_len: int = 64) -> str:
        n = self.int(f"length of {what}", signed=False)
        if n > max_len:
            raise self.fail(f"{what} is {n} bytes long, expected a short layer name")
        raw = self.take(n, what)
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError:
            raise self.fail(f"{what} is not text: {raw[:16]!r}") from None

    def expect_str(self, allowed: tuple[str, ...], what: str) -> str:
        s = self.str(what)
        if s not in allowed:
            raise self.fail(f"expected {' or '.join(repr(a) for a in allowed)}, found {s!r}")
        return s

    def version(self, allowed: tuple[int, ...], what: str) -> int:
        v = self.int(f"{what} version")
        if v not in allowed:
            raise self.fail(f"unexpected {what} version {v} (dlib writes {', '.join(map(str, allowed))})")
        return v

    def shape4(self, what: str) -> tuple[int, int, int, int]:
        dims = tuple(self.int(f"{what} size") for _ in range(4))
        if any(d < 0 or d > 1 << 24 for d in dims):
            raise self.fail(f"implausible {what} shape {dims}")
        return dims  # type: ignore[return-value]

    def tensor(self, what: str) -> np.ndarray:
        self.version((2,), f"{what} tensor")
        shape = self.shape4(what)
        n = int(np.prod(shape))
        values = np.frombuffer(self.take(4 * n, f"{what} values ({n} floats)"), dtype="<f4").reshape(shape)
        if n and (not np.all(np.isfinite(values)) or float(np.abs(values).max()) > MAX_ABS_WEIGHT):
            raise self.fail(f"{what} holds non-finite or implausible values (corrupted .dat?)")
        return values.astype(np.float32)

    def alias(self, what: str) -> tuple[int, int, int, int]:
        self.version((1,), f"{what} alias tensor")
        return self.shape4(what)


# -- reading the network --------------------------------------------------------------------
@dataclass
class ParsedNet:
    layers: list[Layer]  # outermost first, params filled in
    channel_means: tuple[float, float, float]  # R, G, B
    input_px: tuple[int, int]
    loss: dict


def _details(r: _Reader, layer: Layer) -> None:
    """One layer's own fields (``serialize(item.details)``), checked against the architecture."""
    k = layer.kind
    if k == "con":
        r.expect_str(("con_4", "con_5", "con_6"), "layer name")
        params = r.tensor("params")
        n_filters = r.int("num_filters")
        nr, nc, sy, sx = r.int("nr"), r.int("nc"), r.int("stride_y"), r.int("stride_x")
        py, px = r.int("padding_y"), r.int("padding_x")
        filters = r.alias("filters")
        biases = r.alias("biases")
        for _ in range(4):
            r.float("learning-rate multiplier")
        want_n, want_nr, want_nc, want_sy, want_sx = layer.args
        if (n_filters, nr, nc, sy, sx) != (want_n, want_nr, want_nc, want_sy, want_sx):
            raise r.fail(f"conv is {n_filters} filters {nr}x{nc}/{sy}x{sx}, architecture says "
                         f"{want_n} filters {want_nr}x{want_nc}/{want_sy}x{want_sx}")
        nf = int(np.prod(filters))
        nb = int(np.prod(biases))
        if filters[0] != n_filters or filters[2:] != (nr, nc) or params.size != nf + nb or nb not in (0, n_filters):
            raise r.fail(f"conv parameter sizes disagree: params {params.size}, filters {filters}, biases {biases}")
        flat = params.reshape(-1)
        layer.params = {"w": flat[:nf].reshape(filters), "b": flat[nf:nf + nb] if nb else np.zeros(n_filters, np.float32),
                        "stride": (sy, sx), "pad": (py, px)}
    elif k == "affine":
        name = r.expect_str(("affine_", "affine_2", "bn_con2"), "layer name")
        params = r.tensor("params").reshape(-1)
        g, b = r.alias("gamma"), r.alias("beta")
        ng, nb = int(np.prod(g)), int(np.prod(b))
        if name == "bn_con2":  # a trained batch norm: freeze it to an affine map as dlib does
            means, invstds = r.tensor("means"), r.tensor("invstds")
            rmeans, rvars = r.tensor("running_means").reshape(-1), r.tensor("running_variances").reshape(-1)
            r.int("num_updates", signed=False)
            r.int("running_stats_window_size", signed=False)
            for _ in range(4):
                r.float("learning-rate multiplier")
            eps = r.float("eps")
            del means, invstds
            gamma = params[:ng] / np.sqrt(rvars + eps)
            beta = params[ng:ng + nb] - gamma * rmeans
        else:
            mode = r.int("mode")
            if mode != 0:
                raise r.fail(f"affine layer in mode {mode}, expected CONV_MODE (0)")
            if name == "affine_2" and r.bool("disabled"):
                raise r.fail("affine layer is disabled")
            gamma, beta = params[:ng], params[ng:ng + nb]
        if ng != nb or params.size != ng + nb:
            raise r.fail(f"affine sizes disagree: params {params.size}, gamma {g}, beta {b}")
        layer.params = {"gamma": gamma.astype(np.float32), "beta": beta.astype(np.float32)}
    elif k == "relu":
        if r.expect_str(("relu_", "relu_2"), "layer name") == "relu_2" and r.bool("disabled"):
            raise r.fail("relu layer is disabled")
    elif k in ("max_pool", "avg_pool"):
        r.expect_str((f"{k}_2",), "layer name")
        got = (r.int("nr"), r.int("nc"), r.int("stride_y"), r.int("stride_x"))
        pad = (r.int("padding_y"), r.int("padding_x"))
        if got != layer.args:
            raise r.fail(f"pooling is {got}, architecture says {layer.args} (window rows, cols, strides)")
        layer.params = {"pad": pad}
    elif k == "add_prev":
        r.expect_str(("add_prev_",), "layer name")
    elif k == "fc":
        r.expect_str(("fc_2", "fc_3"), "layer name")
        n_out, n_in = r.int("num_outputs", signed=False), r.int("num_inputs", signed=False)
        params = r.tensor("params")
        w, b = r.alias("weights"), r.alias("biases")
        bias_mode = r.int("bias_mode")
        for _ in range(4):
            r.float("learning-rate multiplier")
        if n_out != layer.args[0] or bias_mode != 1 or w[:2] != (n_in, n_out) or params.size != n_in * n_out:
            raise r.fail(f"fc layer is {n_in}->{n_out} bias_mode {bias_mode}, architecture says "
                         f"fc_no_bias to {layer.args[0]}")
        layer.params = {"w": params.reshape(-1)[:n_in * n_out].reshape(n_in, n_out)}
    else:  # pragma: no cover - architecture() only makes the kinds above
        raise AssertionError(k)


def _add_layer_trailer(r: _Reader, version: int, innermost: bool) -> None:
    for flag in ("this_layer_setup_called", "gradient_input_is_stale", "get_output_and_gradient_input_disabled"):
        r.bool(flag)
    r.tensor("x_grad")
    r.tensor("cached_output")
    if innermost or version == 2:
        r.tensor("params_grad")
    if innermost and version == 3:
        r.int("sample_expansion_factor")


def parse(data: bytes) -> ParsedNet:
    """Read a serialised ``anet_type``; DatFormatError names the layer where the file disagrees."""
    layers = architecture()
    r = _Reader(data)
    r.where = "loss layer (loss_metric)"
    r.version((1,), "add_loss_layer")
    loss_name = r.expect_str(("loss_metric_", "loss_metric_2"), "loss name")
    loss = {"margin": r.float("margin"), "distance_threshold": r.float("dist_thresh")} if loss_name.endswith("2") else {}
    versions: list[int] = []
    last = len(layers) - 1
    for i, layer in enumerate(layers):
        r.where = layer.where
        if not layer.is_add_layer:
            versions.append(r.version((1,), f"{layer.kind} layer"))
        elif i == last:
            versions.append(r.version((2, 3), "input add_layer"))
        else:
            versions.append(r.version((1, 2), "add_layer"))
    r.where = "input layer (input_rgb_image_sized<150>)"
    name = r.expect_str(("input_rgb_image_sized", "input_rgb_image"), "input layer name")
    means = (r.float("avg_red"), r.float("avg_green"), r.float("avg_blue"))
    size = (CHIP_PX, CHIP_PX)
    if name == "input_rgb_image_sized":
        size = (r.int("NR", signed=False), r.int("NC", signed=False))
        if size != (CHIP_PX, CHIP_PX):
            raise r.fail(f"input is {size[0]}x{size[1]}, expected {CHIP_PX}x{CHIP_PX}")
    for i in range(last, -1, -1):  # details come back innermost first
        layer = layers[i]
        if not layer.is_add_layer:
            continue
        r.where = layer.where
        _details(r, layer)
        _add_layer_trailer(r, versions[i], innermost=(i == last))
    if r.pos != len(data):
        r.where = "end of file"
        raise r.fail(f"{len(data) - r.pos} unexpected trailing bytes")
    return ParsedNet(layers, means, size, loss)


# -- building the ONNX graph --------------------------------------------------------------------
def build_model(net: ParsedNet):
    """The ONNX model of a parsed net (opset 17), and its multiply-add count per face."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits = [], []
    counter = iter(range(1 << 30))

    def const(arr: np.ndarray, hint: str) -> str:
        name = f"{hint}_{next(counter)}"
        inits.append(numpy_helper.from_array(np.ascontiguousarray(arr), name))
        return name

    def node(op: str, inputs: list[str], hint: str, **attrs) -> str:
        out = f"{hint}_{next(counter)}"
        nodes.append(helper.make_node(op, inputs, [out], **attrs))
        return out

    # preprocessing exactly as input_rgb_image_sized::to_tensor: (pixel - avg) / 256, RGB planes
    x = node("Cast", ["chips"], "f32", to=TensorProto.FLOAT)
    x = node("Sub", [x, const(np.array(net.channel_means, np.float32), "mean")], "centred")
    x = node("Mul", [x, const(np.array(1 / 256, np.float32), "scale")], "scaled")  # exact: power of two
    x = node("Transpose", [x], "nchw", perm=[0, 3, 1, 2])
    shape = (3, *net.input_px)  # C, H, W
    tags: dict[int, tuple[str, tuple]] = {}
    macs = 0
    forward = list(reversed(net.layers))
    i = 0
    while i < len(forward):
        layer = forward[i]
        k = layer.kind
        if k == "con":
            w, b = layer.params["w"], layer.params["b"]
            nxt = forward[i + 1] if i + 1 < len(forward) else None
            if nxt is not None and nxt.kind == "affine":  # fold the frozen batch norm into the conv
                g, beta = nxt.params["gamma"], nxt.params["beta"]
                w = w * g[:, None, None, None]
                b = b * g + beta
                i += 1
            (sy, sx), (py, px) = layer.params["stride"], layer.params["pad"]
            x = node("Conv", [x, const(w.astype(np.float32), "w"), const(b.astype(np.float32), "b")], "conv",
                     kernel_shape=list(w.shape[2:]), strides=[sy, sx], pads=[py, px, py, px])
            oh = 1 + (shape[1] + 2 * py - w.shape[2]) // sy
            ow = 1 + (shape[2] + 2 * px - w.shape[3]) // sx
            macs += w.size * oh * ow
            shape = (w.shape[0], oh, ow)
        elif k == "affine":  # not after a conv (never in this net, kept for completeness)
            c = shape[0]
            x = node("Mul", [x, const(layer.params["gamma"].reshape(1, c, 1, 1), "g")], "affine")
            x = node("Add", [x, const(layer.params["beta"].reshape(1, c, 1, 1), "beta")], "affine")
        elif k == "relu":
            x = node("Relu", [x], "relu")
        elif k in ("max_pool", "avg_pool"):
            wr, wc, sy, sx = layer.args
            py, px = layer.params["pad"]
            if wr == 0:  # avg_pool_everything
                x = node("GlobalAveragePool", [x], "gap")
                shape = (shape[0], 1, 1)
            else:
                if (py, px) != (0, 0):
                    raise DatFormatError(f"{layer.where}: padded pooling is not supported by this converter")
                op = "MaxPool" if k == "max_pool" else "AveragePool"
                x = node(op, [x], k, kernel_shape=[wr, wc], strides=[sy, sx])
                shape = (shape[0], 1 + (shape[1] - wr) // sy, 1 + (shape[2] - wc) // sx)
        elif k == "tag":
            tags[layer.args[0]] = (x, shape)
        elif k == "skip":
            x, shape = tags[layer.args[0]]
        elif k == "add_prev":
            other, oshape = tags[layer.args[0]]
            out = tuple(max(a, b) for a, b in zip(shape, oshape))
            x = _pad_to(x, shape, out, node, const)
            other = _pad_to(other, oshape, out, node, const)
            x = node("Add", [x, other], "add")
            shape = out
        elif k == "fc":
            x = node("Flatten", [x], "flat", axis=1)
            x = node("MatMul", [x, const(layer.params["w"], "fc")], "fc")
            macs += layer.params["w"].size
        i += 1
    nodes[-1].output[0] = "descriptors"
    graph = helper.make_graph(
        nodes, "dlib_face_recognition_resnet_model_v1",
        [helper.make_tensor_value_info("chips", TensorProto.UINT8, ["N", net.input_px[0], net.input_px[1], 3])],
        [helper.make_tensor_value_info("descriptors", TensorProto.FLOAT, ["N", 128])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="facehil.dlib_onnx",
                              producer_version=str(CONVERTER_VERSION))
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model, macs


def _pad_to(x: str, shape: tuple, out: tuple, node, const) -> str:
    """dlib's tt::add treats missing channels/rows/columns as zeros: pad at the end."""
    if shape == out:
        return x
    pads = [0, 0, 0, 0, 0, out[0] - shape[0], out[1] - shape[1], out[2] - shape[2]]
    return node("Pad", [x, const(np.array(pads, np.int64), "pads")], "pad")


# -- conversion with a cache keyed by the .dat's hash -------------------------------------------
def dat_path() -> Path:
    import face_recognition_models as frm

    return Path(frm.face_recognition_model_location())


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def cache_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "facehil" / "dlib-onnx"


@dataclass(frozen=True)
class Converted:
    onnx_path: Path
    dat_sha256: str
    macs_per_face: int


def convert(dat: Path, out: Path) -> Converted:
    data = Path(dat).read_bytes()
    model, macs = build_model(parse(data))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    tmp.write_bytes(model.SerializeToString())
    os.replace(tmp, out)  # atomic: a concurrent worker sees the old file or the whole new one
    digest = hashlib.sha256(data).hexdigest()
    meta = {"dat_sha256": digest, "converter_version": CONVERTER_VERSION, "macs_per_face": macs}
    out.with_suffix(".json").write_text(json.dumps(meta, indent=1) + "\n")
    log.info("converted %s to %s (%.2f G multiply-adds per face)", dat, out, macs / 1e9)
    return Converted(out, digest, macs)


def cached(dat: Path | None = None, directory: Path | None = None) -> Converted:
    """The .onnx for ``dat`` (default: face-recognition-models' file), converted on first use."""
    dat = Path(dat) if dat else dat_path()
    digest = sha256(dat)
    out = (Path(directory) if directory else cache_dir()) / f"resnet_v1-{digest[:16]}-c{CONVERTER_VERSION}.onnx"
    meta_path = out.with_suffix(".json")
    if out.is_file() and meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text())
            if meta.get("dat_sha256") == digest:
                return Converted(out, digest, int(meta["macs_per_face"]))
        except (OSError, ValueError, KeyError):
            pass
    return convert(dat, out)


class OnnxResNet:
    """The converted network on ONNX Runtime: RGB chips in, dlib descriptors out."""

    def __init__(self, onnx_path: Path, threads: int = 1):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(1, int(threads))
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self.session = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])

    def __call__(self, chips_rgb: np.ndarray) -> np.ndarray:
        chips = np.ascontiguousarray(chips_rgb, dtype=np.uint8)
        if chips.ndim == 3:
            chips = chips[None]
        if chips.shape[1:] != (CHIP_PX, CHIP_PX, 3):
            raise ValueError(f"face chips must be {CHIP_PX}x{CHIP_PX} RGB, got shape {chips.shape}")
        return self.session.run(None, {"chips": chips})[0]


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))



def verify(net: OnnxResNet, reference, chips: list[np.ndarray]) -> dict:
    """Compare the converted network with ``reference`` (dlib's descriptor) on each chip."""
    ours = net(np.stack(chips))
    ref = np.stack([np.asarray(reference(c), np.float32) for c in chips])
    cos = cosines(ours, ref)
    dist = np.linalg.norm(ours - ref, axis=1)
    return {"faces": len(chips), "min_cosine": float(cos.min()), "max_distance": float(dist.max()),
            "max_abs_diff": float(np.abs(ours - ref).max())}


def verification_stamp(converted: Converted) -> Path:
    """Where a passed verification is remembered: per .onnx, dlib version and ORT version."""
    import dlib
    import onnxruntime as ort

    tag = hashlib.sha256(f"{converted.dat_sha256}|{dlib.__version__}|{ort.__version__}".encode()).hexdigest()[:12]
    return converted.onnx_path.with_name(converted.onnx_path.stem + f".verified-{tag}.json")


def write_stamp(path: Path, report: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(report, indent=1) + "\n")
    os.replace(tmp, path)
