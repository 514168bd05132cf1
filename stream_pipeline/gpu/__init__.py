"""The device path: NV12 → network input, ONNX Runtime with IO binding, fused postprocess.

Written once against an array module (CuPy on a GPU, numpy on the CPU, :mod:`.xp`); its fused
kernels are CUDA C (:mod:`.kernels`) that CI also compiles for the host (:mod:`.hostcc`).
Importing this package never imports CuPy.
"""
