"""Reading a PyTorch checkpoint file into NumPy arrays: the only module that imports torch.

torch is imported lazily, so the rest of the library (and analysis of an imported workdir)
never needs it; where it is missing the error says how to install it. The weights file may be
a gs:// URI (read through ``flatrob_jax.fileio``).
"""

from __future__ import annotations

import hashlib
import io
import os

import numpy as np

from flatrob_jax import fileio

INSTALL_HINT = "pip install 'flatrob_jax[torch]' (or any CPU build of torch)"
# Keys under which training scripts nest the state_dict inside a checkpoint dict.
NESTED_KEYS = ("state_dict", "model_state_dict", "model", "net", "state_dict_ema")


class ChecksumMismatch(ValueError):
    """The weights file's sha256 is not the expected one."""


def require_torch():
    """The torch module, or ImportError naming the extra to install."""
    try:
        import torch
    except ImportError as e:
        raise ImportError(
            f"importing PyTorch weights needs torch, which is not installed: "
            f"{INSTALL_HINT}. Analysis of an imported workdir does not."
        ) from e
    return torch


def torch_version() -> str | None:
    try:
        import torch
    except ImportError:
        return None
    return torch.__version__


def sha256_of(path: str, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with fileio.open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def verify_file(path: str, expected_sha256: str | None) -> str:
    """The file's sha256, after checking it exists (FileNotFoundError) and, when
    ``expected_sha256`` is given, that it matches (ChecksumMismatch)."""
    if not fileio.isfile(path):
        raise FileNotFoundError(f"weights file {path!r} not found")
    digest = sha256_of(path)
    if expected_sha256 is not None:
        want = expected_sha256.strip().lower()
        if len(want) != 64 or any(c not in "0123456789abcdef" for c in want):
            raise ValueError(f"--sha256={expected_sha256!r} is not a sha256 (64 hex digits)")
        if digest != want:
            raise ChecksumMismatch(
                f"weights file {path!r} has sha256 {digest}, expected {want}: "
                f"a different or corrupted download"
            )
    return digest


def _is_tensor_dict(obj, torch) -> bool:
    return (
        isinstance(obj, dict)
        and bool(obj)
        and all(isinstance(v, torch.Tensor) for v in obj.values())
    )


def unwrap(obj, torch, where: str = "the checkpoint"):
    """The ``{name: tensor}`` dict inside a checkpoint: the object itself, or one nested under
    a usual key (``state_dict``, ``model_state_dict``, ``model``, ``net``, ...)."""
    if _is_tensor_dict(obj, torch):
        return obj
    if isinstance(obj, dict):
        for key in NESTED_KEYS:
            if key in obj and _is_tensor_dict(obj[key], torch):
                return obj[key]
        if all(isinstance(k, str) for k in obj):  # tensors mixed with other entries
            tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
            if tensors and all(not isinstance(v, dict) for v in obj.values()):
                return tensors
        raise ValueError(
            f"{where} is a dict without a state_dict of tensors at its top level "
            f"or under any of {NESTED_KEYS}; its keys: {sorted(map(str, obj))[:20]}"
        )
    raise ValueError(
        f"{where} holds a {type(obj).__name__}, not a state_dict (a dict of "
        f"tensors); save model.state_dict(), not the module"
    )


def to_numpy(state_dict: dict, torch) -> dict:
    """``{name: np.ndarray}`` (float tensors as float32 or wider, as stored)."""
    out = {}
    for name, value in state_dict.items():
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu()
            if value.is_floating_point() and value.dtype in (torch.float16, torch.bfloat16):
                value = value.float()
            out[name] = value.numpy()
        else:
            out[name] = np.asarray(value)
    return out


def read_state_dict(weights) -> dict:
    """``weights``: a path to a ``.pt``/``.pth`` file (read with ``torch.load(...,
    weights_only=True)``: tensors and plain containers only, no pickled code) or an in-memory
    dict of torch tensors (or of NumPy arrays, which needs no torch) -> ``{name: np.ndarray}``."""
    if (
        isinstance(weights, dict)
        and weights
        and all(isinstance(v, np.ndarray) for v in weights.values())
    ):
        return dict(weights)
    torch = require_torch()
    if isinstance(weights, (str, os.PathLike)):
        path = os.fspath(weights)
        try:
            # A local file is read by torch itself; an object is downloaded into memory.
            source = io.BytesIO(fileio.read_bytes(path)) if fileio.is_uri(path) else path
            obj = torch.load(source, map_location="cpu", weights_only=True)
        except Exception as e:
            raise ValueError(
                f"weights file {path!r} cannot be read by torch.load "
                f"(weights_only=True): {type(e).__name__}: {str(e)[:300]}"
            ) from e
        return to_numpy(unwrap(obj, torch, f"weights file {path!r}"), torch)
    return to_numpy(unwrap(weights, torch, "the given weights"), torch)
