"""ONNX Runtime on fixed-shape buffers through IO binding: the network reads and writes the array.

:class:`BoundSession` owns the network's input ``(B, 3, H, W)`` and output ``(B, C, h, w)``
buffers, allocated once on the backend (device memory on CuPy, host memory on numpy, where CI
runs the same binding) and bound once: a batch is preprocessed straight into ``input`` and the
logits are read straight from ``output``. Fixed shapes and fixed addresses are what CUDA graphs
need; a partial batch is padded, never reshaped.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from stream_pipeline.errors import ModelError
from stream_pipeline.gpu.xp import Backend
from stream_pipeline.model.package import ModelPackage

__all__ = ["BindOptions", "BoundSession"]


@dataclass(frozen=True, slots=True)
class BindOptions:
    """How the session runs on CUDA (ignored on the host).

    ``cuda_graph``: capture the network once and replay it (needs a static batch dimension in
    the export, or a dynamic one that ``batch`` fixes); ``tensorrt``: put the TensorRT EP first
    when it is installed, with its engine cache under ``trt_cache`` (fp16 where the card has it).
    """

    device_id: int = 0
    cuda_graph: bool = False
    tensorrt: bool = False
    trt_cache: Path | None = None
    threads: int | None = None


def _providers(be: Backend, options: BindOptions, stream: Any) -> list[Any]:
    if not be.on_device:
        return ["CPUExecutionProvider"]
    cuda: dict[str, str] = {"device_id": str(options.device_id)}
    if stream is not None:
        # ORT's kernels run on our stream: the events of the worker order them with the
        # preprocess before and the postprocess after, with no device-wide synchronise.
        cuda["user_compute_stream"] = str(stream.ptr)
    if options.cuda_graph:
        cuda["enable_cuda_graph"] = "1"
    out: list[Any] = [("CUDAExecutionProvider", cuda), "CPUExecutionProvider"]
    if options.tensorrt and "TensorrtExecutionProvider" in ort.get_available_providers():
        trt = {
            "device_id": str(options.device_id),
            "trt_fp16_enable": "1",
            "trt_engine_cache_enable": "1",
            "trt_engine_cache_path": str(options.trt_cache or Path("trt-cache")),
        }
        out.insert(0, ("TensorrtExecutionProvider", trt))
    return out


def _dtype(type_name: str) -> Any:
    return np.float16 if "float16" in type_name else np.float32


class BoundSession:
    """One network bound to preallocated input and output buffers of batch ``batch``.

    A network exported with a static batch dimension fixes ``batch`` itself.
    """

    def __init__(
        self,
        be: Backend,
        package: ModelPackage,
        batch: int,
        options: BindOptions = BindOptions(),
        stream: Any = None,
    ) -> None:
        self.be = be
        so = ort.SessionOptions()
        so.intra_op_num_threads = options.threads or os.cpu_count() or 1
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(
                str(package.onnx_path), sess_options=so, providers=_providers(be, options, stream)
            )
        except Exception as exc:  # onnxruntime raises its own non-public exception types
            raise ModelError(f"{package.onnx_path}: cannot bind the network ({exc})") from None
        inp = self.session.get_inputs()[0]
        out = self.session.get_outputs()[0]
        if isinstance(inp.shape[0], int):
            batch = inp.shape[0]
        self.batch = batch
        self.input_name, self.output_name = inp.name, out.name
        self.input_dtype = _dtype(inp.type)
        xp = be.xp
        shape = (batch, 3, package.input.height, package.input.width)
        self.input = xp.zeros(shape, self.input_dtype)
        self._device = ("cuda", options.device_id) if be.on_device else ("cpu", 0)
        if all(isinstance(d, int) for d in out.shape):
            out_shape, out_dtype = tuple(out.shape), _dtype(out.type)
        elif options.cuda_graph and be.on_device:
            # A probe run on this session would be the one its graph captures, with the probe's
            # addresses: ask a plain session of the same network instead, once.
            plain = BindOptions(options.device_id, threads=options.threads)
            probe = ort.InferenceSession(
                str(package.onnx_path), sess_options=so, providers=_providers(be, plain, None)
            )
            out_shape, out_dtype = self._probe(probe)
        else:
            out_shape, out_dtype = self._probe(self.session)
        if len(out_shape) != 4 or out_shape[0] != batch:
            raise ModelError(f"network returned logits of shape {out_shape} for {shape}")
        self.output = xp.empty(out_shape, out_dtype)
        self._io = self.session.io_binding()
        self._bind(self._io, self.input_name, self.input)
        self._bind(self._io, self.output_name, self.output, output=True)

    def _ptr(self, array: Any) -> int:
        return int(array.data.ptr) if self.be.on_device else int(array.ctypes.data)

    def _bind(self, io: Any, name: str, array: Any, output: bool = False) -> None:
        args = (
            name,
            *self._device,
            np.dtype(array.dtype).type,
            list(array.shape),
            self._ptr(array),
        )
        (io.bind_output if output else io.bind_input)(*args)

    def _probe(self, session: Any) -> tuple[tuple[int, ...], Any]:
        """The output's shape for this batch: one run on zeros with ORT allocating the output."""
        io = session.io_binding()
        self._bind(io, self.input_name, self.input)
        io.bind_output(self.output_name, self._device[0], self._device[1])
        session.run_with_iobinding(io)
        value = io.get_outputs()[0]
        return tuple(int(d) for d in value.shape()), _dtype(value.data_type())

    def run(self) -> None:
        """Run the network on :attr:`input` into :attr:`output`."""
        self.session.run_with_iobinding(self._io)
