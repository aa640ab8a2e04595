"""PyTorch reference of one APE training step, for `cargo bench --bench train_step`.

The network of `benches/torch_reference.py` (the same as `src/model/net.rs`), in training mode
(batch statistics), on random inputs of `2 × pairs` crops of 96×96×64 voxels; `positives` cell
positions per pair sampled trilinearly from both crops' maps (`grid_sample`), the equiv loss of
`training/src/loss.rs` (squared differences between embedding distances and normalised
position distances, plus the squared distance within each pair), AdamW with gradient clipping
at norm 1. No data preparation: that is timed apart. Prints one table row per pair count:
the median time of a step after two warm-up steps.

Usage: python3 benches/torch_train_step.py --pairs 4,8 --steps 5 --threads 2 [--device cuda]
(`--device cuda` falls back to the CPU, saying so, when torch has no CUDA.)
"""
import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from torch_reference import ApeNet  # noqa: E402


def sample(maps, cells):
    """maps [n, c, d, h, w], cells [n, k, 3] as (z, y, x) in cell units -> [n, k, c]."""
    d, h, w = maps.shape[2:]
    size = torch.tensor([w, h, d], dtype=maps.dtype, device=maps.device)
    xyz = cells.flip(-1)  # grid_sample wants (x, y, z)
    grid = (2 * xyz + 1) / size - 1  # align_corners=False: cell centres at integers
    grid = grid.view(maps.shape[0], 1, 1, -1, 3)
    out = torch.nn.functional.grid_sample(
        maps, grid, mode="bilinear", padding_mode="border", align_corners=False
    )
    return out.view(maps.shape[0], maps.shape[1], -1).transpose(1, 2)


def step_time(pairs, positives, steps, device):
    torch.manual_seed(7)
    net = ApeNet([16, 32, 64], 2, 3).train().to(device)
    optim = torch.optim.AdamW(net.parameters(), lr=1e-4, weight_decay=1e-6)
    crops = 2 * pairs
    x = torch.rand(crops, 1, 64, 96, 96, device=device)
    cells = torch.rand(crops, positives, 3, device=device) * torch.tensor(
        [15.0, 23.0, 23.0], device=device
    )
    points = torch.rand(pairs * positives, 3, device=device) * 200.0
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times = []
    for i in range(steps + 2):
        sync()
        t = time.perf_counter()
        maps = net(x)
        e = sample(maps, cells)
        a = e[:pairs].reshape(-1, 3)
        a_plus = e[pairs:].reshape(-1, 3)
        p = (points - points.mean(0)) / points.std(0, unbiased=False)
        target = torch.cdist(p, p)
        predicted = torch.cdist(a, a_plus)
        loss = ((predicted - target) ** 2).mean() + ((a - a_plus) ** 2).sum(1).mean()
        optim.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        optim.step()
        sync()
        if i >= 2:
            times.append(time.perf_counter() - t)
    times.sort()
    return times[len(times) // 2]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", default="4,8")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--positives", type=int, default=512)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("| PyTorch: no CUDA, the reference runs on the CPU | | | |")
        device = torch.device("cpu")
    where = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"{args.threads} threads"
    )
    for pairs in [int(p) for p in args.pairs.split(",") if p]:
        m = step_time(pairs, args.positives, args.steps, device)
        print(f"| PyTorch {torch.__version__}, {where} | {pairs} | {m * 1e3:.0f} | {1 / m:.2f} |")


if __name__ == "__main__":
    main()
