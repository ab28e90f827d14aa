"""The data of a CLEVR run: real CLEVR v1.0 or a generated CLEVR-format data set, as cached tensors.

Layout on disk (Johnson et al., 2017)::

    CLEVR_v1.0/images/{split}/CLEVR_{split}_%06d.png     480x320 RGBA
    CLEVR_v1.0/scenes/CLEVR_{split}_scenes.json          {"info": ..., "scenes": [...]}

``build_data`` goes through it once: find the ``CLEVR_v1.0`` folder (``data.root``, or a generated
data set made by :mod:`idspn_experiments.clevr_render` into ``WORK/synth-seed<S>-train<N>-val<M>/``
the first time a config asks for it), then read every split's scenes into target sets
(``layout.encode_objects``) and its images into a cache, and hand the engine its splits:
``train`` = CLEVR train; ``test`` = CLEVR val (the reported numbers; the paper's test set);
``val`` = the first ``monitor_size`` CLEVR val images, scored during training for monitoring only
(so selecting a model on them is refused: ``train.select_metric`` must be none).

Images are resized as a whole (no crop) to ``image_size x image_size`` like the paper, with PIL's
antialiased bilinear filter, and scaled to [0, 1]. With ``data.cache`` every image is decoded and
resized once into ``WORK/cache/<name>.npy`` (memory-mapped afterwards) beside a ``<name>.json``
that records what it was built from: split, size, count, the targets and the size and modification
time of the scenes file and of every PNG. When the source changed (an image replaced or truncated,
scenes edited), the cache no longer matches and is rebuilt. ``WORK`` is ``data.work_dir``, by
default ``$IDSPN_DATA_DIR/clevr`` or ``~/.cache/idspn/clevr``; generation and caching hold an
exclusive lock, so concurrent processes (torchrun ranks, sweep workers) wait for the first one
instead of repeating its work.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset, Subset
from tqdm import tqdm

from idspn_experiments.clevr.config import ClevrConfig
from idspn_experiments.clevr.layout import MAX_OBJECTS, SET_DIM, encode_objects
from idspn_experiments.engine.io import atomic_write_json, exclusive_lock
from idspn_experiments.engine.spec import DataSplits

__all__ = [
    "CLEVRDataset",
    "SYNTH_COMMAND_HELP",
    "add_synth_arguments",
    "build_data",
    "clevr_split",
    "dataset_dir",
    "find_dataset_dir",
    "read_scenes",
    "run_synth",
    "synth_dir",
    "work_dir",
]

_CACHE_FORMAT = 2  # bump when the cache's content or layout changes
_MARKER = "generated.json"


# --- CLEVR v1.0 on disk --------------------------------------------------------------------------


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
            image = image.convert("RGB").resize((image_size, image_size), Image.Resampling.BILINEAR)
    except (OSError, SyntaxError, ValueError) as error:
        raise ValueError(f"cannot read image {str(path)!r} ({error}); expected a readable PNG image") from error
    return np.ascontiguousarray(np.asarray(image).transpose(2, 0, 1))  # (3, S, S)


def _fingerprint(paths: list[Path]) -> str:
    """Size and modification time of every file, hashed: changes when any file is replaced or cut."""
    digest = hashlib.sha256()
    for path in paths:
        stat = path.stat()
        digest.update(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    return digest.hexdigest()


class CLEVRDataset(Dataset[tuple[Tensor, Tensor]]):
    """CLEVR images with their scenes as target sets.

    Items are ``(image, target)``: ``image # (3, S, S)`` float32 in [0, 1], the whole 480x320
    image resized to ``S = image_size``; ``target # (MAX_OBJECTS, SET_DIM)`` from
    :func:`~idspn_experiments.clevr.layout.encode_scene`.

    With ``cache`` set (a path without suffix), the images are decoded and resized once into
    ``cache.npy`` (uint8, memory-mapped afterwards) and what they were built from into
    ``cache.json``; both are written to temporary names and moved into place, so an interrupted
    build never leaves a bad cache, and a cache whose source changed since is rebuilt.

    Args:
        root: The ``CLEVR_v1.0`` folder or the folder containing it.
        split: ``"train"`` or ``"val"`` (``"test"`` has no scenes), or any split with the layout.
        image_size: Side ``S`` of the square images returned.
        cache: Path (without suffix) of the cache, or ``None`` to decode PNGs on every access.
        max_samples: Use only the first this many scenes of the split.
        progress: Show a progress bar while building the cache.

    Raises:
        FileNotFoundError: Missing ``root``, image folder, scenes file or an image of a scene.
        ValueError: Bad arguments, invalid scenes file, unknown attribute values or non-finite
            coordinates (naming file, scene and object), an image count that differs from the scene
            count, or (while caching) an unreadable image.
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        image_size: int = 128,
        cache: str | Path | None = None,
        max_samples: int | None = None,
        progress: bool = True,
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
                    f"image {str(image_dir / name)!r} of scene {k} in {str(scenes_path)!r} does not exist"
                )
            self.image_paths.append(image_dir / name)
            try:
                targets[k] = encode_objects(scene)
            except ValueError as error:
                raise ValueError(f"{str(scenes_path)!r}, scene {k} ({name}): {error}") from error
        self.targets = torch.from_numpy(targets)  # (S, N, D)
        self.cache = None if cache is None else Path(cache)
        self._images: np.ndarray | None = None  # (S, 3, size, size) uint8, opened lazily
        if self.cache is not None:
            record = self._record(scenes_path)
            if not self._cache_matches(record):
                self._build_cache(record, progress)

    def __len__(self) -> int:
        return len(self.image_paths)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        if self.cache is not None:
            if self._images is None:
                self._images = np.load(self.cache.with_suffix(".npy"), mmap_mode="r")
            image = np.array(self._images[index])  # (3, S, S)
        else:
            image = _load_image(self.image_paths[index], self.image_size)  # (3, S, S)
        return torch.from_numpy(image).float().div_(255.0), self.targets[index]

    def __getstate__(self) -> dict[str, Any]:
        # A memory map must not travel to DataLoader workers as a copied array; reopen it there.
        state = self.__dict__.copy()
        state["_images"] = None
        return state

    def _record(self, scenes_path: Path) -> dict[str, Any]:
        """What the cache is built from; a cache whose record differs is rebuilt."""
        return {
            "format": _CACHE_FORMAT,
            "split": self.split,
            "image_size": self.image_size,
            "count": len(self),
            "targets": hashlib.sha256(self.targets.numpy().tobytes()).hexdigest(),
            "source": _fingerprint([scenes_path, *self.image_paths]),
        }

    def _cache_matches(self, record: dict[str, Any]) -> bool:
        assert self.cache is not None
        meta, images = self.cache.with_suffix(".json"), self.cache.with_suffix(".npy")
        try:
            if json.loads(meta.read_text()) != record:
                return False
            array = np.load(images, mmap_mode="r")
        except (OSError, ValueError):
            return False
        return array.shape == (len(self), 3, self.image_size, self.image_size) and array.dtype == np.uint8

    def _build_cache(self, record: dict[str, Any], progress: bool) -> None:
        assert self.cache is not None
        self.cache.parent.mkdir(parents=True, exist_ok=True)
        final = self.cache.with_suffix(".npy")
        partial = final.with_name(f".{final.name}.partial.npy")
        self.cache.with_suffix(".json").unlink(missing_ok=True)  # a cache without its record never matches
        images = np.lib.format.open_memmap(
            partial, mode="w+", dtype=np.uint8, shape=(len(self), 3, self.image_size, self.image_size)
        )  # (S, 3, size, size), filled without holding the split in memory
        try:
            # PIL releases the GIL while decoding and resizing, so threads give real parallelism.
            with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
                loaded = pool.map(lambda p: _load_image(p, self.image_size), self.image_paths)
                bar = tqdm(
                    loaded,
                    total=len(self),
                    desc=f"caching CLEVR {self.split} at {self.image_size}px",
                    unit="img",
                    disable=not progress,
                )
                for k, image in enumerate(bar):
                    images[k] = image
            images.flush()
            del images
            os.replace(partial, final)
        finally:
            partial.unlink(missing_ok=True)
        atomic_write_json(self.cache.with_suffix(".json"), record)
        self._images = None


# --- where a config's data live ------------------------------------------------------------------


def work_dir(cfg: ClevrConfig) -> Path:
    """Folder for generated data and caches.

    ``data.work_dir`` if set, else ``$IDSPN_DATA_DIR/clevr``, else ``~/.cache/idspn/clevr``.
    """
    if cfg.data.work_dir is not None:
        return Path(cfg.data.work_dir)
    base = os.environ.get("IDSPN_DATA_DIR")
    return (Path(base) if base else Path.home() / ".cache" / "idspn") / "clevr"


def synth_dir(cfg: ClevrConfig) -> Path:
    """Folder of the generated data set that ``cfg`` uses (a function of seed and sizes only)."""
    d = cfg.data
    return work_dir(cfg) / f"synth-seed{d.synth_seed}-train{d.train_size}-val{d.val_size}"


def _generate_once(cfg: ClevrConfig, progress: bool) -> Path:
    """Generate the data set of ``cfg`` unless a complete one is there; returns its folder."""
    from idspn_experiments.clevr_render.generator import RENDERER_VERSION, generate

    d = cfg.data
    out = synth_dir(cfg)
    marker = out / _MARKER
    assert d.train_size is not None and d.val_size is not None  # _check: generating needs both sizes
    splits = {"train": d.train_size, "val": d.val_size}
    expected = {"seed": d.synth_seed, "renderer": RENDERER_VERSION, "splits": splits}
    with exclusive_lock(out.with_name(out.name + ".lock")):
        # Markers from before the renderer was recorded were all written by renderer 1.
        if marker.is_file() and {"renderer": 1, **json.loads(marker.read_text())} == expected:
            return out
        generate(out, splits, seed=d.synth_seed, workers=d.synth_workers, progress=progress)
        atomic_write_json(marker, expected)  # a new file, even where the folder was hard-linked from another
    return out


def _check(cfg: ClevrConfig) -> None:
    d = cfg.data
    for name in ("train_size", "val_size"):
        if getattr(d, name) is None and d.root is None:
            raise ValueError(f"config key 'data.{name}' must be set when generating data (data.root is None)")
    if d.monitor_size and cfg.train.select_metric is not None:
        raise ValueError(
            "config key 'train.select_metric' must be none for CLEVR: the monitored images (data.monitor_size) "
            f"belong to the evaluation set, so selecting on them would select on the test set; got "
            f"{cfg.train.select_metric!r}"
        )


def dataset_dir(cfg: ClevrConfig, progress: bool = True) -> Path:
    """The ``CLEVR_v1.0`` folder of ``cfg``'s data: ``data.root`` or the generated data set (made if missing)."""
    if cfg.data.root is not None:
        return find_dataset_dir(cfg.data.root)
    return find_dataset_dir(_generate_once(cfg, progress))


def _cache_path(cfg: ClevrConfig, root: Path, split: str) -> Path | None:
    if not cfg.data.cache:
        return None
    source = hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:10]
    size = cfg.data.train_size if split == "train" else cfg.data.val_size
    name = f"{source}-{split}-{size if size is not None else 'all'}-{cfg.data.image_size}px"
    return work_dir(cfg) / "cache" / name


def clevr_split(cfg: ClevrConfig, root: Path, split: str, progress: bool = True) -> CLEVRDataset:
    """One split (``"train"`` or ``"val"``) of the data in ``root`` as a ``CLEVRDataset`` (cached on first use)."""
    size = cfg.data.train_size if split == "train" else cfg.data.val_size
    cache = _cache_path(cfg, root, split)
    if cache is None:
        return CLEVRDataset(root, split, cfg.data.image_size, max_samples=size)
    with exclusive_lock(cache.with_name(cache.name + ".lock")):
        return CLEVRDataset(root, split, cfg.data.image_size, cache=cache, max_samples=size, progress=progress)


def build_data(cfg: ClevrConfig, progress: bool = True) -> DataSplits:
    """Train on CLEVR train, report on CLEVR val, monitor on its first ``monitor_size`` images."""
    _check(cfg)
    root = dataset_dir(cfg, progress)
    train, val = clevr_split(cfg, root, "train", progress), clevr_split(cfg, root, "val", progress)
    monitor = min(cfg.data.monitor_size, len(val))
    return DataSplits(train=train, val=Subset(val, range(monitor)) if monitor else None, test=val)


# --- `idspn data clevr-synth` --------------------------------------------------------------------


SYNTH_COMMAND_HELP = "generate a CLEVR-format data set (CLEVR's scene rules, NumPy renderer)"


def add_synth_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``idspn data clevr-synth``."""
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--out", type=str, help="folder to write CLEVR_v1.0/ into")
    where.add_argument(
        "--preset",
        help="instead: generate and cache the data of this CLEVR preset (e.g. clevr-small) "
        "where its runs look for them, so that no run's wall time includes the generation",
    )
    parser.add_argument("--train", type=int, default=1000, help="training scenes (default 1000; with --out)")
    parser.add_argument("--val", type=int, default=200, help="validation scenes (default 200; with --out)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data set (default 0; with --out)")
    parser.add_argument("--workers", type=int, default=1, help="rendering processes (default 1)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run_synth(args: argparse.Namespace) -> int:
    """``idspn data clevr-synth``: write ``args.out/CLEVR_v1.0``, or prepare a preset's data."""
    from idspn_experiments.clevr_render.generator import generate
    from idspn_experiments.engine.config import load_config
    from idspn_experiments.engine.io import writable_folder

    if args.workers < 1:
        raise ValueError(f"--workers must be >= 1, got {args.workers}")
    if args.preset is not None:
        cfg = load_config(ClevrConfig, args.preset, [f"data.synth_workers={args.workers}"])
        if cfg.data.root is not None:
            raise ValueError(f"preset {args.preset!r} reads real CLEVR from {cfg.data.root!r}: nothing to generate")
        build_data(cfg, progress=not args.no_progress)
        print(f"data of {args.preset} ready in {synth_dir(cfg)} (images cached in {work_dir(cfg) / 'cache'})")
        return 0
    for name in ("train", "val", "seed"):
        if getattr(args, name) < 0:
            raise ValueError(f"--{name} must be >= 0, got {getattr(args, name)}")
    out = writable_folder(args.out, "--out")
    generate(
        out, {"train": args.train, "val": args.val}, seed=args.seed, workers=args.workers, progress=not args.no_progress
    )
    print(f"wrote {args.train} train and {args.val} val scenes to {out / 'CLEVR_v1.0'}")
    return 0
