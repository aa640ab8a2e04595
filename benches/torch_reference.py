"""PyTorch reference of the APE network, for `cargo bench --bench embed`.

Builds the same architecture as `src/model/net.rs`, loads the weights the bench exported, runs
the same model inputs on the same CPU, and prints the time per forward pass and the largest
difference from burn's output. Usage: python3 benches/torch_reference.py EXPORT_DIR
"""
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn


class ConvBlock(nn.Module):
    def __init__(self, cin, cout, kernel, stride):
        super().__init__()
        padding = kernel // 2 if stride == 1 else 0
        self.conv = nn.Conv3d(cin, cout, kernel, stride=stride, padding=padding, bias=False)
        self.norm = nn.BatchNorm3d(cout, eps=1e-5)

    def forward(self, x):
        return torch.relu(self.norm(self.conv(x)))


class Level(nn.Module):
    def __init__(self, width, first_input, n):
        super().__init__()
        self.blocks = nn.ModuleList(
            ConvBlock(first_input if i == 0 else width, width, 3, 1) for i in range(n)
        )

    def forward(self, x):
        for b in self.blocks:
            x = b(x)
        return x


class ApeNet(nn.Module):
    def __init__(self, widths, n, out_channels):
        super().__init__()
        w = widths
        self.stem = ConvBlock(1, w[0], 4, 4)
        self.encoders = nn.ModuleList(Level(width, width, n) for width in w)
        self.downs = nn.ModuleList(ConvBlock(a, b, 2, 2) for a, b in zip(w, w[1:]))
        self.ups = nn.ModuleList(ConvBlock(b, a, 1, 1) for a, b in zip(w, w[1:]))
        self.decoders = nn.ModuleList(Level(width, 2 * width, n) for width in w[:-1])
        self.head = nn.Conv3d(w[0], out_channels, 1)
        self.out_norm = nn.BatchNorm3d(out_channels, affine=False, eps=1e-5)

    def forward(self, x):
        x = self.stem(x)
        skips = []
        for depth, encoder in enumerate(self.encoders):
            if depth > 0:
                x = self.downs[depth - 1](x)
            x = encoder(x)
            skips.append(x)
        skips.pop()
        for depth in reversed(range(len(self.decoders))):
            # The up block (1x1x1 conv, batch norm, ReLU) commutes with nearest upsampling:
            # run at the lower resolution, as ape does.
            up = nn.functional.interpolate(self.ups[depth](x), scale_factor=2, mode="nearest")
            x = self.decoders[depth](torch.cat([up, skips.pop()], 1))
        return self.out_norm(self.head(x))


def main():
    export = Path(sys.argv[1])
    index = json.loads((export / "weights.json").read_text())
    blob = np.fromfile(export / "weights.bin", dtype="<f4")
    cfg = index["config"]
    net = ApeNet(cfg["widths"], cfg["convs_per_level"], cfg["out_channels"]).eval()
    state = {}
    for t in index["tensors"]:
        values = blob[t["offset"] : t["offset"] + int(np.prod(t["shape"]))]
        state[t["name"]] = torch.from_numpy(values.reshape(t["shape"]).copy())
    missing, unexpected = net.load_state_dict(state, strict=False)
    missing = [m for m in missing if not m.endswith("num_batches_tracked")]
    assert not missing and not unexpected, (missing, unexpected)
    torch.set_num_threads(int(index.get("threads", 2)))
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        net = net.to(device)
        label = "cpu" if device == "cpu" else torch.cuda.get_device_name(0)
        for case in index["cases"]:
            shape = case["input_shape"]
            x = np.fromfile(export / case["input"], dtype="<f4").reshape(shape)
            x = torch.from_numpy(x).to(device)
            burn_out = np.fromfile(export / case["output"], dtype="<f4")
            with torch.inference_mode():
                net(x)  # warm-up
                times = []
                for _ in range(3):
                    if device == "cuda":
                        torch.cuda.synchronize()
                    t = time.perf_counter()
                    y = net(x)
                    if device == "cuda":
                        torch.cuda.synchronize()
                    times.append(time.perf_counter() - t)
            diff = float(np.abs(y.cpu().numpy().ravel() - burn_out).max())
            where = f"{torch.get_num_threads()} threads" if device == "cpu" else label
            print(
                f"torch  {case['name']:<28} network {sorted(times)[1]:7.3f} s "
                f"(median of 3, {where})  max |torch - burn| = {diff:.2e}"
            )

if __name__ == "__main__":
    main()
