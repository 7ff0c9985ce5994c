"""Inference backends of the encoder: who runs the convolutions of a frame.

    runner = make_encoder_runner(network.encoder, backend="auto", device=torch.device("cpu"))
    features = runner(image)          # (1, 1, h, w) float32 -> (1, C, h/8, w/8) float32 on the device
    runner.name, runner.note          # "onnxruntime", "" (or why "auto" chose what it chose)

Backends:
- ``torch``: PyTorch eager, channels-last. The reference, always available, CPU and CUDA.
- ``onnxruntime``: the encoder exported with ``torch.onnx`` and run by ONNX Runtime (CPU
  execution provider; the CUDA provider when the device is CUDA and onnxruntime-gpu is installed).
  At load the export is checked against the reference on a probe image (``check_tolerance``), so a
  wrong export is refused instead of localising badly.
- ``auto``: onnxruntime on the CPU, torch on CUDA; if onnxruntime is missing or its check fails,
  torch, and ``note`` says why (the node logs it and puts it in its status).

Measured on this project's 2-core AMD CPU (``dsac-ros bench frame``, 640 x 480 frames at 240 px
input): the encoder in 17.7-19.2 ms with ONNX Runtime against 24.3-29.6 ms eager, the whole
frame 7-11 ms faster offline. In the node process (bench/bench_node.py) run-to-run drift of
this machine (80-105 ms publish -> pose for either backend on small_room) hid any difference.
ONNX Runtime's idle threads must not spin: they would take the cores from the lookup and DSAC
that follow (measured: lookup 36 -> 73 ms).

The scene head (memory lookup or MLP) stays in torch: it is a retrieval and one matrix product
(``dsac_ros.memory_head.nearest_keys``), not a graph ONNX Runtime speeds up.
"""

from __future__ import annotations

import io
import logging
import threading
import warnings
from typing import Callable, Optional

import numpy as np
import torch
from torch import nn

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "onnxruntime")
# The export is compared with eager on a probe image: float32 sums in another order differ by
# about 1e-6 relative (measured 8.8e-7 mean); a broken export differs by order 1.
CHECK_TOLERANCE = 1e-3
_PROBE_SIZE_HW = (64, 96)


class BackendError(ValueError):
    """The requested inference backend is unknown or cannot run here; the message says why."""


class EncoderRunner:
    """(1, 1, h, w) float32 CPU tensor -> (1, C, h/8, w/8) float32 features on ``device``.

    name: the backend that runs ("torch" or "onnxruntime"); requested: what the caller asked for;
    note: why "auto" chose ``name`` when that is not its first choice, else ''."""

    name = ""  # set by each runner class

    def __init__(self, requested: str, note: str = "") -> None:
        self.requested, self.note = requested, note

    def __call__(self, image: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def describe(self) -> str:
        """For logs and status: "onnxruntime" or "torch (auto: onnxruntime unavailable: ...)"."""
        return f"{self.name} ({self.requested}: {self.note})" if self.note else self.name


class TorchEncoderRunner(EncoderRunner):
    name = "torch"

    def __init__(self, encoder: nn.Module, device: torch.device, requested: str = "torch", note: str = "") -> None:
        super().__init__(requested, note)
        self.encoder, self.device = encoder, device

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.encoder(image.to(self.device))


class OnnxRuntimeEncoderRunner(EncoderRunner):
    name = "onnxruntime"

    def __init__(self, session, device: torch.device, requested: str = "onnxruntime") -> None:
        super().__init__(requested)
        self.session, self.device = session, device
        self._input = session.get_inputs()[0].name
        # An InferenceSession's run is thread-safe, but one frame at a time keeps its two threads
        # from competing with themselves (the node's worker is single anyway).
        self._lock = threading.Lock()

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        array = np.ascontiguousarray(image.detach().cpu().numpy(), dtype=np.float32)
        with self._lock:
            features = self.session.run(None, {self._input: array})[0]
        return torch.from_numpy(features).to(self.device)


def make_encoder_runner(encoder: nn.Module, backend: str = "auto", device: torch.device = torch.device("cpu"),
                        threads: Optional[int] = None, log: Callable[[str], None] = logger.info) -> EncoderRunner:
    """The runner for ``backend`` (one of BACKENDS) on ``device``. BackendError when an explicit
    backend cannot run here, with the reason; "auto" never raises for a missing backend."""
    text = str(backend).strip().lower()
    if text not in BACKENDS:
        raise BackendError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    if text == "torch":
        return TorchEncoderRunner(encoder, device)
    if text == "auto" and device.type != "cpu":
        # On a GPU torch's CUDA kernels are the tested path; onnxruntime-gpu is opt-in.
        return TorchEncoderRunner(encoder, device, "auto")
    try:
        session = _onnxruntime_session(encoder, device, threads)
    except BackendError as error:
        if text == "onnxruntime":
            raise
        note = f"onnxruntime unavailable ({error}), using torch"
        log(f"backend auto: {note}")
        return TorchEncoderRunner(encoder, device, "auto", note)
    return OnnxRuntimeEncoderRunner(session, device, text)


def _onnxruntime_session(encoder: nn.Module, device: torch.device, threads: Optional[int]):
    """An InferenceSession of the exported encoder, checked against eager on a probe image."""
    try:
        import onnxruntime
    except ImportError as error:
        raise BackendError(f"onnxruntime is not installed ({error}); pip install onnxruntime onnx") from error
    providers = ["CPUExecutionProvider"]
    if device.type == "cuda":
        if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
            raise BackendError("device is CUDA but this onnxruntime has no CUDAExecutionProvider "
                               "(install onnxruntime-gpu, or use backend torch)")
        providers = [("CUDAExecutionProvider", {"device_id": device.index or 0}), "CPUExecutionProvider"]
    model = export_encoder_onnx(encoder)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = int(threads or torch.get_num_threads())
    options.inter_op_num_threads = 1
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3  # errors only: its warnings are about graph rewrites
    try:
        session = onnxruntime.InferenceSession(model, options, providers=providers)
    except Exception as error:  # onnxruntime raises its own exception types
        raise BackendError(f"onnxruntime could not load the exported encoder: {error}") from error
    _check_against_eager(encoder, session)
    return session


def export_encoder_onnx(encoder: nn.Module) -> bytes:
    """The encoder as an ONNX model (bytes), height and width dynamic. BackendError if it fails.
    Kept per weights digest for the process: an export costs about 2 s, a map reload none."""
    from dsac_ros.encoder_file import state_digest

    key = (state_digest(encoder.state_dict()), repr(encoder))
    with _EXPORT_LOCK:
        if key not in _EXPORTS:
            _EXPORTS[key] = _export(encoder)
            while len(_EXPORTS) > _EXPORTS_KEPT:
                _EXPORTS.pop(next(iter(_EXPORTS)))
        return _EXPORTS[key]


_EXPORTS: dict[tuple[str, str], bytes] = {}
_EXPORTS_KEPT = 4
_EXPORT_LOCK = threading.Lock()


def _export(encoder: nn.Module) -> bytes:
    cpu_encoder = _cpu_copy(encoder)
    probe = torch.zeros(1, 1, *_PROBE_SIZE_HW)
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings():
            # The shape checks in Encoder.forward trace as constants (TracerWarning): harmless, the
            # exported graph has none; the TorchScript exporter's deprecation notice is not ours to act on.
            warnings.simplefilter("ignore")
            torch.onnx.export(cpu_encoder, (probe,), buffer, input_names=["image"], output_names=["features"],
                              dynamic_axes={"image": {2: "height", 3: "width"},
                                            "features": {2: "cells_h", 3: "cells_w"}},
                              opset_version=17, dynamo=False)
    except Exception as error:  # the exporter raises many types (missing onnx, unsupported op...)
        raise BackendError(f"exporting the encoder to ONNX failed: {type(error).__name__}: {error}") from error
    return buffer.getvalue()


def _cpu_copy(encoder: nn.Module) -> nn.Module:
    """The encoder on the CPU in plain contiguous layout (the export must not move the caller's)."""
    import copy

    return copy.deepcopy(encoder).to("cpu").to(memory_format=torch.contiguous_format).eval()


def _check_against_eager(encoder: nn.Module, session) -> None:
    generator = torch.Generator().manual_seed(0)
    probe = torch.randn(1, 1, *_PROBE_SIZE_HW, generator=generator)
    with torch.inference_mode():
        reference = _cpu_copy(encoder)(probe).numpy()
    exported = session.run(None, {session.get_inputs()[0].name: probe.numpy()})[0]
    scale = max(float(np.abs(reference).max()), 1e-6)
    error = float(np.abs(exported - reference).max()) / scale
    if exported.shape != reference.shape or not error < CHECK_TOLERANCE:
        raise BackendError(f"the exported encoder disagrees with eager torch (max error {error:.3g} of the "
                           f"feature range, shapes {exported.shape} vs {reference.shape})")
