"""Train the shipped default model (``street-default/1``) on procedurally generated street scenes.

CPU only, seeded, about half an hour on two cores::

    .venv/bin/python scripts/train_default_model.py

In order: render training frames (seeds ``--train-seeds``, random ``t``) and validation frames
(seeds ``--val-seeds``) with :class:`stream_pipeline.scenes.StreetScene`; resize each to the
model input with Pillow's bilinear filter, as the runtime does; train a small encoder-decoder
(depthwise-separable, logits at half the input size; the first epochs at half resolution, which is
four times cheaper); evaluate on the validation frames at frame size with the runtime's semantics
(logits resized bilinearly with half-pixel centres, softmax, argmax, thresholds); pick the
F1-optimal confidence thresholds; export ONNX (opset 17, dynamic batch and spatial axes), check it
against PyTorch with onnxruntime and time it; write ``model.onnx`` and ``model.json`` into
``--out``; report the mIoU on fresh seeds.

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
import onnxruntime as ort
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
GRID = np.round(np.arange(0.05, 0.951, 0.05), 2)  # candidate confidence thresholds
NC = len(CLASS_NAMES)
BACKGROUND = CLASS_NAMES.index("background")
OHEM_LOSS = -float(np.log(0.7))  # pixels the net is less than 70 % sure of are "hard"

# ------------------------------------------------------------------------------------ the network


def cbr(cin: int, cout: int, k: int = 3, stride: int = 1) -> nn.Module:
    """Conv → BatchNorm → ReLU."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride, k // 2, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class Separable(nn.Module):
    """Depthwise 3×3 (linear: BatchNorm and ReLU come after the pointwise 1×1 only, which trains
    much faster on a CPU), then pointwise 1×1; residual when the shape allows."""

    def __init__(self, cin: int, cout: int, stride: int = 1, dil: int = 1) -> None:
        super().__init__()
        self.dw = nn.Conv2d(cin, cin, 3, stride, dil, dilation=dil, groups=cin, bias=False)
        self.pw = cbr(cin, cout, 1)
        self.residual = cin == cout and stride == 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pw(self.dw(x))
        return x + y if self.residual else y


class StreetNet(nn.Module):
    """A small encoder-decoder: strides 2-4-8-16 with dilated context and a global gate; the
    decoder climbs back to stride 2 through skip connections, where the logits are."""

    def __init__(self, classes: int = NC, widths: tuple[int, int, int, int] = (16, 32, 128, 256)):
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

U8 = npt.NDArray[np.uint8]


def resize(img: U8, size: tuple[int, int], resample: Image.Resampling) -> U8:
    return np.array(Image.fromarray(img).resize(size, resample))


def render_set(
    seeds: range, frames_per_seed: int, size: tuple[int, int], rng: np.random.Generator
) -> tuple[U8, U8, U8]:
    """(inputs N×h×w×3, labels N×h×w at input size, labels N×360×640 at frame size)."""
    n = len(seeds) * frames_per_seed
    xs = np.empty((n, size[1], size[0], 3), np.uint8)
    ys = np.empty((n, size[1], size[0]), np.uint8)
    full = np.empty((n, FRAME_H, FRAME_W), np.uint8)
    i = 0
    for seed in seeds:
        scene = StreetScene(FRAME_W, FRAME_H, seed=seed)
        for _ in range(frames_per_seed):
            rgb, full[i] = scene.render(float(rng.uniform(0.0, 600.0)))
            xs[i] = resize(rgb, size, Image.Resampling.BILINEAR)
            ys[i] = resize(full[i], size, Image.Resampling.NEAREST)
            i += 1
    return xs, ys, full


def to_tensor(x: U8) -> torch.Tensor:
    """uint8 NHWC RGB → float32 NCHW, scaled by 255 and ImageNet-normalised."""
    t = torch.from_numpy(x).permute(0, 3, 1, 2).float().div_(255.0)
    return (t - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


# ------------------------------------------------------------------------------------ evaluation


def frame_probs(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The runtime's semantics: bilinear (half-pixel) resize of the logits to the frame, softmax;
    returns (confidence, argmax)."""
    up = F.interpolate(logits, size=(FRAME_H, FRAME_W), mode="bilinear", align_corners=False)
    conf, cls = up.softmax(dim=1).max(dim=1)
    return conf, cls


class Stats:
    """What thresholds and mIoU need, over a set of frames: per class, a histogram of the
    confidence of the pixels predicted as that class, split by whether the truth agrees; and the
    frames' predictions themselves."""

    bins = 1000

    def __init__(self) -> None:
        self.hit = np.zeros((NC, self.bins), np.int64)  # argmax == c and truth == c
        self.miss = np.zeros((NC, self.bins), np.int64)  # argmax == c and truth != c
        self.truth = np.zeros(NC, np.int64)
        self.frames: list[tuple[npt.NDArray[np.float32], U8, U8]] = []

    def add(self, conf: torch.Tensor, cls: torch.Tensor, truth: U8) -> None:
        c, k = conf.numpy(), cls.numpy().astype(np.uint8)
        b = np.minimum((c * self.bins).astype(np.int64), self.bins - 1).ravel()
        kk, g = k.ravel().astype(np.int64), truth.ravel()
        ok = kk == g
        size = NC * self.bins
        self.hit += np.bincount(kk[ok] * self.bins + b[ok], minlength=size).reshape(NC, -1)
        self.miss += np.bincount(kk[~ok] * self.bins + b[~ok], minlength=size).reshape(NC, -1)
        self.truth += np.bincount(g, minlength=NC)
        self.frames.append((c, k, truth))

    def f1(self, c: int, t: float) -> float:
        """F1 of (argmax == c and conf >= t) against (truth == c)."""
        b = round(t * self.bins)
        tp = self.hit[c, b:].sum()
        fp = self.miss[c, b:].sum()
        fn = self.truth[c] - tp
        return float(2 * tp / max(2 * tp + fp + fn, 1))

    def thresholds(self) -> tuple[float, dict[str, float]]:
        """(the one threshold with the best macro F1, the F1-optimal threshold of each class)."""
        per_class = {
            n: float(max(GRID, key=lambda t: self.f1(c, t))) for c, n in enumerate(CLASS_NAMES)
        }
        macro = max(GRID, key=lambda t: sum(self.f1(c, t) for c in range(NC)))
        return float(macro), per_class

    def iou(self, thresholds: npt.NDArray[np.float32] | None = None) -> npt.NDArray[np.float64]:
        """IoU per class over all the frames (one confusion matrix); where ``thresholds`` are
        given, pixels less confident than their class's threshold become background."""
        cm = np.zeros((NC, NC), np.int64)
        for conf, cls, truth in self.frames:
            pred = cls if thresholds is None else np.where(conf >= thresholds[cls], cls, BACKGROUND)
            pairs = truth.astype(np.int64).ravel() * NC + pred.ravel()
            cm += np.bincount(pairs, minlength=NC * NC).reshape(NC, NC)
        inter = np.diag(cm)
        iou: npt.NDArray[np.float64] = inter / np.maximum(cm.sum(0) + cm.sum(1) - inter, 1)
        return iou


def named(values: Any) -> dict[str, float]:
    return {n: round(float(v), 4) for n, v in zip(CLASS_NAMES, values, strict=True)}


@torch.no_grad()
def evaluate(net: nn.Module, xs: U8, full: U8) -> Stats:
    net.eval()
    stats = Stats()
    for i in range(0, len(xs), 8):
        conf, cls = frame_probs(net(to_tensor(xs[i : i + 8])))
        for j in range(conf.shape[0]):
            stats.add(conf[j], cls[j], full[i + j])
    return stats


# -------------------------------------------------------------------------------------- training


def ohem_loss(logits: torch.Tensor, y: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the hard pixels only (at least 1/16 of them): small objects and
    boundaries, which decide the mIoU, get the gradient that easy sky and road would take."""
    loss = F.cross_entropy(logits, y, weight=weights, reduction="none").flatten()
    hard = loss[loss > OHEM_LOSS]
    least = max(loss.numel() // 16, 1)
    return hard.mean() if hard.numel() >= least else loss.topk(least).values.mean()


def train(args: argparse.Namespace) -> None:
    t_start = time.perf_counter()
    torch.set_num_threads(args.threads)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    size = (args.width, args.height)

    xs, ys, _ = render_set(range(*args.train_seeds), args.frames_per_seed, size, rng)
    vx, _, vfull = render_set(range(*args.val_seeds), 2, size, rng)
    half = (size[0] // 2, size[1] // 2)
    xs_half = np.stack([resize(x, half, Image.Resampling.BILINEAR) for x in xs])
    ys_half = np.ascontiguousarray(ys[:, ::2, ::2])
    elapsed = time.perf_counter() - t_start
    print(
        f"data: {len(xs)} training and {len(vx)} validation frames in {elapsed:.0f} s", flush=True
    )

    freq = np.bincount(ys.ravel(), minlength=NC) / ys.size
    weights = torch.tensor(np.clip((np.median(freq) / freq) ** 0.25, 0.5, 4.0), dtype=torch.float32)
    print("class frequency:", named(freq))
    print("loss weights:", named(weights))

    net = StreetNet(widths=tuple(args.widths))  # type: ignore[arg-type]
    params = sum(p.numel() for p in net.parameters())
    print(f"StreetNet: {params} parameters, input {args.width}x{args.height}", flush=True)
    epochs = args.half_epochs + args.epochs
    steps = len(xs) // args.batch
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=args.lr, total_steps=epochs * steps, pct_start=0.15
    )
    net = net.to(memory_format=torch.channels_last)
    t_train = time.perf_counter()
    for epoch in range(epochs):
        data_x, data_y = (xs_half, ys_half) if epoch < args.half_epochs else (xs, ys)
        net.train()
        t0 = time.perf_counter()
        order = rng.permutation(len(xs))
        total = 0.0
        for step in range(steps):
            idx = np.sort(order[step * args.batch : (step + 1) * args.batch])
            x = to_tensor(data_x[idx])
            y = torch.from_numpy(data_y[idx]).long()
            flip = torch.from_numpy(rng.random(len(idx)) < 0.5)
            x[flip] = x[flip].flip(-1)
            y[flip] = y[flip].flip(-1)
            logits = net(x.contiguous(memory_format=torch.channels_last))
            logits = F.interpolate(logits, size=y.shape[-2:], mode="bilinear", align_corners=False)
            loss = ohem_loss(logits, y, weights)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item()
        res = f"{data_x.shape[2]}x{data_x.shape[1]}"
        line = f"epoch {epoch + 1}/{epochs} at {res}: loss {total / steps:.4f} ({time.perf_counter() - t0:.0f} s)"
        if epoch + 1 < epochs and epoch >= args.half_epochs:
            n = min(len(vx), 48)
            line += f", val mIoU {evaluate(net, vx[:n], vfull[:n]).iou().mean():.4f} ({n} frames)"
        print(line, flush=True)
    train_wall = time.perf_counter() - t_train

    net = net.to(memory_format=torch.contiguous_format).eval()
    stats = evaluate(net, vx, vfull)
    macro, per_class = stats.thresholds()
    thresholds = np.array([per_class[n] for n in CLASS_NAMES], np.float32)
    val_ious = stats.iou(thresholds)
    print(f"validation, {len(vx)} frames at {FRAME_W}x{FRAME_H}:")
    print(
        f"  mIoU {val_ious.mean():.4f} with the per-class thresholds, argmax only {stats.iou().mean():.4f}"
    )
    print("  IoU:", named(val_ious))
    print(f"  thresholds: macro-F1 {macro}, per class {per_class}")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    onnx_path = out / "model.onnx"
    export_onnx(net, onnx_path, size)
    ms = check_and_time(net, onnx_path, size, args.threads)
    fresh = fresh_ious(onnx_path, size, thresholds, range(*args.fresh_seeds), args.threads)
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
        "recommended": {"confidence": macro, "per_class_confidence": per_class},
        "colors": COLORS,
        "training": {
            "script": "scripts/train_default_model.py",
            "seed": args.seed,
            "train_seeds": list(args.train_seeds),
            "val_seeds": list(args.val_seeds),
            "frames_per_seed": args.frames_per_seed,
            "epochs": {"half_resolution": args.half_epochs, "full_resolution": args.epochs},
            "widths": list(args.widths),
            "parameters": params,
            "val_miou": round(float(val_ious.mean()), 4),
            "val_iou": named(val_ious),
            "fresh_seeds": list(args.fresh_seeds),
            "fresh_miou": round(float(fresh.mean()), 4),
            "cpu_ms_per_frame": round(ms, 2),
        },
    }
    (out / "model.json").write_text(json.dumps(meta, indent=2) + "\n")
    kib = onnx_path.stat().st_size / 1024
    total_min = (time.perf_counter() - t_start) / 60
    print(f"wrote {onnx_path} ({kib:.0f} KiB) and model.json")
    print(f"training {train_wall / 60:.1f} min, everything {total_min:.1f} min")


def export_onnx(net: nn.Module, path: Path, size: tuple[int, int]) -> None:
    torch.onnx.export(
        net,
        (torch.zeros(1, 3, size[1], size[0]),),
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


def ort_session(path: Path, threads: int) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


@torch.no_grad()
def check_and_time(net: nn.Module, path: Path, size: tuple[int, int], threads: int) -> float:
    """Check the ONNX file against PyTorch (batches 1 and 3, another input size); time it."""
    sess = ort_session(path, threads)
    for n, (w, h) in ((1, size), (3, size), (2, (size[0] + 64, size[1] + 32))):
        x = torch.randn(n, 3, h, w)
        ref = net(x).numpy()
        got = sess.run(None, {"images": x.numpy()})[0]
        err = float(np.abs(ref - got).max())
        print(f"onnx vs torch, batch {n} at {w}x{h}: logits {got.shape}, max |diff| {err:.1e}")
        if err > 1e-3:
            raise SystemExit(f"the exported model disagrees with PyTorch by {err}")
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
        f"onnxruntime CPU, {threads} threads, batch 1 at {size[0]}x{size[1]}: "
        f"{ms:.2f} ms/frame (median of 200; fastest {min(times) * 1000:.2f})"
    )
    return ms


@torch.no_grad()
def fresh_ious(
    path: Path,
    size: tuple[int, int],
    thresholds: npt.NDArray[np.float32],
    seeds: range,
    threads: int,
) -> npt.NDArray[np.float64]:
    """IoU per class of the exported model on scenes from seeds never seen, one frame each."""
    sess = ort_session(path, threads)
    rng = np.random.default_rng(12345)
    stats = Stats()
    for seed in seeds:
        rgb, truth = StreetScene(FRAME_W, FRAME_H, seed=seed).render(float(rng.uniform(0, 600)))
        x = to_tensor(resize(rgb, size, Image.Resampling.BILINEAR)[None]).numpy()
        conf, cls = frame_probs(torch.from_numpy(sess.run(None, {"images": x})[0]))
        stats.add(conf[0], cls[0], truth)
    ious = stats.iou(thresholds)
    print(f"fresh seeds {seeds.start}..{seeds.stop - 1}: mIoU {ious.mean():.4f}", named(ious))
    return ious


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    p.add_argument("--out", default=str(ROOT / "stream_pipeline" / "model" / "default"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-seeds", type=int, nargs=2, default=[0, 600], metavar=("FIRST", "END"))
    p.add_argument(
        "--val-seeds", type=int, nargs=2, default=[500_000, 500_064], metavar=("FIRST", "END")
    )
    p.add_argument(
        "--fresh-seeds", type=int, nargs=2, default=[1_000_000, 1_000_064], metavar=("FIRST", "END")
    )
    p.add_argument("--frames-per-seed", type=int, default=6)
    p.add_argument("--width", type=int, default=320)
    p.add_argument("--height", type=int, default=192)
    p.add_argument(
        "--widths", type=int, nargs=4, default=[16, 32, 128, 256], metavar=("S2", "S4", "S8", "S16")
    )
    p.add_argument("--half-epochs", type=int, default=3, help="epochs at half resolution first")
    p.add_argument("--epochs", type=int, default=9, help="epochs at full resolution")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=4e-3)
    p.add_argument("--threads", type=int, default=2)
    train(p.parse_args())


if __name__ == "__main__":
    main()
