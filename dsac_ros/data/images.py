"""Decoding and encoding of ROS image payloads, without ROS.

The functions take the fields of ``sensor_msgs/Image`` (encoding, height, width, step,
is_bigendian, data) or ``sensor_msgs/CompressedImage`` (format, data), so the bag reader and the
ROS node share them. Rows may carry padding (``step`` > width * bytes per pixel); multi-byte pixels
are byte-swapped when ``is_bigendian`` differs from the host. Decoding wraps the payload without a
copy (``np.frombuffer``) and copies only where the output layout requires it; the result may share
memory with ``data`` and be read-only unless ``copy=True``.

Depth conventions (REP-118): ``32FC1`` in metres, ``16UC1`` / ``mono16`` depth in millimetres;
0 (and NaN / inf for float depth) marks an invalid pixel. Decoded depth is float32 metres with 0
for invalid pixels (never NaN).
"""

from __future__ import annotations

import struct
import sys

import numpy as np

# encoding -> (channels, numpy dtype, channel order of colour data)
_LAYOUTS: dict[str, tuple[int, str, str]] = {
    "rgb8": (3, "u1", "rgb"), "bgr8": (3, "u1", "bgr"), "rgba8": (4, "u1", "rgba"),
    "bgra8": (4, "u1", "bgra"), "mono8": (1, "u1", "mono"), "8UC1": (1, "u1", "mono"),
    "8UC3": (3, "u1", "bgr"),  # OpenCV's default colour order, as cv_bridge assumes
    "8UC4": (4, "u1", "bgra"),
    "mono16": (1, "u2", "mono"), "16UC1": (1, "u2", "mono"),
    "rgb16": (3, "u2", "rgb"), "bgr16": (3, "u2", "bgr"),
    "32FC1": (1, "f4", "mono"),
}
COLOUR_ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8", "8UC1", "8UC3", "8UC4", "mono16", "rgb16", "bgr16")
DEPTH_ENCODINGS = ("16UC1", "mono16", "32FC1")
_HOST_BIG_ENDIAN = sys.byteorder == "big"


class ImageDecodeError(ValueError):
    """An image payload that cannot be decoded; the message names the problem."""


def _pixels(encoding: str, height: int, width: int, step: int, is_bigendian: bool, data) -> np.ndarray:
    """Zero-copy (H, W, C) view of a raw image payload, in host byte order where possible."""
    if encoding not in _LAYOUTS:
        raise ImageDecodeError(
            f"unknown image encoding {encoding!r}; supported: {', '.join(_LAYOUTS)}")
    channels, kind, _ = _LAYOUTS[encoding]
    if height <= 0 or width <= 0:
        raise ImageDecodeError(f"image size must be positive, got {width}x{height}")
    itemsize = int(kind[1])
    row_bytes = width * channels * itemsize
    if step < row_bytes:
        raise ImageDecodeError(
            f"{encoding} image: step {step} bytes is smaller than width {width} x {channels * itemsize} bytes per pixel")
    buffer = np.frombuffer(data, np.uint8) if not isinstance(data, np.ndarray) else data.reshape(-1).view(np.uint8)
    if buffer.size != step * height:
        raise ImageDecodeError(
            f"{encoding} image: data has {buffer.size} bytes, expected step * height = {step} * {height} = {step * height}")
    byte_order = ">" if is_bigendian else "<"
    dtype = np.dtype(byte_order + kind) if itemsize > 1 else np.dtype(kind)
    pixels = np.ndarray((height, width, channels), dtype=dtype, buffer=buffer,
                        strides=(step, channels * itemsize, itemsize))
    if itemsize > 1 and bool(is_bigendian) != _HOST_BIG_ENDIAN:
        pixels = pixels.astype(dtype.newbyteorder("="))
    return pixels


def decode_image(encoding: str, height: int, width: int, step: int, is_bigendian: bool, data,
                 copy: bool = False) -> np.ndarray:
    """A colour or grey image payload -> (H, W, 3) uint8 RGB (grey replicated, alpha dropped,
    16-bit scaled to 8-bit)."""
    pixels = _pixels(encoding, height, width, step, is_bigendian, data)
    order = _LAYOUTS[encoding][2]
    if encoding == "32FC1":
        raise ImageDecodeError("32FC1 is a depth encoding, not a colour image; use decode_depth")
    if pixels.dtype != np.uint8:
        pixels = (pixels >> 8).astype(np.uint8)
    if order == "mono":
        rgb = np.repeat(pixels, 3, axis=2)
    elif order in ("bgr", "bgra"):
        rgb = pixels[:, :, 2::-1]
    else:
        rgb = pixels[:, :, :3]
    if copy or not rgb.flags.c_contiguous:
        rgb = np.ascontiguousarray(rgb) if not copy else rgb.copy()
    return rgb


def decode_gray(encoding: str, height: int, width: int, step: int, is_bigendian: bool, data) -> np.ndarray:
    """Any colour or grey payload -> (H, W) uint8 grey (ITU-R BT.601 luma for colour)."""
    pixels = _pixels(encoding, height, width, step, is_bigendian, data)
    if pixels.dtype != np.uint8:
        pixels = (pixels >> 8).astype(np.uint8)
    order = _LAYOUTS[encoding][2]
    if order == "mono":
        return np.ascontiguousarray(pixels[:, :, 0])
    rgb = pixels[:, :, 2::-1] if order in ("bgr", "bgra") else pixels[:, :, :3]
    luma = rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    return (luma + 0.5).astype(np.uint8)


def decode_depth(encoding: str, height: int, width: int, step: int, is_bigendian: bool, data) -> np.ndarray:
    """A depth payload (``16UC1``/``mono16`` millimetres or ``32FC1`` metres) -> (H, W) float32
    metres, 0 where invalid."""
    if encoding not in DEPTH_ENCODINGS:
        raise ImageDecodeError(
            f"unsupported depth encoding {encoding!r}; supported: {', '.join(DEPTH_ENCODINGS)}")
    pixels = _pixels(encoding, height, width, step, is_bigendian, data)[:, :, 0]
    if encoding == "32FC1":
        depth = np.array(pixels, dtype=np.float32)
        depth[~np.isfinite(depth) | (depth < 0)] = 0.0
        return depth
    return pixels.astype(np.float32) * np.float32(1e-3)


def _imdecode(data, flags) -> np.ndarray:
    import cv2

    buffer = np.frombuffer(data, np.uint8) if not isinstance(data, np.ndarray) else data.reshape(-1).view(np.uint8)
    if buffer.size == 0:
        raise ImageDecodeError("compressed image has no data")
    image = cv2.imdecode(buffer, flags)
    if image is None:
        raise ImageDecodeError(f"compressed image of {buffer.size} bytes is corrupt or not JPEG/PNG")
    return image


def decode_compressed(format: str, data) -> np.ndarray:
    """A ``sensor_msgs/CompressedImage`` (JPEG or PNG) -> (H, W, 3) uint8 RGB.

    ``format`` is image_transport's string, e.g. ``"rgb8; jpeg compressed bgr8"`` or plain
    ``"jpeg"``. OpenCV decodes to BGR; the stored data is BGR unless the format says it was
    compressed from rgb8 directly.
    """
    import cv2

    fmt = (format or "").lower()
    if "compresseddepth" in fmt:
        raise ImageDecodeError(f"format {format!r} is compressed depth; use decode_compressed_depth")
    image = _imdecode(data, cv2.IMREAD_UNCHANGED)
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2)
    stored_rgb = "compressed rgb" in fmt
    image = image[:, :, :3]
    return np.ascontiguousarray(image if stored_rgb else image[:, :, ::-1])


def decode_compressed_depth(format: str, data) -> np.ndarray:
    """A ``compressedDepth`` payload (12-byte header, then PNG) -> (H, W) float32 metres.

    16UC1 payloads hold millimetres; 32FC1 payloads hold quantised inverse depth with
    depth = a / (value - b), the two floats after the header's format field.
    """
    import cv2

    raw = bytes(data) if not isinstance(data, bytes) else data
    if len(raw) <= 12:
        raise ImageDecodeError(f"compressedDepth payload of {len(raw)} bytes has no image after its header")
    _, quant_a, quant_b = struct.unpack("<iff", raw[:12])
    image = _imdecode(raw[12:], cv2.IMREAD_UNCHANGED)
    if image.dtype != np.uint16 or image.ndim != 2:
        raise ImageDecodeError(f"compressedDepth image is {image.dtype} with shape {image.shape}, expected 16-bit grey")
    if "32fc1" in (format or "").lower():
        values = image.astype(np.float32)
        with np.errstate(divide="ignore"):
            depth = np.where(values > 0, quant_a / (values - quant_b), 0.0).astype(np.float32)
        depth[~np.isfinite(depth) | (depth < 0)] = 0.0
        return depth
    return image.astype(np.float32) * np.float32(1e-3)


# --------------------------------------------------------------------------------------------------
# encoding


def encode_image(image: np.ndarray, encoding: str, row_padding_bytes: int = 0,
                 big_endian: bool = False) -> tuple[int, bytes]:
    """An image -> (step, data) for ``sensor_msgs/Image``.

    image: (H, W, 3) uint8 RGB for colour/grey encodings (grey = BT.601 luma), or (H, W) float
        depth in metres for ``32FC1`` / ``16UC1`` (millimetres, rounded; 0 and non-finite -> 0).
    row_padding_bytes: extra bytes at the end of each row (to produce and test padded steps).
    """
    image = np.asarray(image)
    if encoding in ("32FC1", "16UC1") and image.ndim == 2:
        depth = np.where(np.isfinite(image) & (image > 0), image, 0.0)
        if encoding == "32FC1":
            pixels = depth.astype(np.float32)[:, :, None]
        else:
            pixels = np.clip(np.round(depth * 1000.0), 0, 65535).astype(np.uint16)[:, :, None]
    else:
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ImageDecodeError(f"encode_image expects (H, W, 3) uint8 RGB, got {image.dtype} {image.shape}")
        if encoding not in _LAYOUTS or encoding == "32FC1":
            raise ImageDecodeError(f"cannot encode to {encoding!r}; supported: {', '.join(COLOUR_ENCODINGS)}")
        order = _LAYOUTS[encoding][2]
        if order == "mono":
            luma = image.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
            pixels = (luma + 0.5).astype(np.uint8)[:, :, None]
        else:
            pixels = image[:, :, ::-1] if order.startswith("bgr") else image
            if order.endswith("a"):
                pixels = np.concatenate([pixels, np.full(image.shape[:2] + (1,), 255, np.uint8)], axis=2)
        if _LAYOUTS[encoding][1] == "u2":
            pixels = pixels.astype(np.uint16) * 257  # 0..255 -> 0..65535
    dtype = pixels.dtype.newbyteorder(">" if big_endian else "<")
    rows = np.ascontiguousarray(pixels, dtype=dtype).reshape(pixels.shape[0], -1).view(np.uint8)
    if row_padding_bytes:
        rows = np.concatenate([rows, np.zeros((rows.shape[0], row_padding_bytes), np.uint8)], axis=1)
    return int(rows.shape[1]), rows.tobytes()


def encode_compressed(image_rgb: np.ndarray, fmt: str = "jpeg", quality: int = 95) -> tuple[str, bytes]:
    """(H, W, 3) uint8 RGB -> (format string, bytes) for ``sensor_msgs/CompressedImage``."""
    import cv2

    ext = {"jpeg": ".jpg", "jpg": ".jpg", "png": ".png"}.get(fmt.lower())
    if ext is None:
        raise ImageDecodeError(f"unsupported compression {fmt!r}; use jpeg or png")
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if ext == ".jpg" else []
    ok, buffer = cv2.imencode(ext, np.ascontiguousarray(image_rgb[:, :, ::-1]), params)
    if not ok:
        raise ImageDecodeError(f"OpenCV failed to encode {fmt}")
    return f"rgb8; {'jpeg' if ext == '.jpg' else 'png'} compressed bgr8", buffer.tobytes()
