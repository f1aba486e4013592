"""CIFAR-10 from wherever it can be had, decoded once, with its provenance.

Sources, in the order they are tried:

1. an explicit path (``--data`` or ``$RESNET_EXP_DATA``): a torchvision layout
   (``cifar-10-batches-py/`` or ``cifar-10-python.tar.gz``), an image-folder tree
   (``train/<class>/*.jpg|png``, ``test/<class>/...``) or a .tar/.tar.gz of one;
2. a torchvision layout already in the data directory (default ``data/``);
3. a decoded cache of a torchvision download in ``<data dir>/cache``;
4. torchvision's download into the data directory.

Whatever the source, the decoded uint8 tensors are cached in one file keyed by the
source's sha256, so decoding happens once. Every dataset carries a provenance dict
(source, path, counts, sha256, lossy/subset flags) that runs record and reports show. A dry
run asks only for that provenance (``cifar10_provenance``): it writes nothing in the data
folder, and keeps the provenance per source sha256 in the user's cache instead.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import torch

from filelock import FileLock

from ..fileio import atomic_torch_save, atomic_write_bytes, atomic_write_json, user_cache_dir
from .batches import read_batches

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
FULL_COUNTS = {"train": 50_000, "test": 10_000}
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
LOSSY_EXTENSIONS = (".jpg", ".jpeg")
TORCHVISION_DIR = "cifar-10-batches-py"
TORCHVISION_TAR = "cifar-10-python.tar.gz"
CACHE_VERSION = 2  # 2: the tensors' sha256 is stored and checked

# sha256 -> a human name, for sources we know (see ../shared/data/README.md).
KNOWN_SOURCES = {
    "87feb744388b1c45dd6757e9e8ead76b1e457ae400d1d3327751594419677c40":
        "CIFAR-10 JPEG mirror, quality 75 (cifar10-jpeg-q75.tar.gz)",
    "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd":
        "CIFAR-10 python version (cifar-10-python.tar.gz, torchvision)",
}


class DatasetError(ValueError):
    """The dataset is missing, unreadable or not what it claims to be."""


@dataclass
class Cifar10:
    train_x: torch.Tensor  # uint8 (N, 3, 32, 32)
    train_y: torch.Tensor  # int64 (N,)
    test_x: torch.Tensor
    test_y: torch.Tensor
    provenance: dict[str, Any]


# --------------------------------------------------------------------------- entry point
def load_cifar10(data: str | os.PathLike | None = None, data_dir: str | os.PathLike = "data",
                 download: bool = True, verbose: bool = True, write: bool = True) -> Cifar10:
    """Load CIFAR-10 (see the module docstring for where from). Raises DatasetError.

    ``write=False`` writes nothing: no cache, no sha256 index, no download."""
    download = download and write
    data_dir = Path(data_dir)
    tried: list[str] = []
    path = _locate(data, data_dir, tried)
    if path is not None:
        return _load_source(path, data_dir, verbose, write)
    if (cached := _real_cache(data_dir, verbose, tried)) is not None:
        return cached
    if download:
        tried.append(f"torchvision download into {data_dir}")
        try:
            from torchvision.datasets import CIFAR10

            CIFAR10(root=str(data_dir), train=True, download=True)
            return _load_source(data_dir, data_dir, verbose)
        except Exception as e:  # no network, a proxy, a broken mirror...
            tried[-1] += f" (failed: {type(e).__name__}: {e})"
    raise _not_found(tried, data_dir)


def cifar10_provenance(data: str | os.PathLike | None = None, data_dir: str | os.PathLike = "data") -> dict[str, Any]:
    """The provenance ``load_cifar10`` would give, for a dry run: the same sources in the same
    order, nothing written in the data folder, no download. The pixels are decoded only the
    first time a source's bytes (its sha256) are seen on this machine: the provenance is then
    kept in the user's cache (fileio.user_cache_dir), so a second plan skips the decoding
    (about 10 s for the JPEG mirror on a 2-core machine at GEMM 192). Raises DatasetError."""
    data_dir = Path(data_dir)
    tried: list[str] = []
    path = _locate(data, data_dir, tried)
    if path is not None:
        sha = source_sha256(path)
        kept = user_cache_dir() / "datasets" / f"cifar10-{sha}.json"
        try:
            prov = json.loads(kept.read_text())
            if isinstance(prov, dict) and prov.get("sha256") == sha:
                return {**prov, "path": str(path)}
        except (OSError, ValueError):
            pass
        prov = _load_source(path, data_dir, verbose=False, write=False).provenance
        try:
            atomic_write_json(kept, prov)
        except OSError:  # a read-only home: the next plan decodes again, nothing else is lost
            pass
        return prov
    if (cached := _real_cache(data_dir, True, tried)) is not None:
        return cached.provenance
    tried.append(f"torchvision download into {data_dir} (not in a dry run)")
    raise _not_found(tried, data_dir)


def _locate(data: str | os.PathLike | None, data_dir: Path, tried: list[str]) -> Path | None:
    """Sources 1 and 2: an explicit path (``data``, else ``$RESNET_EXP_DATA``), else a
    torchvision layout in ``data_dir``; None when neither is there (each place tried is
    added to ``tried``)."""
    data = data if data is not None else os.environ.get("RESNET_EXP_DATA") or None
    if data is not None:
        path = Path(data).expanduser()
        if not path.exists():
            raise DatasetError(f"--data {path}: no such file or folder")
        return path
    for candidate in (data_dir / TORCHVISION_DIR, data_dir / TORCHVISION_TAR):
        tried.append(str(candidate))
        if candidate.exists():
            return candidate.parent if candidate.is_dir() else candidate
    return None


def _real_cache(data_dir: Path, verbose: bool, tried: list[str]) -> Cifar10 | None:
    """Source 3: a cache of the real dataset whose torchvision files were since deleted.
    Caches of explicit --data sources (a JPEG mirror, the mini subset) are used only when that
    source is named again, never silently in place of the real CIFAR-10."""
    caches = sorted((data_dir / "cache").glob("cifar10-*.pt"), key=lambda p: p.stat().st_mtime)
    tried.append(f"{data_dir / 'cache'}/cifar10-*.pt (of a torchvision download)")
    for cache in reversed(caches):
        loaded = _read_cache(cache)
        if loaded is not None and loaded.provenance["source"].startswith("torchvision"):
            _say(verbose, f"[data] using cached {cache} ({loaded.provenance['name']})")
            return loaded
    return None


def _not_found(tried: list[str], data_dir: Path) -> DatasetError:
    return DatasetError(
        "CIFAR-10 could not be found. Tried:\n  - " + "\n  - ".join(tried) + "\n"
        "Fix it one of three ways:\n"
        f"  1. let torchvision download it: run once with network access (it goes to {data_dir}/);\n"
        f"  2. put the official {TORCHVISION_TAR} (or its extracted {TORCHVISION_DIR}/) in {data_dir}/;\n"
        "  3. point --data or RESNET_EXP_DATA at a torchvision layout, an image-folder tree "
        "(train/<class>/*.png, test/<class>/...) or a .tar/.tar.gz of one.")


def _say(verbose: bool, msg: str) -> None:
    if verbose:
        print(msg, flush=True)


# --------------------------------------------------------------------------- sources
def _load_source(path: Path, data_dir: Path, verbose: bool, write: bool = True) -> Cifar10:
    kind = _source_kind(path)
    sha = source_sha256(path)
    cache_dir = data_dir / "cache"
    cache = cache_dir / f"cifar10-{sha[:16]}.pt"
    if cache.exists() and (loaded := _read_cache(cache, sha)) is not None:
        _say(verbose, f"[data] {path}: decoded cache {cache}")
        return loaded
    if not write:  # a dry run decodes in memory and writes nothing
        return _decode(path, kind, sha)
    cache_dir.mkdir(parents=True, exist_ok=True)
    # One decoder at a time per cache folder (two drivers started together decode once); the
    # lock holder may remove what a killed decode left behind.
    with FileLock(cache_dir / ".decode.lock"):
        for orphan in cache_dir.glob(".*.tmp"):
            orphan.unlink(missing_ok=True)
        # another process may have written it meanwhile; the warning about it was given above
        if cache.exists() and (loaded := _read_cache(cache, sha, warn=False)) is not None:
            return loaded
        _say(verbose, f"[data] decoding {path} ({kind}) once; cache: {cache}")
        ds = _decode(path, kind, sha)
        _write_cache(cache, ds)
    return ds


def _decode(path: Path, kind: str, sha: str) -> Cifar10:
    reader = {"torchvision": _read_torchvision_dir, "torchvision-tar": _read_torchvision_tar,
              "image-folder": _read_image_folder, "image-folder-tar": _read_image_tar}[kind]
    splits, lossy = reader(path)
    return _assemble(splits, _provenance(kind, path, sha, splits, lossy))


def _source_kind(path: Path) -> str:
    if path.is_dir():
        if (path / TORCHVISION_DIR).is_dir():
            return "torchvision"
        if (path / "data_batch_1").exists():
            return "torchvision"
        if (path / "train").is_dir() and (path / "test").is_dir():
            return "image-folder"
        raise DatasetError(f"{path}: a folder, but neither a torchvision layout ({TORCHVISION_DIR}/) "
                           "nor an image-folder tree (train/<class>/, test/<class>/)")
    name = path.name.lower()
    if not (name.endswith(".tar") or name.endswith(".tar.gz") or name.endswith(".tgz")):
        raise DatasetError(f"{path}: expected a folder, a .tar or a .tar.gz")
    try:
        with tarfile.open(path) as tar:
            first = tar.next()
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DatasetError(f"{path}: not a readable tar archive ({e}); is the file complete?") from e
    if first is not None and TORCHVISION_DIR in first.name:
        return "torchvision-tar"
    return "image-folder-tar"


def source_sha256(path: Path) -> str:
    """sha256 of an archive's bytes, or of a folder's (relative path, bytes) list.

    Always of the bytes, at every start (about 0.1 s for the 19 MB JPEG mirror, 0.5 s for
    the 170 MB torchvision archive): a signature of sizes and mtimes would let changed
    bytes with the same size and mtime keep the old hash, and the old cache."""
    if path.is_file():
        return _sha256_file(path)
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file() and "cache" not in p.relative_to(path).parts):
        h.update(str(f.relative_to(path)).encode() + b"\0" + _sha256_file(f).encode())
    return h.hexdigest()


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


Splits = dict[str, tuple[np.ndarray, np.ndarray]]  # split -> (uint8 N,3,32,32; int64 N)


def _read_torchvision_dir(path: Path) -> tuple[Splits, bool]:
    root = path / TORCHVISION_DIR if (path / TORCHVISION_DIR).is_dir() else path

    def read(name: str) -> bytes:
        f = root / name
        if not f.exists():
            raise DatasetError(f"{f} is missing: the torchvision layout is incomplete")
        return f.read_bytes()

    return read_batches(read, lambda name: str(root / name), DatasetError), False


def _read_torchvision_tar(path: Path) -> tuple[Splits, bool]:
    members: dict[str, bytes] = {}
    for name, data in _iter_tar(path):
        members[name.split("/")[-1]] = data

    def read(name: str) -> bytes:
        if name not in members:
            raise DatasetError(f"{path}: {name} missing from the archive (truncated?)")
        return members[name]

    return read_batches(read, lambda name: f"{path}: member {name}", DatasetError), False


_IMAGE_PATH = re.compile(r"(?:^|/)(train|test)/([^/]+)/([^/]+)$")


def _read_image_folder(path: Path) -> tuple[Splits, bool]:
    return _decode_images(_read_folder_items(path), str(path))


def _read_image_tar(path: Path) -> tuple[Splits, bool]:
    return _decode_images(_iter_tar(path, MAX_IMAGE_BYTES), str(path))


# The largest member worth reading: a CIFAR-10 python batch is 31 MB, a 32x32 image a few KB.
# A bigger member is refused before it is read (a crafted archive cannot fill the memory).
MAX_BATCH_BYTES, MAX_IMAGE_BYTES = 64 << 20, 1 << 20


def _iter_tar(path: Path, max_member_bytes: int = MAX_BATCH_BYTES) -> Iterator[tuple[str, bytes]]:
    """Every regular file of a tar, as (name, bytes); truncation is an error, never a
    silently smaller dataset. Nothing is extracted to disk (no path in it is ever used)."""
    gz = path.name.lower().endswith((".gz", ".tgz"))
    try:
        with (gzip.open(path, "rb") if gz else open(path, "rb")) as raw, tarfile.open(fileobj=raw, mode="r:") as tar:
            for member in tar:
                if member.isfile() and member.size > max_member_bytes:
                    raise DatasetError(f"{path}: {member.name} is {member.size / 2**20:.0f} MB, larger than any "
                                       "file of CIFAR-10: not a CIFAR-10 archive")
                if member.isfile():
                    f = tar.extractfile(member)
                    data = f.read() if f else b""
                    if len(data) != member.size:
                        raise DatasetError(f"{path}: {member.name} is cut short (truncated archive)")
                    yield member.name, data
            # gzip checks its CRC only at the end of the stream, which tarfile never reads:
            # read it, so that a flipped byte is an error, not a silently altered image
            while raw.read(1 << 20):
                pass
        if not gz:
            _check_tar_end(path)
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        raise DatasetError(f"{path}: the archive is corrupt or truncated ({type(e).__name__}: {e}). "
                           "Download or copy it again.") from e


def _check_tar_end(path: Path) -> None:
    """An uncompressed tar cut at a member boundary reads cleanly; its missing
    end-of-archive marker (two zero blocks) gives the truncation away."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        f.seek(max(0, size - 1024))
        tail = f.read()
    if size % 512 or tail != b"\0" * 1024:
        raise DatasetError(f"{path}: no end-of-archive marker: the tar is truncated. "
                           "Download or copy it again.")


def jpeg_problem(data: bytes) -> str | None:
    """What is structurally wrong with a JPEG file, or None.

    libjpeg decodes some damaged files with only a warning on stderr ("Corrupt JPEG data:
    N extraneous bytes before marker"), which Pillow does not pass on; this walk of the
    marker segments catches those: every segment must start with a marker, the scans'
    entropy-coded data may hold 0xFF only as a stuffed 0xFF00 or a restart marker, and the
    file must end with EOI. Damage inside the entropy-coded data that still decodes cannot
    be told from a real image by any decoder; the archive's sha256 is the check for that."""
    if data[:2] != b"\xff\xd8":
        return "no JPEG start-of-image marker"
    if data[-2:] != b"\xff\xd9":
        return "no JPEG end-of-image marker (truncated?)"
    i, n = 2, len(data)
    while i < n - 2:
        if data[i] != 0xFF:
            return f"{data[i:i + 1].hex()} at byte {i} where a JPEG marker should be"
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0xD9:
            return f"end-of-image marker at byte {i}, before the end of the file"
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:
            i += 2
            continue
        if i + 4 > n:
            return "a marker segment is cut short"
        i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
        if marker == 0xDA:  # start of scan: entropy-coded data up to the next real marker
            while True:
                j = data.find(b"\xff", i)
                if j < 0 or j >= n - 1:
                    return "a scan runs past the end of the file"
                nxt = data[j + 1]
                if nxt == 0x00 or 0xD0 <= nxt <= 0xD7:
                    i = j + 2
                    continue
                i = j
                break
    return None if i == n - 2 else "the file does not end where its segments do"


def _decode_images(items: Iterable[tuple[str, bytes]], where: str) -> tuple[Splits, bool]:
    from PIL import Image

    images: dict[str, list[np.ndarray]] = {"train": [], "test": []}
    labels: dict[str, list[int]] = {"train": [], "test": []}
    lossy = False
    for name, data in items:
        m = _IMAGE_PATH.search(name)
        if m is None or not name.lower().endswith(IMAGE_EXTENSIONS):
            continue
        split, cls, _ = m.groups()
        if cls not in CLASSES:
            raise DatasetError(f"{where}: {name}: class folder {cls!r} is not a CIFAR-10 class "
                               f"({', '.join(CLASSES)})")
        try:
            if name.lower().endswith(LOSSY_EXTENSIONS) and (problem := jpeg_problem(data)):
                raise ValueError(problem)
            img = Image.open(io.BytesIO(data))  # reads the header only
            if img.size != (32, 32):  # before decoding: a crafted 30000x30000 image is never expanded
                raise DatasetError(f"{where}: {name} is {img.size[0]}x{img.size[1]}, expected 32x32")
            img.load()  # the whole image: a truncated file raises here, not later
            img = img.convert("RGB")
        except DatasetError:
            raise
        except Exception as e:
            raise DatasetError(f"{where}: {name} is corrupt or truncated ({e}); copy or download the "
                               "dataset again") from e
        images[split].append(np.asarray(img, dtype=np.uint8).transpose(2, 0, 1))
        labels[split].append(CLASSES.index(cls))
        lossy |= name.lower().endswith(LOSSY_EXTENSIONS)
    splits: Splits = {}
    for split in ("train", "test"):
        if not images[split]:
            raise DatasetError(f"{where}: no images under {split}/<class>/")
        splits[split] = (np.stack(images[split]), np.asarray(labels[split], dtype=np.int64))
    return splits, lossy


# --------------------------------------------------------------------------- checks, cache
def _provenance(kind: str, path: Path, sha: str, splits: Splits, lossy: bool) -> dict[str, Any]:
    n_train, n_test = len(splits["train"][1]), len(splits["test"][1])
    subset = n_train < FULL_COUNTS["train"] or n_test < FULL_COUNTS["test"]
    name = KNOWN_SOURCES.get(sha, "CIFAR-10" + (" (JPEG, lossy)" if lossy else "") +
                             (" mini subset" if subset else ""))
    warnings = []
    if lossy:
        warnings.append("LOSSY JPEG copy of CIFAR-10, not pixel-identical to the real dataset: "
                        "absolute errors are not comparable with the paper; orderings and gaps are.")
    if subset:
        warnings.append(f"SUBSET of CIFAR-10 ({n_train:,} training and {n_test:,} test images instead of "
                        "50,000 and 10,000): errors are far above the paper's and only the shape of "
                        "the results means anything.")
    return {"name": name, "source": kind, "path": str(path), "sha256": sha,
            "n_train": n_train, "n_test": n_test, "lossy": lossy, "subset": subset,
            "warning": " ".join(warnings) or None}


def _assemble(splits: Splits, provenance: dict[str, Any]) -> Cifar10:
    for split, (x, y) in splits.items():
        counts = np.bincount(y, minlength=len(CLASSES))
        if len(counts) != len(CLASSES) or counts.min() == 0:
            raise DatasetError(f"{provenance['path']}: {split} split lacks some classes "
                               f"(counts per class: {counts.tolist()})")
        if counts.min() != counts.max():
            raise DatasetError(f"{provenance['path']}: {split} split has unequal class counts "
                               f"{counts.tolist()}; CIFAR-10 and its per-class subsets are balanced, "
                               "so the source is probably truncated")
    return Cifar10(torch.from_numpy(splits["train"][0]), torch.from_numpy(splits["train"][1]),
                   torch.from_numpy(splits["test"][0]), torch.from_numpy(splits["test"][1]), provenance)


def _tensors_sha256(ds: Cifar10) -> str:
    h = hashlib.sha256()
    for t in (ds.train_x, ds.train_y, ds.test_x, ds.test_y):
        h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()


def _write_cache(path: Path, ds: Cifar10) -> None:
    atomic_torch_save({"version": CACHE_VERSION, "train_x": ds.train_x, "train_y": ds.train_y,
                       "test_x": ds.test_x, "test_y": ds.test_y, "tensors_sha256": _tensors_sha256(ds),
                       "provenance_json": json.dumps(ds.provenance)}, path)


def _read_cache(path: Path, sha: str | None = None, warn: bool = True) -> Cifar10 | None:
    """A cached dataset whose tensors match their recorded checksum (and, given ``sha``,
    whose source is that one); otherwise None, with a warning: it is rebuilt."""
    try:
        d = torch.load(path, map_location="cpu", weights_only=True)
        if d.get("version") != CACHE_VERSION:
            return None
        ds = Cifar10(d["train_x"], d["train_y"], d["test_x"], d["test_y"], json.loads(d["provenance_json"]))
        assert ds.train_x.dtype == torch.uint8 and ds.train_x.shape[1:] == (3, 32, 32)
        assert len(ds.train_x) == ds.provenance["n_train"] and len(ds.test_x) == ds.provenance["n_test"]
        if d.get("tensors_sha256") != _tensors_sha256(ds):
            raise ValueError("its tensors do not match their recorded sha256")
        if sha is not None and ds.provenance.get("sha256") != sha:
            return None
        return ds
    except Exception as e:
        if warn:
            print(f"[data] ignoring unusable cache {path} ({type(e).__name__}: {e}); it will be rebuilt")
        return None


# --------------------------------------------------------------------------- mini subset
def make_mini_subset(source: str | os.PathLike, out: str | os.PathLike, train_per_class: int = 1000,
                     test_per_class: int = 200) -> Path:
    """Copy an evenly spread per-class subset of an image-folder archive into a new
    .tar.gz, bytes unchanged (no re-encoding) and deterministic (sorted, mtime 0)."""
    source, out = Path(source), Path(out)
    by_class: dict[tuple[str, str], list[tuple[str, bytes]]] = {}
    for name, data in _iter_tar(source) if source.is_file() else _read_folder_items(source):
        m = _IMAGE_PATH.search(name)
        if m and name.lower().endswith(IMAGE_EXTENSIONS):
            by_class.setdefault((m.group(1), m.group(2)), []).append((f"{m.group(1)}/{m.group(2)}/{m.group(3)}", data))
    buf = io.BytesIO()
    # mtime=0 in the gzip header too (it defaults to now): the same input gives the same bytes
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for (split, cls), items in sorted(by_class.items()):
            items.sort()
            k = train_per_class if split == "train" else test_per_class
            if len(items) < k:
                raise DatasetError(f"{source}: {split}/{cls} has {len(items)} images, fewer than {k}")
            step = len(items) / k
            for name, data in (items[int(i * step)] for i in range(k)):
                info = tarfile.TarInfo(name)
                info.size, info.mtime, info.mode = len(data), 0, 0o644
                tar.addfile(info, io.BytesIO(data))
    atomic_write_bytes(out, buf.getvalue())
    return out


def _read_folder_items(path: Path) -> Iterator[tuple[str, bytes]]:
    for f in sorted(path.rglob("*")):
        if f.is_file():
            yield str(f.relative_to(path)).replace(os.sep, "/"), f.read_bytes()
