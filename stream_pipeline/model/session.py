"""The onnxruntime session: provider choice, threads, and checks of the network's shapes."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from stream_pipeline.errors import ConfigError, ModelError
from stream_pipeline.model.package import ModelPackage

__all__ = ["OnnxSession", "available_devices"]


def available_devices() -> list[str]:
    """``["cuda", "cpu"]`` when onnxruntime has the CUDA provider, else ``["cpu"]``."""
    providers = ort.get_available_providers()
    return (["cuda"] if "CUDAExecutionProvider" in providers else []) + ["cpu"]


class OnnxSession:
    """An onnxruntime session for a :class:`ModelPackage`, validated against its classes.

    ``device``: ``auto`` picks CUDA when onnxruntime has it, else CPU; ``cuda`` fails clearly where
    there is none. ``threads`` defaults to the machine's cores (decode and encode run in their own
    threads; onnxruntime's intra-op pool is the worker's share).
    """

    def __init__(self, package: ModelPackage, device: str = "auto", threads: int | None = None):
        if device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"device must be auto, cpu or cuda, got {device!r}")
        devices = available_devices()
        if device == "cuda" and "cuda" not in devices:
            raise ConfigError(
                "device 'cuda' requested but onnxruntime has no CUDAExecutionProvider "
                "(install the 'gpu' extra: pip install 'stream_pipeline[gpu]')"
            )
        use_cuda = device == "cuda" or (device == "auto" and "cuda" in devices)
        self.device = "cuda" if use_cuda else "cpu"
        providers: list[Any] = ["CPUExecutionProvider"]
        if use_cuda:
            providers.insert(0, "CUDAExecutionProvider")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or os.cpu_count() or 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle intra-op threads spin by default, burning cores that decode, postprocess and
        # encode threads need while they run beside inference in the pipeline.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self._session = ort.InferenceSession(
                str(package.onnx_path), sess_options=options, providers=providers
            )
        except Exception as exc:  # onnxruntime raises its own non-public exception types
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(f"{package.onnx_path}: not a valid ONNX model ({first})") from None
        self.package = package
        inputs = self._session.get_inputs()
        outputs = self._session.get_outputs()
        if len(inputs) != 1:
            raise ModelError(
                f"{package.onnx_path}: expected 1 input, the network has {len(inputs)}"
            )
        in_shape = inputs[0].shape
        if len(in_shape) != 4:
            raise ModelError(
                f"{package.onnx_path}: input must be rank 4 (N, 3, H, W), got {in_shape}"
            )
        if isinstance(in_shape[1], int) and in_shape[1] != 3:
            raise ModelError(f"{package.onnx_path}: input must have 3 channels, got {in_shape}")
        out_shape = outputs[0].shape
        if len(out_shape) != 4:
            raise ModelError(
                f"{package.onnx_path}: output must be logits of rank 4 (N, C, h, w), got "
                f"{out_shape}"
            )
        self.input_name = inputs[0].name
        self.output_name = outputs[0].name
        self.input_dtype = np.float16 if "float16" in inputs[0].type else np.float32
        self.static_batch = in_shape[0] if isinstance(in_shape[0], int) else None
        self.channels: int | None = out_shape[1] if isinstance(out_shape[1], int) else None
        if self.channels is not None:
            package.channel_class_ids(self.channels)  # raises if inconsistent with class_names
        for axis, want in ((2, package.input.height), (3, package.input.width)):
            have = in_shape[axis]
            if isinstance(have, int) and have != want:
                raise ModelError(
                    f"{package.onnx_path}: network input is {in_shape[2]}x{in_shape[3]} (HxW) "
                    f"but model.json says {package.input.height}x{package.input.width}"
                )

    def run(self, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Run the network on an NCHW batch; returns float32 logits (N, C, h, w)."""
        feed = batch if self.input_dtype == np.float32 else batch.astype(self.input_dtype)
        (logits,) = self._session.run([self.output_name], {self.input_name: feed})
        out = np.asarray(logits)
        if out.ndim != 4 or out.shape[0] != batch.shape[0]:
            raise ModelError(f"network returned logits of shape {out.shape} for {batch.shape}")
        if self.channels is None:
            self.package.channel_class_ids(out.shape[1])
            self.channels = int(out.shape[1])
        return out if out.dtype == np.float32 else out.astype(np.float32)
