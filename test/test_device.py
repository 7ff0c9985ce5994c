"""Device resolution: cpu always works; cuda without a GPU is a clear error, not a crash."""

import pytest
import torch

from dsac_ros.device import DeviceError, resolve_device


def test_cpu_and_auto_resolve():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")
    expected_auto = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected_auto
    assert resolve_device(None).type == expected_auto


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
@pytest.mark.parametrize("spec", ["cuda", "cuda:0", "cuda:1"])
def test_cuda_without_gpu_is_a_clear_error(spec):
    with pytest.raises(DeviceError, match=r"requested but .*(no CUDA|CUDA support).*'cpu'"):
        resolve_device(spec)


@pytest.mark.parametrize("spec", ["gpu", "cuda:x", "cuda:-1", ""])
def test_unknown_device_strings_are_refused(spec):
    with pytest.raises(DeviceError, match="auto, cpu, cuda"):
        resolve_device(spec)
