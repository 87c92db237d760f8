"""NumPy arrays to bytes and back in the ``.npy`` format, and the legacy `Parameters` wrapper.

The format is NumPy's own (header with dtype, shape and order, then the raw data), written and
read with ``allow_pickle=False``: an object array is refused on the way out, and bytes that hold
pickled data are refused on the way in, so loading untrusted bytes never runs code. Both
refusals raise NumPy's `ValueError`, as in Flower.
"""

from __future__ import annotations

from io import BytesIO

import numpy as np

from corolla.common.typing import NDArray, NDArrays, Parameters

TENSOR_TYPE = "numpy.ndarray"  # Parameters.tensor_type of tensors made here


def ndarray_to_bytes(ndarray: NDArray) -> bytes:
    """``ndarray`` as ``.npy`` bytes (dtype, byte order and shape kept; 0-d arrays too)."""
    buffer = BytesIO()
    np.save(buffer, ndarray, allow_pickle=False)  # pickle stays off: see the module docstring
    return buffer.getvalue()


def bytes_to_ndarray(tensor: bytes) -> NDArray:
    """The array in ``.npy`` bytes: a new, writable array that owns its data."""
    loaded = np.load(BytesIO(tensor), allow_pickle=False)
    if not isinstance(loaded, np.ndarray):  # an .npz archive loads as a mapping of arrays
        loaded.close()
        raise ValueError(f"expected the bytes of one .npy array, got {type(loaded).__name__}")
    return loaded


def ndarrays_to_parameters(ndarrays: NDArrays) -> Parameters:
    """Serialize each array with `ndarray_to_bytes`, in order."""
    return Parameters(tensors=[ndarray_to_bytes(a) for a in ndarrays], tensor_type=TENSOR_TYPE)


def parameters_to_ndarrays(parameters: Parameters) -> NDArrays:
    """The arrays of ``parameters``, in order (each tensor read with `bytes_to_ndarray`)."""
    return [bytes_to_ndarray(tensor) for tensor in parameters.tensors]
