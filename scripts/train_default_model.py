"""Train the shipped default model (``street-default/1``) on procedurally generated street scenes.

CPU only, seeded, a quarter of an hour on two cores::

    .venv/bin/python scripts/train_default_model.py

What it does, in order: renders training frames (seeds ``--train-seeds``, random ``t``) and
validation frames (seeds ``--val-seeds``) with :class:`stream_pipeline.scenes.StreetScene`; resizes
each to the model input with Pillow's bilinear filter (as the runtime does); trains a small
encoder-decoder (depthwise-separable, logits at 1/4 of the input); evaluates on the validation frames
at frame size with the runtime's semantics (logits resized bilinearly with half-pixel centres,
softmax, argmax, per-class thresholds); picks the F1-optimal thresholds; exports ONNX (opset 17,
dynamic batch and spatial axes) and checks it against PyTorch with onnxruntime; times inference;
writes ``model.onnx`` and ``model.json`` into ``--out``; reports mIoU on fresh seeds.

Needs the ``train`` extra (torch, onnx) besides the package's own dependencies.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from stream_pipeline.scenes import CLASS_NAMES, StreetScene  # noqa: E402

FRAME_W, FRAME_H = 640, 360
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
COLORS = {
    "background": "#000000",
    "sky": "#4682b4",
    "road": "#804080",
    "building": "#464646",
    "vegetation": "#6b8e23",
    "vehicle": "#00008e",
    "person": "#dc143c",
}
GRID = np.round(np.arange(0.05, 0.951, 0.05), 2)  # threshold candidates
NC = len(CLASS_NAMES)


# ------------------------------------------------------------------------------------ the network


def cbr(
    cin: int, cout: int, k: int = 3, stride: int = 1, dil: int = 1, groups: int = 1
) -> nn.Module:
    """Conv → BatchNorm → ReLU."""
    pad = dil * (k // 2)
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride, pad, dilation=dil, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class Separable(nn.Module):
    """Depthwise 3×3 (linear: BatchNorm and ReLU come after the pointwise 1×1 only, which trains
    markedly faster on a CPU), then pointwise 1×1; residual when the shape allows."""

    def __init__(self, cin: int, cout: int, stride: int = 1, dil: int = 1) -> None:
        super().__init__()
        self.dw = nn.Conv2d(cin, cin, 3, stride, dil, dilation=dil, groups=cin, bias=False)
        self.pw = cbr(cin, cout, 1)
        self.residual = cin == cout and stride == 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pw(self.dw(x))
        return x + y if self.residual else y


class StreetNet(nn.Module):
    """A small encoder-decoder: strides 2-4-8-16 with dilated context; the decoder climbs back to
    stride 2 through skip connections, where the logits are."""

    def __init__(self, classes: int = NC, widths: tuple[int, int, int, int] = (16, 32, 64, 128)):
        super().__init__()
        c1, c2, c3, c4 = widths
        self.s2 = cbr(3, c1, 3, 2)
        self.s4 = nn.Sequential(cbr(c1, c2, 3, 2), Separable(c2, c2))
        self.s8 = nn.Sequential(Separable(c2, c3, 2), Separable(c3, c3), Separable(c3, c3))
        self.s16 = nn.Sequential(
            Separable(c3, c4, 2),
            Separable(c4, c4),
            Separable(c4, c4, dil=2),
            Separable(c4, c4, dil=4),
            Separable(c4, c4, dil=8),
        )
        self.context = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(c4, c4, 1), nn.Sigmoid())
        self.skip8 = cbr(c3, c4, 1)
        self.up8 = Separable(c4, c3)
        self.skip4 = cbr(c2, c3, 1)
        self.up4 = Separable(c3, c2)
        self.skip2 = cbr(c1, c2, 1)
        self.up2 = Separable(c2, c2)
        self.head = nn.Conv2d(c2, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x2 = self.s2(x)
        x4 = self.s4(x2)
        x8 = self.s8(x4)
        x16 = self.s16(x8)
        x16 = x16 * self.context(x16)
        y = F.interpolate(x16, size=x8.shape[-2:], mode="bilinear", align_corners=False)
        y = self.up8(y + self.skip8(x8))
        y = F.interpolate(y, size=x4.shape[-2:], mode="bilinear", align_corners=False)
        y = self.up4(y + self.skip4(x4))
        y = F.interpolate(y, size=x2.shape[-2:], mode="bilinear", align_corners=False)
        return self.head(self.up2(y + self.skip2(x2)))


# ------------------------------------------------------------------------------------------ data


def render_set(
    seeds: range, frames_per_seed: int, size: tuple[int, int], rng: np.random.Generator
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8], npt.NDArray[np.uint8]]:
    """(inputs N×h×w×3 resized, labels N×h×w at input size, labels N×360×640 at frame size)."""
    n = len(seeds) * frames_per_seed
    w, h = size
    xs = np.empty((n, h, w, 3), np.uint8)
    ys = np.empty((n, h, w), np.uint8)
    full = np.empty((n, FRAME_H, FRAME_W), np.uint8)
    i = 0
    for seed in seeds:
        scene = StreetScene(FRAME_W, FRAME_H, seed=seed)
        for _ in range(frames_per_seed):
            rgb, lab = scene.render(float(rng.uniform(0.0, 600.0)))
            xs[i] = np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BILINEAR))
            ys[i] = np.asarray(Image.fromarray(lab).resize(size, Image.Resampling.NEAREST))
            full[i] = lab
            i += 1
    return xs, ys, full


def to_tensor(x: npt.NDArray[np.uint8]) -> torch.Tensor:
    """uint8 NHWC RGB → normalised float32 NCHW."""
    t = torch.from_numpy(x).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (t - mean) / std


# ------------------------------------------------------------------------------------ evaluation


def frame_probs(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Runtime semantics: bilinear (half-pixel) resize to the frame, softmax; (confidence, argmax)."""
    up = F.interpolate(logits, size=(FRAME_H, FRAME_W), mode="bilinear", align_corners=False)
    conf, cls = up.softmax(dim=1).max(dim=1)
    return conf, cls


class Stats:
    """Accumulates what thresholds and mIoU need: per class, a confidence histogram of the pixels
    predicted as that class, split by whether the truth agrees; and the confusion matrix."""

    def __init__(self) -> None:
        self.bins = 1000
        self.hit = np.zeros((NC, self.bins), np.int64)  # argmax == c and truth == c
        self.miss = np.zeros((NC, self.bins), np.int64)  # argmax == c and truth != c
        self.truth = np.zeros(NC, np.int64)
        self.items: list[
            tuple[npt.NDArray[np.float32], npt.NDArray[np.uint8], npt.NDArray[np.uint8]]
        ] = []

    def add(self, conf: torch.Tensor, cls: torch.Tensor, truth: npt.NDArray[np.uint8]) -> None:
        c = conf.numpy().ravel()
        k = cls.numpy().ravel().astype(np.int64)
        g = truth.ravel()
        b = np.minimum((c * self.bins).astype(np.int64), self.bins - 1)
        ok = k == g
        self.hit += np.bincount(k[ok] * self.bins + b[ok], minlength=NC * self.bins).reshape(NC, -1)
        self.miss += np.bincount(k[~ok] * self.bins + b[~ok], minlength=NC * self.bins).reshape(
            NC, -1
        )
        self.truth += np.bincount(g, minlength=NC)
        self.items.append((conf.numpy(), cls.numpy().astype(np.uint8), truth))

    def f1(self, c: int, t: float) -> float:
        """F1 of (argmax == c and conf >= t) against (truth == c)."""
        b = round(t * self.bins)
        tp = self.hit[c, b:].sum()
        fp = self.miss[c, b:].sum()
        fn = self.truth[c] - tp
        return float(2 * tp / max(2 * tp + fp + fn, 1))

    def thresholds(self) -> tuple[float, dict[str, float]]:
        per_class = {
            name: max(GRID, key=lambda t: self.f1(c, t)) for c, name in enumerate(CLASS_NAMES)
        }
        glob = max(GRID, key=lambda t: sum(self.f1(c, t) for c in range(NC)) / NC)
        return float(glob), {k: float(v) for k, v in per_class.items()}

    def miou(self, thresholds: npt.NDArray[np.float32] | None = None) -> tuple[float, list[float]]:
        """mIoU over the whole set (one confusion matrix); sub-threshold pixels become background."""
        cm = np.zeros((NC, NC), np.int64)
        bg = CLASS_NAMES.index("background")
        for conf, cls, truth in self.items:
            pred = (
                cls if thresholds is None else np.where(conf >= thresholds[cls], cls, bg)
            ).astype(np.int64)
            cm += np.bincount(
                truth.ravel().astype(np.int64) * NC + pred.ravel(), minlength=NC * NC
            ).reshape(NC, NC)
        inter = np.diag(cm)
        union = cm.sum(0) + cm.sum(1) - inter
        ious = inter / np.maximum(union, 1)
        return float(ious.mean()), [float(v) for v in ious]


@torch.no_grad()
def evaluate(net: nn.Module, xs: npt.NDArray[np.uint8], full: npt.NDArray[np.uint8]) -> Stats:
    net.eval()
    stats = Stats()
    for i in range(0, len(xs), 8):
        conf, cls = frame_probs(net(to_tensor(xs[i : i + 8])))
        for j in range(conf.shape[0]):
            stats.add(conf[j], cls[j], full[i + j])
    return stats


# -------------------------------------------------------------------------------------- training


def train(args: argparse.Namespace) -> None:
    t_start = time.perf_counter()
    torch.set_num_threads(args.threads)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    size = (args.width, args.height)
    train_seeds = range(args.train_seeds[0], args.train_seeds[1])
    val_seeds = range(args.val_seeds[0], args.val_seeds[1])

    t0 = time.perf_counter()
    xs, ys, _ = render_set(train_seeds, args.frames_per_seed, size, rng)
    vx, _, vfull = render_set(val_seeds, 2, size, rng)
    print(
        f"data: {len(xs)} training frames, {len(vx)} validation frames in {time.perf_counter() - t0:.0f} s",
        flush=True,
    )

    freq = np.bincount(ys.ravel(), minlength=NC) / ys.size
    weights = torch.tensor(np.clip((np.median(freq) / freq) ** 0.5, 0.5, 4.0), dtype=torch.float32)
    print(
        "class frequency:", {n: round(float(f), 4) for n, f in zip(CLASS_NAMES, freq, strict=True)}
    )
    print(
        "loss weights:", {n: round(float(w), 2) for n, w in zip(CLASS_NAMES, weights, strict=True)}
    )

    net = StreetNet()
    params = sum(p.numel() for p in net.parameters())
    print(f"StreetNet: {params} parameters, input {args.width}x{args.height}", flush=True)
    steps_per_epoch = len(xs) // args.batch
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=args.lr, total_steps=args.epochs * steps_per_epoch, pct_start=0.15
    )
    net = net.to(memory_format=torch.channels_last)
    for epoch in range(args.epochs):
        net.train()
        t0 = time.perf_counter()
        order = rng.permutation(len(xs))
        total = 0.0
        for step in range(steps_per_epoch):
            idx = np.sort(order[step * args.batch : (step + 1) * args.batch])
            x = to_tensor(xs[idx])
            y = torch.from_numpy(ys[idx]).long()
            flip = torch.from_numpy(rng.random(len(idx)) < 0.5)
            x[flip] = x[flip].flip(-1)
            y[flip] = y[flip].flip(-1)
            logits = net(x.contiguous(memory_format=torch.channels_last))
            logits = F.interpolate(logits, size=y.shape[-2:], mode="bilinear", align_corners=False)
            loss = F.cross_entropy(logits, y, weight=weights)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss)
        line = f"epoch {epoch + 1}/{args.epochs}: loss {total / steps_per_epoch:.4f} ({time.perf_counter() - t0:.0f} s)"
        if (epoch + 1) % args.val_every == 0 or epoch + 1 == args.epochs:
            sub = slice(0, len(vx) if epoch + 1 == args.epochs else min(len(vx), 48))
            miou, _ = evaluate(net, vx[sub], vfull[sub]).miou()
            line += f", val mIoU {miou:.4f}"
        print(line, flush=True)
    train_wall = time.perf_counter() - t_start

    net = net.to(memory_format=torch.contiguous_format).eval()
    stats = evaluate(net, vx, vfull)
    glob, per_class = stats.thresholds()
    thr = np.array([per_class[n] for n in CLASS_NAMES], np.float32)
    val_argmax, _ = stats.miou()
    val_miou, val_ious = stats.miou(thr)
    print(f"validation: mIoU {val_miou:.4f} with thresholds (argmax only {val_argmax:.4f})")
    print("  IoU:", {n: round(v, 4) for n, v in zip(CLASS_NAMES, val_ious, strict=True)})
    print(f"  thresholds: global {glob}, per class {per_class}")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    onnx_path = out / "model.onnx"
    export_onnx(net, onnx_path, size)
    ms = check_and_time(net, onnx_path, size, args.threads)
    fresh = fresh_miou(onnx_path, size, thr, args.fresh_seeds, args.threads)
    meta: dict[str, Any] = {
        "model_id": "street-default/1",
        "task": "semantic-segmentation",
        "class_names": list(CLASS_NAMES),
        "input": {
            "width": args.width,
            "height": args.height,
            "resize": "stretch",
            "color": "rgb",
            "scale": 255.0,
            "mean": list(MEAN),
            "std": list(STD),
        },
        "output": {"activation": "softmax"},
        "default_confidence": 0.5,
        "recommended": {"confidence": glob, "per_class_confidence": per_class},
        "colors": COLORS,
        "training": {
            "script": "scripts/train_default_model.py",
            "seed": args.seed,
            "train_seeds": list(args.train_seeds),
            "val_seeds": list(args.val_seeds),
            "frames_per_seed": args.frames_per_seed,
            "epochs": args.epochs,
            "parameters": params,
            "val_miou": round(val_miou, 4),
            "val_iou": {n: round(v, 4) for n, v in zip(CLASS_NAMES, val_ious, strict=True)},
            "fresh_miou": round(fresh, 4),
            "fresh_seeds": [args.fresh_seeds[0], args.fresh_seeds[1]],
            "cpu_ms_per_frame": round(ms, 2),
        },
    }
    (out / "model.json").write_text(json.dumps(meta, indent=2) + "\n")
    size_kb = onnx_path.stat().st_size / 1024
    print(
        f"wrote {onnx_path} ({size_kb:.0f} KiB) and model.json; training {train_wall / 60:.1f} min, "
        f"total {(time.perf_counter() - t_start) / 60:.1f} min"
    )


def export_onnx(net: nn.Module, path: Path, size: tuple[int, int]) -> None:
    dummy = torch.zeros(1, 3, size[1], size[0])
    torch.onnx.export(
        net,
        (dummy,),
        str(path),
        input_names=["images"],
        output_names=["logits"],
        opset_version=17,
        dynamic_axes={
            "images": {0: "batch", 2: "height", 3: "width"},
            "logits": {0: "batch", 2: "logits_height", 3: "logits_width"},
        },
        dynamo=False,
    )


def ort_session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


@torch.no_grad()
def check_and_time(net: nn.Module, path: Path, size: tuple[int, int], threads: int) -> float:
    """Check ONNX against PyTorch (two batch sizes, another spatial size); ms per frame."""
    sess = ort_session(path, threads)
    for n, (w, h) in ((1, size), (3, size), (2, (size[0] + 64, size[1] + 32))):
        x = torch.randn(n, 3, h, w)
        ref = net(x).numpy()
        got = sess.run(None, {"images": x.numpy()})[0]
        err = float(np.abs(ref - got).max())
        print(f"onnx check batch {n} {w}x{h}: logits {got.shape}, max |diff| {err:.2e}")
        assert err < 1e-3, err
    x = np.random.default_rng(0).standard_normal((1, 3, size[1], size[0])).astype(np.float32)
    for _ in range(20):
        sess.run(None, {"images": x})
    times = []
    for _ in range(200):
        t0 = time.perf_counter()
        sess.run(None, {"images": x})
        times.append(time.perf_counter() - t0)
    ms = float(np.median(times) * 1000)
    print(
        f"onnxruntime CPU, {threads} threads, batch 1 at {size[0]}x{size[1]}: median {ms:.2f} ms/frame (min {min(times) * 1000:.2f})"
    )
    return ms


def fresh_miou(
    path: Path, size: tuple[int, int], thr: npt.NDArray[np.float32], seeds: list[int], threads: int
) -> float:
    """mIoU of the exported model on scenes never seen (runtime semantics, onnxruntime)."""
    sess = ort_session(path, threads)
    rng = np.random.default_rng(12345)
    stats = Stats()
    for seed in range(seeds[0], seeds[1]):
        rgb, lab = StreetScene(FRAME_W, FRAME_H, seed=seed).render(float(rng.uniform(0, 600)))
        x = to_tensor(
            np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BILINEAR))[None]
        )
        logits = torch.from_numpy(sess.run(None, {"images": x.numpy()})[0])
        conf, cls = frame_probs(logits)
        stats.add(conf[0], cls[0], lab)
    miou, ious = stats.miou(thr)
    print(
        f"fresh seeds {seeds[0]}..{seeds[1] - 1}: mIoU {miou:.4f}",
        {n: round(v, 4) for n, v in zip(CLASS_NAMES, ious, strict=True)},
    )
    return miou


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=str(ROOT / "stream_pipeline" / "model" / "default"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-seeds", type=int, nargs=2, default=[0, 700])
    p.add_argument("--val-seeds", type=int, nargs=2, default=[500_000, 500_064])
    p.add_argument("--fresh-seeds", type=int, nargs=2, default=[1_000_000, 1_000_032])
    p.add_argument("--frames-per-seed", type=int, default=5)
    p.add_argument("--width", type=int, default=320)
    p.add_argument("--height", type=int, default=192)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=4e-3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--val-every", type=int, default=1)
    train(p.parse_args())


if __name__ == "__main__":
    main()
