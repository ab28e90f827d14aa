"""Tests for idspn_experiments.clevr_render.generator: CLEVR's scene rules, the files, and the renderer."""

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from idspn_experiments.clevr.data import CLEVRDataset
from idspn_experiments.clevr.layout import LAYOUT
from idspn_experiments.clevr_render import generator
from idspn_experiments.clevr_render.generator import (
    IMAGE_HEIGHT,
    IMAGE_WIDTH,
    MARGIN,
    MIN_DISTANCE,
    MIN_PIXELS,
    SIZE_SCALE,
    Camera,
    generate,
    render_scene,
    sample_scene,
)

V1_SCENE_KEYS = {"split", "image_index", "image_filename", "objects", "directions", "relationships"}
V1_OBJECT_KEYS = {"shape", "size", "material", "3d_coords", "rotation", "pixel_coords", "color"}


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("generator")
    generate(out, {"val": 4}, seed=0, progress=False)
    return out


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_generate_is_deterministic_and_independent_of_workers(generated: Path, tmp_path: Path) -> None:
    generate(tmp_path, {"val": 4}, seed=0, workers=2, progress=False)
    first, second = files(generated), files(tmp_path)
    assert sorted(first) == [
        ".generate.lock",  # empty, beside the data folder; the lock of concurrent generators
        "CLEVR_v1.0/images/val/.generator.json",
        "CLEVR_v1.0/images/val/CLEVR_val_000000.png",
        "CLEVR_v1.0/images/val/CLEVR_val_000001.png",
        "CLEVR_v1.0/images/val/CLEVR_val_000002.png",
        "CLEVR_v1.0/images/val/CLEVR_val_000003.png",
        "CLEVR_v1.0/scenes/CLEVR_val_scenes.json",
    ]
    assert first == second
    generate(tmp_path / "other", {"val": 1}, seed=1, progress=False)
    assert (tmp_path / "other/CLEVR_v1.0/images/val/CLEVR_val_000000.png").read_bytes() != first[
        "CLEVR_v1.0/images/val/CLEVR_val_000000.png"
    ]


def test_generate_resumes_with_the_same_seed_and_starts_over_with_another(
    generated: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rendered: list[int] = []
    render = generator.render_scene

    def counting_render(scene, *args, **kwargs):  # noqa: ANN001, ANN202
        rendered.append(scene["image_index"])
        return render(scene, *args, **kwargs)

    monkeypatch.setattr(generator, "render_scene", counting_render)
    images = tmp_path / "CLEVR_v1.0/images/val"
    generate(tmp_path, {"val": 2}, seed=0, progress=False)  # an interrupted run's first images
    (images / "CLEVR_val_000001.png").unlink()
    (images / ".CLEVR_val_000001.png.x1y2.tmp").write_bytes(b"half a PNG")  # its write in progress
    rendered.clear()
    generate(tmp_path, {"val": 4}, seed=0, progress=False)
    assert rendered == [1, 2, 3]
    assert files(tmp_path) == files(generated)
    assert not list(images.glob("*.tmp"))

    rendered.clear()
    generate(tmp_path, {"val": 1}, seed=1, progress=False)
    assert rendered == [0]
    assert sorted(p.name for p in images.glob("*.png")) == ["CLEVR_val_000000.png"]
    rendered.clear()
    generate(tmp_path, {"val": 2}, seed=0, progress=False)
    assert rendered == [0, 1]


def test_generate_never_pairs_old_scenes_with_new_images_and_keeps_unrecorded_images(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scenes = tmp_path / "CLEVR_v1.0/scenes/CLEVR_val_scenes.json"
    generate(tmp_path, {"val": 2}, seed=0, progress=False)
    assert scenes.is_file()
    render, calls = generator.render_scene, []

    def interrupted_render(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        calls.append(1)
        if len(calls) > 1:
            raise KeyboardInterrupt
        return render(*args, **kwargs)

    monkeypatch.setattr(generator, "render_scene", interrupted_render)
    with pytest.raises(KeyboardInterrupt):
        generate(tmp_path, {"val": 2}, seed=1, progress=False)
    assert not scenes.exists()  # seed 0's scenes are gone with seed 0's images
    monkeypatch.setattr(generator, "render_scene", render)

    foreign = tmp_path / "real/CLEVR_v1.0/images/val"
    foreign.mkdir(parents=True)
    (foreign / "CLEVR_val_000000.png").write_bytes(b"real CLEVR")
    with pytest.raises(ValueError, match="did not record making"):
        generate(tmp_path / "real", {"val": 1}, seed=0, progress=False)
    assert (foreign / "CLEVR_val_000000.png").read_bytes() == b"real CLEVR"


def test_files_have_the_v1_layout_and_the_loader_reads_them(generated: Path) -> None:
    data = json.loads((generated / "CLEVR_v1.0/scenes/CLEVR_val_scenes.json").read_text())
    assert set(data) == {"info", "scenes"}
    assert set(data["info"]) == {"split", "version", "date", "license"}
    for k, scene in enumerate(data["scenes"]):
        assert set(scene) == V1_SCENE_KEYS
        assert (scene["image_index"], scene["image_filename"]) == (k, f"CLEVR_val_{k:06d}.png")
        assert set(scene["relationships"]) == {"behind", "front", "left", "right"}
        assert all(set(obj) == V1_OBJECT_KEYS for obj in scene["objects"])
    dataset = CLEVRDataset(generated, "val", image_size=32)
    assert len(dataset) == 4
    image, target = dataset[3]
    assert image.shape == (3, 32, 32)
    objects = data["scenes"][3]["objects"]
    assert int(target[:, LAYOUT.presence].sum()) == len(objects)
    coords = torch.tensor([o["3d_coords"] for o in objects], dtype=torch.float32) / 3
    torch.testing.assert_close(target[: len(objects), LAYOUT.coords], coords)


@pytest.fixture(scope="module")
def sampled() -> list[tuple[dict, Camera, generator.Lights]]:
    return [sample_scene(np.random.default_rng(seed), "val", seed) for seed in range(24)]


def test_scene_rules_hold(sampled: list) -> None:
    counts = set()
    for scene, _, _ in sampled:
        objects = scene["objects"]
        counts.add(len(objects))
        assert 3 <= len(objects) <= 10
        left = np.array(scene["directions"]["left"][:2])
        front = np.array(scene["directions"]["front"][:2])
        for obj in objects:
            x, y, z = obj["3d_coords"]
            assert -3 <= x <= 3 and -3 <= y <= 3
            assert z == SIZE_SCALE[obj["size"]]
            assert 0 <= obj["rotation"] < 360
        for a, b in itertools.combinations(objects, 2):
            # CLEVR records a cube's radius as its scale / sqrt(2).
            ra, rb = (SIZE_SCALE[o["size"]] / (math.sqrt(2) if o["shape"] == "cube" else 1) for o in (a, b))
            delta = np.array(a["3d_coords"][:2]) - np.array(b["3d_coords"][:2])
            assert np.linalg.norm(delta) - ra - rb >= MIN_DISTANCE
            assert abs(delta @ left) >= MARGIN and abs(delta @ front) >= MARGIN
    assert len(counts) > 4  # the object count varies


def test_relationships_follow_directions(sampled: list) -> None:
    for scene, _, _ in sampled:
        rel = scene["relationships"]
        n = len(scene["objects"])
        for i, j in itertools.permutations(range(n), 2):
            assert (j in rel["left"][i]) == (i in rel["right"][j])
            assert (j in rel["behind"][i]) == (i in rel["front"][j])
            delta = np.subtract(scene["objects"][j]["3d_coords"], scene["objects"][i]["3d_coords"])
            assert (j in rel["behind"][i]) == (delta @ scene["directions"]["behind"] > 0.2)
    assert sampled[0][0]["directions"] == sampled[1][0]["directions"]  # the camera never turns


def test_objects_are_visible_where_pixel_coords_say(sampled: list) -> None:
    """Every object shows at least MIN_PIXELS pixels; rendered alone and wholly in the frame, its
    silhouette holds its pixel_coords, and its lowest pixel lies just below the projection of its
    base point (it rests on the ground)."""
    for scene, camera, _ in sampled[:8]:
        solids = generator._Solids.from_objects(scene["objects"])
        ids = generator._object_ids(solids, camera)
        assert (np.bincount(ids[ids >= 0], minlength=len(solids)) >= MIN_PIXELS).all()
        for obj in scene["objects"]:
            alone = generator._object_ids(generator._Solids.from_objects([obj]), camera)
            rows, cols = np.nonzero(alone.reshape(IMAGE_HEIGHT, IMAGE_WIDTH) == 0)
            px, py, depth = obj["pixel_coords"]
            assert depth > 0
            if rows.min() == 0 or cols.min() == 0 or cols.max() == IMAGE_WIDTH - 1:
                continue
            if rows.max() == IMAGE_HEIGHT - 1:
                continue
            assert cols.min() <= px <= cols.max() and rows.min() <= py <= rows.max()
            base_row = camera.project(np.array([[*obj["3d_coords"][:2], 0.0]]))[0, 1]
            assert base_row - 1 <= rows.max() <= base_row + 2 + 0.35 * (rows.max() - rows.min())


def test_projection_matches_the_fixture_camera() -> None:
    """An object at the origin projects to the image centre at the camera's distance."""
    px, py, depth = Camera().project(np.zeros((1, 3)))[0]
    assert (px, py) == (IMAGE_WIDTH / 2, IMAGE_HEIGHT / 2)
    assert depth == pytest.approx(np.linalg.norm(generator.CAMERA_POSITION))


def test_render_metal_is_shinier_than_rubber() -> None:
    def render(material: str) -> tuple[np.ndarray, np.ndarray]:
        obj = {
            "shape": "sphere",
            "size": "large",
            "material": material,
            "color": "gray",
            "3d_coords": [0.0, 0.0, 0.7],
            "rotation": 0.0,
        }
        image = render_scene({"objects": [obj]})
        ids = generator._object_ids(generator._Solids.from_objects([obj]), Camera())
        return image, ids.reshape(IMAGE_HEIGHT, IMAGE_WIDTH)

    metal, ids = render("metal")
    rubber, _ = render("rubber")
    assert metal.shape == (IMAGE_HEIGHT, IMAGE_WIDTH, 4) and metal.dtype == np.uint8
    assert (metal[..., 3] == 255).all()
    sphere = ids == 0
    metal_px = metal[..., :3][sphere].astype(float)
    rubber_px = rubber[..., :3][sphere].astype(float)
    assert metal_px.std() > 1.5 * rubber_px.std()  # reflections and highlights vs matte
    assert metal_px.max() > rubber_px.max() + 40  # a highlight
    ground = rubber[..., :3][ids == -1].astype(float)
    assert np.abs(ground - ground.mean(axis=1, keepdims=True)).max() < 12  # grey
    assert 80 < ground.mean() < 170


def test_render_colours_follow_the_scene() -> None:
    objects = [
        {
            "shape": shape,
            "size": "large",
            "material": "rubber",
            "color": colour,
            "3d_coords": [x, y, 0.7],
            "rotation": 30.0,
        }
        for shape, colour, x, y in [
            ("cube", "red", 0.0, -2.0),
            ("cylinder", "blue", 0.0, 2.0),
            ("sphere", "green", 2.0, 0.0),
        ]
    ]
    image = render_scene({"objects": objects}, antialias=False)
    ids = generator._object_ids(generator._Solids.from_objects(objects), Camera())
    medians = [np.median(image[..., :3].reshape(-1, 3)[ids == k], axis=0) for k in range(3)]
    assert np.argmax(medians[0]) == 0 and np.argmax(medians[1]) == 2 and np.argmax(medians[2]) == 1


def test_generate_rejects_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="splits"):
        generate(tmp_path, {}, seed=0)
    with pytest.raises(ValueError, match=r"splits\['val'\] must be an integer >= 0"):
        generate(tmp_path, {"val": -1}, seed=0)
    with pytest.raises(ValueError, match="workers"):
        generate(tmp_path, {"val": 1}, seed=0, workers=0)
