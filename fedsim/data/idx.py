"""MNIST and Fashion-MNIST from local IDX files (the format LeCun's and Zalando's sites ship).

An IDX file is a 4-byte magic number ``00 00 TT DD`` (TT = element type, DD = number of
dimensions), DD big-endian uint32 sizes, then the elements in C order, big-endian. Files may be
gzip-compressed (``.gz``), as they are distributed. Nothing is downloaded: the scenario names a
local directory (``root``) that already holds the four files.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from fedsim.data._checks import check_int
from fedsim.data.base import ArrayDataset, DatasetBundle
from fedsim.data.errors import DataError

# Element type code -> big-endian numpy dtype (the IDX specification's table).
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_IMAGE_SIDE = 28
_NUM_CLASSES = 10
_MAX_PIXEL = 255.0

# File stems of the four files; the distributed names use "-idx3-ubyte", some mirrors a dot.
_STEMS = {
    ("train", "images"): ("train-images-idx3-ubyte", "train-images.idx3-ubyte"),
    ("train", "labels"): ("train-labels-idx1-ubyte", "train-labels.idx1-ubyte"),
    ("test", "images"): ("t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"),
    ("test", "labels"): ("t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"),
}

# torchvision's folder name for each data set (files under <root>/<folder>/raw).
_SUBDIRS = {"mnist": ("MNIST",), "fashion_mnist": ("FashionMNIST",)}

FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


def _read_bytes(path: Path) -> bytes:
    """Read a file, gunzipping it when it is gzip-compressed (judged by content, not name)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read IDX file {path}: {exc.strerror or exc}") from exc
    if raw[:2] != b"\x1f\x8b":
        if path.suffix == ".gz":
            raise DataError(f"{path} is named .gz but is not gzip-compressed")
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        # A download cut short ends in EOFError ("Compressed file ended before ...").
        raise DataError(f"{path} is a damaged or truncated gzip file: {exc}") from exc


def parse_idx(data: bytes, *, source: str = "<bytes>") -> np.ndarray:
    """Decode the bytes of one (uncompressed) IDX file.

    Args:
        data: the whole file content.
        source: name used in error messages (the file path).

    Returns:
        The array with the dimensions from the header, in native byte order.

    Raises:
        DataError: if the magic number is wrong (not ``00 00``, unknown type code, zero
            dimensions), or the file is shorter or longer than its header says.
    """
    if len(data) < 4:
        raise DataError(f"{source}: {len(data)} bytes, too short for an IDX header (4 bytes)")
    zero, type_code, ndim = struct.unpack(">HBB", data[:4])
    magic = int.from_bytes(data[:4], "big")
    if zero != 0 or type_code not in IDX_DTYPES or ndim == 0:
        allowed = ", ".join(f"0x{c:02X}" for c in IDX_DTYPES)
        raise DataError(
            f"{source}: bad IDX magic number 0x{magic:08X}; expected 0x0000TTDD with type code TT "
            f"in {allowed} and DD >= 1 dimensions (e.g. 0x00000803 for images, 0x00000801 for "
            f"labels)"
        )
    header_end = 4 + 4 * ndim
    if len(data) < header_end:
        raise DataError(
            f"{source}: truncated IDX header: {ndim} dimensions need {header_end} bytes, the file "
            f"has {len(data)}"
        )
    shape = struct.unpack(f">{ndim}I", data[4:header_end])
    dtype = IDX_DTYPES[type_code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    body = len(data) - header_end
    if body != expected:
        kind = "truncated" if body < expected else "has trailing bytes"
        raise DataError(
            f"{source}: IDX file {kind}: header says shape {tuple(shape)} ({expected} bytes of "
            f"data), found {body} bytes"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header_end).reshape(shape)
    return array.astype(dtype.newbyteorder("="), copy=False)


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file from disk, plain or gzip-compressed.

    Args:
        path: the file.

    Returns:
        The decoded array (see `parse_idx`).

    Raises:
        DataError: if the file cannot be read or is not a valid IDX file; the message names it.
    """
    path = Path(path)
    return parse_idx(_read_bytes(path), source=str(path))


def _find(search: tuple[Path, ...], split: str, kind: str) -> Path:
    """Locate one of the four files in the search directories, plain or .gz."""
    tried: list[str] = []
    for directory in search:
        for stem in _STEMS[(split, kind)]:
            for name in (stem, f"{stem}.gz"):
                candidate = directory / name
                if candidate.is_file():
                    return candidate
        tried.append(str(directory / f"{_STEMS[(split, kind)][0]}[.gz]"))
    raise DataError(f"missing IDX file for the {split} {kind}; looked for: {', '.join(tried)}")


def _load_split(
    search: tuple[Path, ...], split: str
) -> tuple[np.ndarray, np.ndarray, dict[str, str]]:
    """Read and cross-check one split's images and labels; return (x float32, y int64, files)."""
    images_path = _find(search, split, "images")
    labels_path = _find(search, split, "labels")
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    side = _IMAGE_SIDE
    if images.ndim != 3 or images.shape[1:] != (side, side) or images.dtype != np.uint8:
        raise DataError(
            f"{images_path}: expected unsigned-byte images of shape (N, {side}, {side}), got "
            f"{images.dtype} {images.shape}"
        )
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise DataError(
            f"{labels_path}: expected a 1-D unsigned-byte label file, got {labels.dtype} "
            f"{labels.shape}"
        )
    if labels.shape[0] != images.shape[0]:
        raise DataError(
            f"{images_path} has {images.shape[0]} images but {labels_path} has "
            f"{labels.shape[0]} labels"
        )
    if labels.size and int(labels.max()) >= _NUM_CLASSES:
        raise DataError(
            f"{labels_path}: label {int(labels.max())} out of range; allowed 0..{_NUM_CLASSES - 1}"
        )
    x = images.astype(np.float32)[:, None, :, :]
    x /= _MAX_PIXEL  # in place: one float32 copy of the images, not two
    files = {f"{split}_images": str(images_path), f"{split}_labels": str(labels_path)}
    return x, labels.astype(np.int64), files


def locate_idx_files(name: str, root: str | None) -> tuple[Path, ...]:
    """The directories to search for `name`'s four IDX files; DataError if one is missing.

    Cheap (no file is read): scenario validation calls it before anything starts.
    """
    if root is None:
        raise DataError(
            f"{name} is read from local IDX files; give root = a directory holding "
            f"train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], "
            f"t10k-images-idx3-ubyte[.gz] and t10k-labels-idx1-ubyte[.gz]"
        )
    base = Path(root).expanduser()
    if not base.is_dir():
        raise DataError(f"{name}: root {str(base)!r} is not a directory")
    # torchvision keeps the same files under <root>/<Name>/raw; accept that layout as well.
    search = (base, base / "raw", *(base / d / "raw" for d in _SUBDIRS[name]))
    for split, kind in _STEMS:
        _find(search, split, kind)
    return search


def _load_idx_dataset(
    name: str, root: str | None, seed: int, classes: tuple[str, ...]
) -> DatasetBundle:
    check_int("seed", seed, minimum=0)  # unused (the format has its own split); still validated
    search = locate_idx_files(name, root)
    x_train, y_train, files = _load_split(search, "train")
    x_test, y_test, test_files = _load_split(search, "test")
    train = ArrayDataset(x_train, y_train)
    test = ArrayDataset(x_test, y_test)
    info = {
        "train_samples": len(train),
        "test_samples": len(test),
        "source": "idx",
        "files": {**files, **test_files},
        "classes": list(classes),
    }
    return DatasetBundle(
        name=name,
        train=train,
        test=test,
        num_classes=_NUM_CLASSES,
        input_shape=(1, _IMAGE_SIDE, _IMAGE_SIDE),
        info=info,
    )


def load_mnist(*, seed: int, root: str | None = None) -> DatasetBundle:
    """Load MNIST (60,000 train / 10,000 test handwritten digits) from local IDX files.

    Args:
        seed: accepted for the registry's uniform call; MNIST has a fixed train/test split.
        root: directory holding ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
            ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte``, each plain or ``.gz``
            (also found under ``root/raw`` or torchvision's ``root/MNIST/raw``).

    Returns:
        A `DatasetBundle`; x float32 (N, 1, 28, 28) in [0, 1], ten classes, no groups.

    Raises:
        DataError: if `root` is missing, a file is missing (the message lists the paths
            tried), a header is bad, a file is truncated, or images and labels disagree.
    """
    return _load_idx_dataset("mnist", root, seed, tuple(str(d) for d in range(10)))


def load_fashion_mnist(*, seed: int, root: str | None = None) -> DatasetBundle:
    """Load Fashion-MNIST (Zalando's 28x28 clothing images) from local IDX files.

    Same file names and format as MNIST (`load_mnist`); torchvision's ``root/FashionMNIST/raw``
    layout is accepted too.

    Args:
        seed: accepted for the registry's uniform call; the format has a fixed split.
        root: directory holding the four IDX files, plain or ``.gz``.

    Returns:
        A `DatasetBundle`; x float32 (N, 1, 28, 28) in [0, 1], ten classes (names in
        ``info["classes"]``), no groups.

    Raises:
        DataError: as `load_mnist`.
    """
    return _load_idx_dataset("fashion_mnist", root, seed, FASHION_MNIST_CLASSES)
