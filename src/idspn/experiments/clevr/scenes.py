"""CLEVR v1.0 as distributed: scene annotations as fixed-size object sets, and the image data set.

Layout on disk (Johnson et al., 2017)::

    CLEVR_v1.0/images/{split}/CLEVR_{split}_%06d.png     480x320 RGBA
    CLEVR_v1.0/scenes/CLEVR_{split}_scenes.json          {"info": ..., "scenes": [...]}

Each scene becomes a set of ``MAX_OBJECTS`` vectors of ``SET_DIM`` entries, laid out as DSPN and
iDSPN do (``LAYOUT``): 3d coordinates divided by 3 (so in [-1, 1]), one-hots of material, colour,
shape and size, and a presence flag; absent objects are all zeros. The metric in
:mod:`idspn.metrics` decodes exactly this layout.

Images are resized as a whole (no crop) to ``image_size x image_size`` like the paper, with PIL's
antialiased bilinear filter, and scaled to [0, 1].
"""

import json
import os
import struct
import tempfile
import zipfile
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset
from tqdm import tqdm

from idspn.metrics import CLEVR_LAYOUT, ObjectLayout

__all__ = [
    "ATTRIBUTES",
    "COLORS",
    "LAYOUT",
    "MATERIALS",
    "MAX_OBJECTS",
    "SET_DIM",
    "SHAPES",
    "SIZES",
    "CLEVRDataset",
    "encode_scene",
    "find_dataset_dir",
    "read_scenes",
]

# Attribute vocabularies in DSPN's order; index i of a vocabulary is position i of its one-hot.
MATERIALS: tuple[str, ...] = ("rubber", "metal")
COLORS: tuple[str, ...] = ("cyan", "blue", "yellow", "purple", "red", "green", "gray", "brown")
SHAPES: tuple[str, ...] = ("sphere", "cube", "cylinder")
SIZES: tuple[str, ...] = ("large", "small")
# Scene field name and vocabulary of every attribute group, in the order of LAYOUT.attributes.
ATTRIBUTES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("material", MATERIALS),
    ("color", COLORS),
    ("shape", SHAPES),
    ("size", SIZES),
)
MAX_OBJECTS = 10  # CLEVR scenes hold 3 to 10 objects
LAYOUT: ObjectLayout = CLEVR_LAYOUT  # coords (3) / 3, material, colour, shape, size, presence
SET_DIM = LAYOUT.dim  # 19

_CACHE_FORMAT = 1  # bump when the cache's content or layout changes


def encode_scene(scene: Mapping[str, Any]) -> Tensor:
    """Encodes one CLEVR scene as a zero-padded set of object vectors.

    Args:
        scene: A scene of a CLEVR scenes file; only ``objects`` and, per object, ``3d_coords``,
            ``material``, ``color``, ``shape`` and ``size`` are read (other fields are ignored).

    Returns:
        The target set ``# (MAX_OBJECTS, SET_DIM)``, float32, objects in the scene's order.

    Raises:
        ValueError: More than ``MAX_OBJECTS`` objects, a missing field, malformed coordinates or an
            attribute value outside its vocabulary; the message names the object index and field.
    """
    return torch.from_numpy(_encode_objects(scene))


def _encode_objects(scene: Mapping[str, Any]) -> np.ndarray:
    objects = scene.get("objects") if isinstance(scene, Mapping) else None
    if not isinstance(objects, list):
        raise ValueError(
            f"scene must be a mapping with an 'objects' list; got {type(scene).__name__}"
        )
    if len(objects) > MAX_OBJECTS:
        raise ValueError(
            f"scene has {len(objects)} objects; expected at most MAX_OBJECTS={MAX_OBJECTS}"
        )
    target = np.zeros((MAX_OBJECTS, SET_DIM), dtype=np.float32)  # (N, D)
    for i, obj in enumerate(objects):
        if not isinstance(obj, Mapping):
            raise ValueError(f"object {i}: expected a mapping of fields; got {type(obj).__name__}")
        coords = obj.get("3d_coords")
        if (
            not isinstance(coords, Sequence)
            or len(coords) != 3
            or not all(isinstance(c, int | float) for c in coords)
        ):
            raise ValueError(f"object {i}: field '3d_coords' must be 3 numbers; got {coords!r}")
        target[i, LAYOUT.coords] = np.asarray(coords, dtype=np.float64) / LAYOUT.coord_scale
        for (field, vocabulary), group in zip(ATTRIBUTES, LAYOUT.attributes, strict=True):
            if field not in obj:
                raise ValueError(f"object {i}: missing field {field!r}")
            value = obj[field]
            if value not in vocabulary:
                raise ValueError(
                    f"object {i}: unknown {field} {value!r}; expected one of {list(vocabulary)}"
                )
            target[i, group.start + vocabulary.index(value)] = 1.0
        target[i, LAYOUT.presence] = 1.0
    return target


def find_dataset_dir(root: str | Path) -> Path:
    """Returns the ``CLEVR_v1.0`` folder given it or the folder that contains it.

    Raises:
        FileNotFoundError: Neither ``root/CLEVR_v1.0`` nor ``root/images`` or ``root/scenes`` exist.
    """
    root = Path(root)
    if (root / "CLEVR_v1.0").is_dir():
        return root / "CLEVR_v1.0"
    if (root / "images").is_dir() or (root / "scenes").is_dir():
        return root
    raise FileNotFoundError(
        f"root {str(root)!r} must be the CLEVR_v1.0 folder (holding images/ and scenes/) or a "
        "folder that contains CLEVR_v1.0/; found neither"
    )


def read_scenes(path: str | Path) -> list[dict[str, Any]]:
    """Reads and checks the ``scenes`` list of a CLEVR scenes file.

    Raises:
        FileNotFoundError: The file does not exist.
        ValueError: The file is not valid JSON (e.g. truncated) or has no ``scenes`` list of scenes
            with an ``objects`` list.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"scenes file {str(path)!r} does not exist")
    try:
        with path.open("rb") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(
            f"scenes file {str(path)!r} is not valid JSON ({error}); expected a complete CLEVR "
            "scenes file (truncated download?)"
        ) from error
    scenes = data.get("scenes") if isinstance(data, dict) else None
    if not isinstance(scenes, list):
        raise ValueError(f"scenes file {str(path)!r} must hold an object with a 'scenes' list")
    for k, scene in enumerate(scenes):
        if not isinstance(scene, dict) or not isinstance(scene.get("objects"), list):
            raise ValueError(f"scenes file {str(path)!r}: scene {k} has no 'objects' list")
    return scenes


def _image_name(scene: Mapping[str, Any], split: str, k: int) -> str:
    name = scene.get("image_filename")
    if isinstance(name, str):
        return name
    index = scene.get("image_index", k)
    return f"CLEVR_{split}_{int(index):06d}.png"


def _load_image(path: Path, image_size: int) -> np.ndarray:
    """Reads a CLEVR image as RGB and resizes the whole of it: ``# (3, S, S)`` uint8."""
    try:
        with Image.open(path) as image:
            image = image.convert("RGB").resize(
                (image_size, image_size), Image.Resampling.BILINEAR
            )
    except (OSError, SyntaxError, ValueError) as error:
        raise ValueError(
            f"cannot read image {str(path)!r} ({error}); expected a readable PNG image"
        ) from error
    return np.ascontiguousarray(np.asarray(image).transpose(2, 0, 1))  # (3, S, S)


def _memmap_npz_member(path: Path, name: str) -> np.ndarray:
    """Memory-maps an uncompressed array of an ``.npz`` file, read-only."""
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(f"{name}.npy")
    if info.compress_type != zipfile.ZIP_STORED:
        raise ValueError(f"{name!r} in {str(path)!r} is compressed; expected a stored member")
    with path.open("rb") as f:
        f.seek(info.header_offset)
        local_header = f.read(30)
        if local_header[:4] != b"PK\x03\x04":
            raise ValueError(f"{str(path)!r} has a corrupt zip header for {name!r}")
        name_length, extra_length = struct.unpack("<HH", local_header[26:30])
        f.seek(info.header_offset + 30 + name_length + extra_length)
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(f)
        else:
            shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(f)
        offset = f.tell()
    return np.memmap(
        path, dtype=dtype, mode="r", shape=shape, offset=offset, order="F" if fortran_order else "C"
    )


class CLEVRDataset(Dataset[tuple[Tensor, Tensor]]):
    """CLEVR images with their scenes as target sets.

    Items are ``(image, target)``: ``image # (3, S, S)`` float32 in [0, 1], the whole 480x320
    image resized to ``S = image_size``; ``target # (MAX_OBJECTS, SET_DIM)`` from
    :func:`encode_scene`.

    With ``cache`` set, every image is decoded and resized once into an uncompressed ``.npz`` file
    (uint8 images, float targets, and the split, image size, count and format it was built for),
    which later instances memory-map when it matches; otherwise it is rebuilt. The file is written
    to a temporary name and moved into place, so an interrupted build never leaves a bad cache.

    Args:
        root: The ``CLEVR_v1.0`` folder or the folder containing it.
        split: ``"train"`` or ``"val"`` (``"test"`` has no scenes), or any split with the layout.
        image_size: Side ``S`` of the square images returned.
        cache: Path of the ``.npz`` cache file, or ``None`` to decode PNGs on every access.
        max_samples: Use only the first this many scenes of the split.

    Raises:
        FileNotFoundError: Missing ``root``, image folder, scenes file or an image of a scene.
        ValueError: Bad arguments, invalid scenes file, unknown attribute values, an image count
            that differs from the scene count, or (while caching) an unreadable image.
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        image_size: int = 128,
        cache: str | Path | None = None,
        max_samples: int | None = None,
    ) -> None:
        if not isinstance(split, str) or not split:
            raise ValueError(f"split must be a non-empty string such as 'train'; got {split!r}")
        if not isinstance(image_size, int) or image_size < 1:
            raise ValueError(f"image_size must be a positive integer; got {image_size!r}")
        if max_samples is not None and (not isinstance(max_samples, int) or max_samples < 0):
            raise ValueError(f"max_samples must be None or an integer >= 0; got {max_samples!r}")
        self.dataset_dir = find_dataset_dir(root)
        self.split = split
        self.image_size = image_size
        image_dir = self.dataset_dir / "images" / split
        scenes_path = self.dataset_dir / "scenes" / f"CLEVR_{split}_scenes.json"
        if not image_dir.is_dir():
            raise FileNotFoundError(
                f"image folder {str(image_dir)!r} for split {split!r} does not exist; expected "
                f"images/{split}/CLEVR_{split}_%06d.png under {str(self.dataset_dir)!r}"
            )
        if not scenes_path.is_file():
            raise FileNotFoundError(
                f"scenes file {str(scenes_path)!r} for split {split!r} does not exist (CLEVR "
                "distributes scenes for train and val only)"
            )
        scenes = read_scenes(scenes_path)
        on_disk = {p.name for p in os.scandir(image_dir) if p.name.endswith(".png")}
        if len(on_disk) != len(scenes):
            raise ValueError(
                f"image folder {str(image_dir)!r} holds {len(on_disk)} PNG images but "
                f"{str(scenes_path)!r} describes {len(scenes)} scenes; expected one image per scene"
            )
        if max_samples is not None:
            scenes = scenes[:max_samples]
        self.image_paths: list[Path] = []
        targets = np.zeros((len(scenes), MAX_OBJECTS, SET_DIM), dtype=np.float32)  # (S, N, D)
        for k, scene in enumerate(scenes):
            name = _image_name(scene, split, k)
            if name not in on_disk:
                raise FileNotFoundError(
                    f"image {str(image_dir / name)!r} of scene {k} in {str(scenes_path)!r} "
                    "does not exist"
                )
            self.image_paths.append(image_dir / name)
            try:
                targets[k] = _encode_objects(scene)
            except ValueError as error:
                raise ValueError(f"{str(scenes_path)!r}, scene {k} ({name}): {error}") from error
        self.targets = torch.from_numpy(targets)  # (S, N, D)
        self.cache = None if cache is None else Path(cache)
        self._images: np.ndarray | None = None  # (S, 3, size, size) uint8, opened lazily
        if self.cache is not None and not self._cache_matches():
            self._build_cache()

    def __len__(self) -> int:
        return len(self.image_paths)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        if self.cache is not None:
            if self._images is None:
                self._images = _memmap_npz_member(self.cache, "images")
            image = np.array(self._images[index])  # (3, S, S)
        else:
            image = _load_image(self.image_paths[index], self.image_size)  # (3, S, S)
        return torch.from_numpy(image).float().div_(255.0), self.targets[index]

    def __getstate__(self) -> dict[str, Any]:
        # A memory map must not travel to DataLoader workers as a copied array; reopen it there.
        state = self.__dict__.copy()
        state["_images"] = None
        return state

    def _cache_matches(self) -> bool:
        assert self.cache is not None
        if not self.cache.is_file():
            return False
        try:
            with np.load(self.cache, allow_pickle=False) as cached:
                matches = (
                    int(cached["format"]) == _CACHE_FORMAT
                    and str(cached["split"]) == self.split
                    and int(cached["image_size"]) == self.image_size
                    and int(cached["count"]) == len(self)
                    and np.array_equal(cached["targets"], self.targets.numpy())
                )
            images = _memmap_npz_member(self.cache, "images")
        except (OSError, ValueError, KeyError, zipfile.BadZipFile):
            return False
        return matches and images.shape == (len(self), 3, self.image_size, self.image_size)

    def _build_cache(self) -> None:
        assert self.cache is not None
        self.cache.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.cache.parent, prefix=".clevr-cache-") as tmp:
            images_path = Path(tmp) / "images.npy"
            images = np.lib.format.open_memmap(
                images_path,
                mode="w+",
                dtype=np.uint8,
                shape=(len(self), 3, self.image_size, self.image_size),
            )  # (S, 3, size, size), filled without holding the split in memory
            # PIL releases the GIL while decoding and resizing, so threads give real parallelism.
            with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
                loaded = pool.map(lambda p: _load_image(p, self.image_size), self.image_paths)
                progress = tqdm(
                    loaded,
                    total=len(self),
                    desc=f"caching CLEVR {self.split} at {self.image_size}px",
                    unit="img",
                )
                for k, image in enumerate(progress):
                    images[k] = image
            images.flush()
            del images
            partial = Path(tmp) / "cache.npz"
            with zipfile.ZipFile(partial, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
                archive.write(images_path, "images.npy")
                small = {
                    "targets": self.targets.numpy(),
                    "split": np.array(self.split),
                    "image_size": np.array(self.image_size),
                    "count": np.array(len(self)),
                    "format": np.array(_CACHE_FORMAT),
                }
                for name, array in small.items():
                    with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                        np.lib.format.write_array(member, array, allow_pickle=False)
            os.replace(partial, self.cache)
        self._images = None
