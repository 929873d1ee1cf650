"""Rebuild the bundled MTCNN face detector files (src/fpliif/assets/mtcnn_{pnet,rnet,onet}.onnx).

Provenance: the P-, R- and O-net weights of MTCNN (Zhang et al., "Joint Face Detection and Alignment using
Multi-task Cascaded Convolutional Networks", IEEE SPL 2016) as shipped inside the ``facenet-pytorch`` 2.6.0
wheel on PyPI (``facenet_pytorch/data/{pnet,rnet,onet}.pt``, MIT licence, (c) 2019 Timothy Esler; converted
there from davidsandberg/facenet, MIT). This script reads them straight from the wheel (facenet-pytorch is
not installed: it pins torch<2.3), rebuilds the three networks in torch, exports each to ONNX (opset 13,
TorchScript exporter) and stores the weights as float16 with a Cast to float32 in front of each use, so the
three files take about 1 MB and run in OpenCV's DNN module (or onnxruntime) without torch::

    pip download --no-deps -d /tmp/w facenet-pytorch==2.6.0
    python scripts/convert_mtcnn.py /tmp/w/facenet_pytorch-2.6.0-py3-none-any.whl

Needs torch and onnx (``pip install -e '.[onnx]'``). The licence text goes to assets/MTCNN_LICENSE.txt.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

ASSETS = Path(__file__).resolve().parents[1] / "src" / "fpliif" / "assets"


class PNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 10, 3), nn.PReLU(10)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(10, 16, 3), nn.PReLU(16)
        self.conv3, self.prelu3 = nn.Conv2d(16, 32, 3), nn.PReLU(32)
        self.conv4_1, self.conv4_2 = nn.Conv2d(32, 2, 1), nn.Conv2d(32, 4, 1)

    def forward(self, x):
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        return torch.softmax(self.conv4_1(x), 1)[:, 1:], self.conv4_2(x)


class RNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 28, 3), nn.PReLU(28)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(28, 48, 3), nn.PReLU(48)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = nn.Conv2d(48, 64, 2), nn.PReLU(64)
        self.dense4, self.prelu4 = nn.Linear(576, 128), nn.PReLU(128)
        self.dense5_1, self.dense5_2 = nn.Linear(128, 2), nn.Linear(128, 4)

    def forward(self, x):
        x = self.pool2(self.prelu2(self.conv2(self.pool1(self.prelu1(self.conv1(x))))))
        x = self.prelu3(self.conv3(x)).permute(0, 3, 2, 1).flatten(1)  # the Caffe weights' (w, h) order
        x = self.prelu4(self.dense4(x))
        return torch.softmax(self.dense5_1(x), 1)[:, 1:], self.dense5_2(x)


class ONet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 32, 3), nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(32, 64, 3), nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = nn.Conv2d(64, 64, 3), nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4, self.prelu4 = nn.Conv2d(64, 128, 2), nn.PReLU(128)
        self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
        self.dense6_1, self.dense6_2, self.dense6_3 = nn.Linear(256, 2), nn.Linear(256, 4), nn.Linear(256, 10)

    def forward(self, x):
        x = self.pool2(self.prelu2(self.conv2(self.pool1(self.prelu1(self.conv1(x))))))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu4(self.conv4(x)).permute(0, 3, 2, 1).flatten(1)
        x = self.prelu5(self.dense5(x))
        return torch.softmax(self.dense6_1(x), 1)[:, 1:], self.dense6_2(x), self.dense6_3(x)


NETS = {
    "pnet": (PNet, (1, 3, 40, 52), {0: "n", 2: "h", 3: "w"}, ["prob", "reg"]),
    "rnet": (RNet, (1, 3, 24, 24), {0: "n"}, ["prob", "reg"]),
    "onet": (ONet, (1, 3, 48, 48), {0: "n"}, ["prob", "reg", "landmarks"]),
}


def to_float16(path: Path) -> None:
    """Store float32 initializers (weights) as float16, each followed by a Cast back to float32."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(path))
    g = model.graph
    inits, casts = [], []
    for init in g.initializer:
        arr = numpy_helper.to_array(init)
        if arr.dtype == np.float32 and arr.size > 1:
            inits.append(numpy_helper.from_array(arr.astype(np.float16), init.name + "_f16"))
            casts.append(helper.make_node("Cast", [init.name + "_f16"], [init.name], to=TensorProto.FLOAT))
        else:
            inits.append(init)
    del g.initializer[:]
    g.initializer.extend(inits)
    nodes = list(g.node)
    del g.node[:]
    g.node.extend(casts + nodes)
    model.producer_name = "fpliif scripts/convert_mtcnn.py (facenet-pytorch 2.6.0 weights, MIT)"
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("wheel", help="facenet_pytorch-2.6.0-py3-none-any.whl")
    p.add_argument("--out", default=str(ASSETS))
    args = p.parse_args()
    out = Path(args.out)
    with zipfile.ZipFile(args.wheel) as z:
        licence = z.read("facenet_pytorch-2.6.0.dist-info/LICENSE.md").decode()
        for name, (cls, shape, axes, outputs) in NETS.items():
            raw = z.read(f"facenet_pytorch/data/{name}.pt")
            print(f"{name}.pt sha256 {hashlib.sha256(raw).hexdigest()}")
            net = cls().eval()
            net.load_state_dict(torch.load(io.BytesIO(raw), weights_only=True))
            path = out / f"mtcnn_{name}.onnx"
            dyn = {"image": axes, **{o: {0: "n"} for o in outputs}}
            torch.onnx.export(
                net,
                (torch.zeros(shape),),
                str(path),
                input_names=["image"],
                output_names=outputs,
                dynamic_axes=dyn,
                opset_version=13,
                dynamo=False,
            )
            to_float16(path)
            print(f"wrote {path} ({path.stat().st_size / 1e3:.0f} kB)")
    (out / "MTCNN_LICENSE.txt").write_text(
        "src/fpliif/assets/mtcnn_{pnet,rnet,onet}.onnx: MTCNN weights (Zhang et al. 2016) from the facenet-pytorch\n"
        "2.6.0 wheel (PyPI), converted to ONNX float16 by scripts/convert_mtcnn.py. Their licence:\n\n" + licence
    )


if __name__ == "__main__":
    main()
