"""The encoder file: format, digest, loading, and the encoder a mapping run uses.

An encoder file (``dsac_ros/assets/encoder.pt`` is the shipped one) is a dict saved with
torch.save and read with ``weights_only=True``: ``format`` "dsac_ros.encoder", ``format_version``,
``encoder_config`` (channels, residual_blocks, feature_channels), ``normalization``, ``state_dict``
(float32), ``weights_sha256`` (``state_digest``, checked on load) and ``training`` (how it was made:
configuration, steps, hours, commit, command). ``dsac_ros.pretrain.export_encoder`` writes it.

``load_mapping_encoder`` picks the encoder of a mapping run: a given file, else the shipped one,
else a randomly initialised encoder with a loud warning (``calibrate_random_encoder`` then gives
its layers unit variance on the mapping frames).
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch import nn

from dsac_ros.network import Encoder, network_config

logger = logging.getLogger(__name__)

ENCODER_FORMAT = "dsac_ros.encoder"
ENCODER_FORMAT_VERSION = 1
DEFAULT_ENCODER_PATH = Path(__file__).resolve().parent / "assets" / "encoder.pt"
# The package's encoders by name (``map --encoder lean``): the shipped widths 16-32-64-128 and the
# lean 8-16-32-64 (0.6 GFLOP instead of 2.4: the 30 Hz one, README "A lean encoder").
NAMED_ENCODERS = {"shipped": DEFAULT_ENCODER_PATH, "lean": DEFAULT_ENCODER_PATH.with_name("encoder_lean.pt")}


def encoder_path_of(name_or_path: str | os.PathLike) -> Path:
    """An encoder file's path from a path or a name of ``NAMED_ENCODERS``; an existing file of
    that name wins over the name."""
    path = Path(name_or_path)
    return NAMED_ENCODERS[str(name_or_path)] if str(name_or_path) in NAMED_ENCODERS and not path.exists() else path


def encoder_shape(path: str | os.PathLike) -> str:
    """An encoder file's widths and residual blocks, e.g. '8-16-32-64x2' (path: a file or a name)."""
    config = load_encoder(encoder_path_of(path))[1]["encoder_config"]
    return "-".join(str(c) for c in config["channels"]) + f"x{config['residual_blocks']}"


def state_digest(state_dict: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the sorted names and raw bytes of the weights (recorded in the file, checked on load)."""
    digest = hashlib.sha256()
    for key in sorted(state_dict):
        digest.update(key.encode())
        digest.update(state_dict[key].detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


class EncoderFileError(ValueError):
    """A shipped or user-given encoder file is missing, damaged or of another format."""


def load_encoder(path: Path) -> tuple[Encoder, dict]:
    """Load an encoder file written by ``dsac_ros.pretrain.export_encoder``; returns (encoder, metadata)."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise EncoderFileError(f"encoder file {path} does not exist") from None
    except Exception as error:  # pickle/zip errors of a damaged file
        raise EncoderFileError(f"encoder file {path} is damaged or not a torch file: {error}") from None
    if not isinstance(payload, dict) or payload.get("format") != ENCODER_FORMAT:
        raise EncoderFileError(f"{path} is not a dsac_ros encoder file")
    if int(payload.get("format_version", -1)) > ENCODER_FORMAT_VERSION:
        raise EncoderFileError(f"{path} has format version {payload['format_version']}, newer than this "
                               f"dsac_ros reads ({ENCODER_FORMAT_VERSION})")
    weights = payload["state_dict"]
    if state_digest(weights) != payload.get("weights_sha256"):
        raise EncoderFileError(f"{path}: weights do not match their recorded SHA-256 (damaged file)")
    config = payload["encoder_config"]
    encoder = Encoder([int(c) for c in config["channels"]], int(config["residual_blocks"]), int(config["feature_channels"]))
    encoder.load_state_dict(weights)
    encoder.eval()
    return encoder, {k: v for k, v in payload.items() if k != "state_dict"}


def load_mapping_encoder(path: Optional[str | os.PathLike], log: Callable[[str], None] = logger.warning
                         ) -> tuple[Encoder, dict[str, Any], dict[str, Any]]:
    """(encoder, encoder config, description) from a file, the shipped file, or a random fallback.

    path: a file or a name of ``NAMED_ENCODERS`` ('shipped', 'lean'). An explicitly given file
    must load (EncoderFileError otherwise). Without one, the shipped ``dsac_ros/assets/encoder.pt``
    is used when present; failing that, a randomly initialised encoder with a loud warning: maps
    then work but generalise poorly (issue 6 measurements).
    """
    candidate = encoder_path_of(path) if path is not None else DEFAULT_ENCODER_PATH
    if path is not None or candidate.exists():
        encoder, metadata = load_encoder(candidate)
        config = dict(metadata.get("encoder_config") or {
            "channels": [m.out_channels for m in encoder.stem if isinstance(m, nn.Conv2d)],
            "residual_blocks": len(encoder.blocks), "feature_channels": encoder.feature_channels})
        return encoder, config, {"encoder": str(candidate), "encoder_sha256": metadata.get("weights_sha256", ""),
                                 "encoder_training": metadata.get("training", {})}
    message = (f"no encoder file at {candidate} and none given (--encoder): mapping with a RANDOMLY "
               "INITIALISED encoder. The map will fit its mapping frames but localise poorly elsewhere; "
               "pass --encoder PATH once a pretrained encoder exists (dsac-ros pretrain-encoder).")
    log(message)
    config = network_config("fast")["encoder"]
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(0)
    encoder = Encoder([int(c) for c in config["channels"]], int(config["residual_blocks"]),
                      int(config["feature_channels"]))
    torch.random.set_rng_state(generator_state)
    return encoder.eval(), config, {"encoder": "random-init (seed 0)", "encoder_sha256": ""}


@torch.no_grad()
def calibrate_random_encoder(encoder: Encoder, images: torch.Tensor, tolerance: float = 0.05,
                             iterations: int = 4) -> Encoder:
    """Rescale a randomly initialised encoder's convolutions, in forward order, to unit output std
    on ``images`` (B, 1, H, W) (layer-sequential unit variance). PyTorch's default init shrinks
    the signal through the stack (per-channel feature std about 0.004 at the output), which starves
    a head trained with the usual learning rates. Changes the encoder in place and returns it."""
    for conv in [m for m in encoder.modules() if isinstance(m, nn.Conv2d)]:
        for _ in range(iterations):
            captured: dict[str, float] = {}

            def record_std(module, inputs, output) -> None:  # returning None keeps the output
                captured["std"] = float(output.std())

            handle = conv.register_forward_hook(record_std)
            encoder(images)
            handle.remove()
            std = captured.get("std", 0.0)
            if not std > 1e-12:
                break
            conv.weight.div_(std)
            if conv.bias is not None:
                conv.bias.div_(std)
            if abs(std - 1.0) < tolerance:
                break
    return encoder


__all__ = ["DEFAULT_ENCODER_PATH", "ENCODER_FORMAT", "ENCODER_FORMAT_VERSION", "EncoderFileError",
           "calibrate_random_encoder", "load_encoder", "load_mapping_encoder", "state_digest"]
