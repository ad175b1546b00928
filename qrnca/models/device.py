"""Choosing the device and checking that the installed torch build can drive it."""

from __future__ import annotations

import torch

from ..errors import InputError


def check_cuda_arch(device: torch.device) -> None:
    """Fail clearly when this torch build has no kernels for the GPU (e.g. a V100, sm_70, with a
    CUDA 12.8+ wheel), instead of a cryptic "no kernel image is available" mid-run."""
    if device.type != "cuda":
        return
    major, minor = torch.cuda.get_device_capability(device)
    arch = f"sm_{major}{minor}"
    built = torch.cuda.get_arch_list()
    compatible = arch in built or any(
        a.startswith("compute_") and int(a.split("_")[1]) <= major * 10 + minor for a in built
    )
    if not compatible:
        raise InputError(
            f"torch {torch.__version__} (CUDA {torch.version.cuda}) has no kernels for "
            f"{torch.cuda.get_device_name(device)} ({arch}); built for {built}. Install the GPU "
            "environment of envs/gpu.yaml (CUDA 12.6 build, which includes sm_70 for V100)."
        )


def resolve_device(name: str) -> torch.device:
    """`cpu`, `cuda`, `cuda:N`; asking for CUDA where none is available is an error."""
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"device {name!r} requested but CUDA is not available on this host")
        check_cuda_arch(device)
    return device
