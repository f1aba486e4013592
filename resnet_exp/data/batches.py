"""CIFAR-10's python batches (``cifar-10-batches-py/data_batch_1`` ...), read without
running code.

The batches are pickles, and ``pickle.loads`` on a crafted file runs whatever it names
(``__reduce__`` returning ``os.system``). Data folders are shared on clusters and copied
from mirrors, so a batch is unpickled by ``BatchUnpickler``, which admits only what the
real batches hold: dicts, lists, bytes, str, ints and uint8 numpy arrays. Any other global
is refused before it is called. This follows the "restricting globals" recipe of Python's
pickle documentation, written by hand because no library reads these files safely
(torch's ``weights_only`` unpickler admits torch's types, not numpy's). Each batch is then
checked to be what CIFAR-10's are (keys, types, shapes, label range, counts) and a
mistake is a ``DatasetError`` naming the file; never a traceback.
"""

from __future__ import annotations

import codecs
import io
import pickle
from typing import Any, Callable

import numpy as np

N_CLASSES = 10
IMAGE_BYTES = 3 * 32 * 32
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"


class BatchError(ValueError):
    """A batch file is not a CIFAR-10 batch (the caller names the file)."""


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    """Python 3 writes bytes into protocol-2 pickles as ``_codecs.encode(text, 'latin1')``:
    admitted for that one encoding only."""
    if encoding not in ("latin1", "latin-1"):
        raise BatchError(f"the pickle asks for the codec {encoding!r}; CIFAR-10 batches use only latin1")
    return codecs.encode(text, "latin1")


def _numpy_globals() -> dict[tuple[str, str], Any]:
    """The numpy names an array's pickle refers to, under numpy 1's and numpy 2's module names."""
    try:
        from numpy._core import multiarray, numeric  # numpy 2
    except ImportError:  # numpy 1
        from numpy.core import multiarray, numeric  # type: ignore[no-redef]
    allowed: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for prefix in ("numpy.core", "numpy._core"):
        allowed[(f"{prefix}.multiarray", "_reconstruct")] = multiarray._reconstruct
        if hasattr(numeric, "_frombuffer"):
            allowed[(f"{prefix}.numeric", "_frombuffer")] = numeric._frombuffer
    allowed[("_codecs", "encode")] = _latin1_encode
    return allowed


class BatchUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals a CIFAR-10 batch needs."""

    ALLOWED = _numpy_globals()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self.ALLOWED[(module, name)]
        except KeyError:
            raise BatchError(f"it asks to load {module}.{name}, which a CIFAR-10 batch never holds "
                             "(refused: unpickling it could run code)") from None


def load_batch(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """One batch's bytes -> (uint8 images N,3,32,32; int64 labels N), checked. Raises
    BatchError saying what is wrong."""
    try:
        d = BatchUnpickler(io.BytesIO(data), encoding="bytes").load()
    except BatchError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            MemoryError, OverflowError, RecursionError) as e:
        raise BatchError(f"not a readable pickle ({type(e).__name__}: {e})") from None
    if not isinstance(d, dict):
        raise BatchError(f"expected a dict with 'data' and 'labels', got {type(d).__name__}")
    d = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in d.items()}
    if missing := [k for k in ("data", "labels") if k not in d]:
        raise BatchError(f"lacks the key(s) {', '.join(missing)} (it has {', '.join(map(str, d)) or 'none'})")
    x, labels = d["data"], d["labels"]
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != IMAGE_BYTES:
        got = f"{x.dtype} array of shape {x.shape}" if isinstance(x, np.ndarray) else type(x).__name__
        raise BatchError(f"'data' must be a uint8 array of shape (N, {IMAGE_BYTES}), got {got}")
    if isinstance(labels, np.ndarray) and labels.dtype.kind in "iu" and labels.ndim == 1:
        y = labels.astype(np.int64)
    elif isinstance(labels, list) and all(type(v) is int for v in labels):
        y = np.asarray(labels, dtype=np.int64)
    else:
        raise BatchError("'labels' must be a list of integers")
    if len(y) != len(x) or len(y) == 0:
        raise BatchError(f"holds {len(x)} images and {len(y)} labels (they must match, and not be 0)")
    if y.min() < 0 or y.max() >= N_CLASSES:
        raise BatchError(f"has labels outside 0..{N_CLASSES - 1} (from {y.min()} to {y.max()})")
    return x.reshape(-1, 3, 32, 32), y


def read_batches(read: Callable[[str], bytes], where: Callable[[str], str],
                 error: type[Exception]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Every batch of a torchvision layout, as splits. ``read(name)`` gives a batch's bytes,
    ``where(name)`` names it in messages, and a bad batch raises ``error`` (the data
    package's DatasetError)."""
    splits = {}
    for split, names in (("train", TRAIN_BATCHES), ("test", (TEST_BATCH,))):
        parts = []
        for name in names:
            try:
                parts.append(load_batch(read(name)))
            except BatchError as e:
                raise error(f"{where(name)} is not a CIFAR-10 batch: {e}. Nothing was run from it; replace the "
                            "file with the official one (torchvision's download, or cifar-10-python.tar.gz)") \
                    from None
        splits[split] = (np.concatenate([x for x, _ in parts]), np.concatenate([y for _, y in parts]))
    return splits
