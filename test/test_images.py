"""Image payload decoding/encoding: every encoding decodes to the same pixels; bad payloads fail clearly."""

import struct

import cv2
import numpy as np
import pytest

from dsac_ros.data.images import (ImageDecodeError, decode_compressed, decode_compressed_depth, decode_depth,
                                  decode_gray, decode_image, encode_compressed, encode_image)


@pytest.fixture(scope="module")
def rgb():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(7, 11, 3), dtype=np.uint8)


def luma(rgb):
    return (rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32) + 0.5).astype(np.uint8)


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8", "8UC3", "8UC4"])
@pytest.mark.parametrize("padding", [0, 5])
def test_colour_encodings_round_trip_exactly(rgb, encoding, padding):
    step, data = encode_image(rgb, encoding, row_padding_bytes=padding)
    channels = 4 if encoding in ("rgba8", "bgra8", "8UC4") else 3
    assert step == rgb.shape[1] * channels + padding
    decoded = decode_image(encoding, rgb.shape[0], rgb.shape[1], step, False, data)
    assert decoded.shape == rgb.shape and decoded.dtype == np.uint8
    np.testing.assert_array_equal(decoded, rgb)


def test_bgr_payload_is_really_swapped(rgb):
    bgr_bytes = np.ascontiguousarray(rgb[:, :, ::-1]).tobytes()
    decoded = decode_image("bgr8", rgb.shape[0], rgb.shape[1], rgb.shape[1] * 3, False, bgr_bytes)
    np.testing.assert_array_equal(decoded, rgb)


@pytest.mark.parametrize("encoding", ["mono8", "mono16"])
@pytest.mark.parametrize("big_endian", [False, True])
def test_grey_encodings_replicate_luma(rgb, encoding, big_endian):
    step, data = encode_image(rgb, encoding, row_padding_bytes=3, big_endian=big_endian)
    decoded = decode_image(encoding, rgb.shape[0], rgb.shape[1], step, big_endian, data)
    expected = luma(rgb)
    for channel in range(3):
        np.testing.assert_array_equal(decoded[:, :, channel], expected)
    np.testing.assert_array_equal(decode_gray(encoding, rgb.shape[0], rgb.shape[1], step, big_endian, data), expected)


def test_gray_of_colour_is_luma(rgb):
    step, data = encode_image(rgb, "bgra8")
    np.testing.assert_array_equal(decode_gray("bgra8", 7, 11, step, False, data), luma(rgb))


def test_rgb8_without_padding_is_not_copied(rgb):
    step, data = encode_image(rgb, "rgb8")
    payload = np.frombuffer(data, np.uint8)
    decoded = decode_image("rgb8", 7, 11, step, False, payload)
    assert np.shares_memory(decoded, payload)
    assert not np.shares_memory(decode_image("rgb8", 7, 11, step, False, payload, copy=True), payload)


def test_depth_32fc1_exact_and_invalid_to_zero():
    depth = np.array([[0.5, 1.25, np.nan], [np.inf, 0.0, 7.125]], np.float32)
    step, data = encode_image(depth, "32FC1", row_padding_bytes=4)
    decoded = decode_depth("32FC1", 2, 3, step, False, data)
    np.testing.assert_array_equal(decoded, [[0.5, 1.25, 0.0], [0.0, 0.0, 7.125]])
    assert np.all(np.isfinite(decoded))
    # Big-endian float payloads are byte-swapped.
    big = depth.astype(">f4").tobytes()
    np.testing.assert_array_equal(decode_depth("32FC1", 2, 3, 12, True, big), decoded)


@pytest.mark.parametrize("big_endian", [False, True])
def test_depth_16uc1_millimetres(big_endian):
    millimetres = np.array([[0, 1, 1500], [65535, 250, 4000]], np.uint16)
    data = millimetres.astype(">u2" if big_endian else "<u2").tobytes()
    decoded = decode_depth("16UC1", 2, 3, 6, big_endian, data)
    np.testing.assert_allclose(decoded, millimetres / 1000.0, rtol=1e-6)
    step, encoded = encode_image(decoded, "16UC1")
    np.testing.assert_array_equal(np.frombuffer(encoded, "<u2").reshape(2, 3), millimetres)


def test_unknown_encoding_is_named():
    with pytest.raises(ImageDecodeError, match="yuv422"):
        decode_image("yuv422", 2, 2, 4, False, bytes(8))
    with pytest.raises(ImageDecodeError, match="depth encoding 'rgb8'"):
        decode_depth("rgb8", 2, 2, 6, False, bytes(12))


def test_size_mismatch_and_short_step_are_named():
    with pytest.raises(ImageDecodeError, match="expected step \\* height"):
        decode_image("rgb8", 4, 4, 12, False, bytes(47))
    with pytest.raises(ImageDecodeError, match="step 10 bytes is smaller"):
        decode_image("rgb8", 4, 4, 10, False, bytes(40))


def test_compressed_png_exact_and_jpeg_close(rgb):
    big = cv2.resize(rgb, (88, 56), interpolation=cv2.INTER_NEAREST)
    fmt, data = encode_compressed(big, "png")
    np.testing.assert_array_equal(decode_compressed(fmt, data), big)
    smooth = cv2.GaussianBlur(big, (9, 9), 3)
    fmt, data = encode_compressed(smooth, "jpeg", quality=98)
    assert "jpeg" in fmt
    assert np.abs(decode_compressed(fmt, data).astype(int) - smooth).mean() < 3.0
    # Data stored in RGB order ("compressed rgb8") is not swapped back.
    ok, raw = cv2.imencode(".png", big)  # big's RGB bytes written as if BGR
    np.testing.assert_array_equal(decode_compressed("rgb8; png compressed rgb8", raw.tobytes()), big)


def test_corrupt_compressed_image_fails_clearly():
    with pytest.raises(ImageDecodeError, match="corrupt"):
        decode_compressed("jpeg", b"\xff\xd8\xff\x00 definitely not a jpeg")


def test_compressed_depth_16uc1():
    millimetres = np.array([[0, 1000], [2500, 65000]], np.uint16)
    ok, png = cv2.imencode(".png", millimetres)
    payload = struct.pack("<iff", 0, 0.0, 0.0) + png.tobytes()
    np.testing.assert_allclose(decode_compressed_depth("16UC1; compressedDepth png", payload),
                               millimetres / 1000.0, rtol=1e-6)
    with pytest.raises(ImageDecodeError):
        decode_compressed("16UC1; compressedDepth png", payload)
