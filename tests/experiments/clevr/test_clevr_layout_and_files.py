"""Encoding CLEVR scenes (``clevr.layout``) and reading CLEVR v1.0 from disk (``clevr.data``)."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from idspn_experiments.clevr import data as clevr_data
from idspn_experiments.clevr.data import CLEVRDataset
from idspn_experiments.clevr.layout import ATTRIBUTES, LAYOUT, MAX_OBJECTS, SET_DIM, encode_scene

FIXTURE = Path(__file__).resolve().parents[2] / "data" / "clevr-blender-val4"  # tests/data (see its README)


def fixture_scenes() -> list[dict]:
    with (FIXTURE / "CLEVR_v1.0" / "scenes" / "CLEVR_val_scenes.json").open() as f:
        return json.load(f)["scenes"]


@pytest.fixture
def mini(tmp_path: Path) -> Path:
    """A three-scene copy of the fixture's val split in ``tmp_path/CLEVR_v1.0``."""
    root = tmp_path / "CLEVR_v1.0"
    (root / "images" / "val").mkdir(parents=True)
    (root / "scenes").mkdir()
    chosen = fixture_scenes()[:3]
    for scene in chosen:
        name = scene["image_filename"]
        source = FIXTURE / "CLEVR_v1.0" / "images" / "val" / name
        shutil.copy(source, root / "images" / "val" / name)
    write_scenes(root, chosen)
    return tmp_path


def write_scenes(root: Path, chosen: list[dict]) -> Path:
    path = root / "scenes" / "CLEVR_val_scenes.json"
    path.write_text(json.dumps({"info": {"split": "val"}, "scenes": chosen}))
    return path


def test_layout_matches_vocabularies() -> None:
    assert SET_DIM == LAYOUT.dim == 19
    assert [g.stop - g.start for g in LAYOUT.attributes] == [len(v) for _, v in ATTRIBUTES]
    assert [name for name, _ in ATTRIBUTES] == ["material", "color", "shape", "size"]


def test_encode_scene_layout() -> None:
    scene = {
        "objects": [
            {
                "3d_coords": [3.0, -1.5, 0.35],
                "material": "metal",
                "color": "brown",
                "shape": "cylinder",
                "size": "small",
                "bbox": {"x": 1},
            },
        ]
    }
    target = encode_scene(scene)
    assert target.shape == (MAX_OBJECTS, SET_DIM) and target.dtype == torch.float32
    expected = torch.zeros(SET_DIM)
    expected[:3] = torch.tensor([1.0, -0.5, 0.35 / 3])
    expected[3 + 1] = 1  # metal
    expected[5 + 7] = 1  # brown
    expected[13 + 2] = 1  # cylinder
    expected[16 + 1] = 1  # small
    expected[18] = 1
    torch.testing.assert_close(target[0], expected)
    assert target[1:].abs().sum() == 0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"color": "pink"}, r"object 1: unknown color 'pink'; expected one of \['cyan'"),
        ({"shape": None}, r"object 1: unknown shape None"),
        ({"3d_coords": [0.0, 1.0]}, r"object 1: field '3d_coords' must be 3 finite numbers; got \[0.0, 1.0\]"),
        ({"3d_coords": [float("nan"), 0.0, 0.0]}, r"object 1: field '3d_coords' must be 3 finite numbers; got \[nan"),
        ({"3d_coords": [0.0, float("inf"), 0.0]}, r"object 1: field '3d_coords' must be 3 finite numbers"),
        ({"3d_coords": ["0", 0.0, 0.0]}, r"object 1: field '3d_coords' must be 3 finite numbers"),
    ],
)
def test_encode_scene_rejects_bad_objects(change: dict, message: str) -> None:
    good = {
        "3d_coords": [0, 0, 0.7],
        "material": "rubber",
        "color": "red",
        "shape": "cube",
        "size": "large",
    }
    with pytest.raises(ValueError, match=message):
        encode_scene({"objects": [good, {**good, **change}]})
    missing = dict(good)
    del missing["size"]
    with pytest.raises(ValueError, match="object 0: missing field 'size'"):
        encode_scene({"objects": [missing]})
    with pytest.raises(ValueError, match="11 objects; expected at most MAX_OBJECTS=10"):
        encode_scene({"objects": [good] * 11})


@pytest.mark.parametrize("root", [FIXTURE, FIXTURE / "CLEVR_v1.0"])
def test_blender_fixture_loads_and_targets_match_json(root: Path) -> None:
    dataset = CLEVRDataset(root, "val", image_size=64)
    assert len(dataset) == len(fixture_scenes()) == 4
    image, target = dataset[3]
    assert image.shape == (3, 64, 64) and image.dtype == torch.float32
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
    assert target.shape == (MAX_OBJECTS, SET_DIM)
    for scene, target in zip(fixture_scenes(), dataset.targets, strict=True):
        n = len(scene["objects"])
        assert target[:, LAYOUT.presence].tolist() == [1.0] * n + [0.0] * (MAX_OBJECTS - n)
        for obj, row in zip(scene["objects"], target, strict=False):
            expected = np.array(obj["3d_coords"]) / 3
            np.testing.assert_allclose(row[LAYOUT.coords].numpy(), expected, rtol=1e-6)
            for (field, vocabulary), group in zip(ATTRIBUTES, LAYOUT.attributes, strict=True):
                assert vocabulary[int(row[group].argmax())] == obj[field]
                assert float(row[group].sum()) == 1.0


def test_image_is_whole_frame_resized_bilinear() -> None:
    dataset = CLEVRDataset(FIXTURE, "val", image_size=48, max_samples=2)
    assert len(dataset) == 2
    with Image.open(dataset.image_paths[1]) as original:
        assert original.size == (480, 320) and original.mode == "RGBA"
        expected = np.asarray(original.convert("RGB").resize((48, 48), Image.Resampling.BILINEAR))
    image, _ = dataset[1]
    np.testing.assert_array_equal((image * 255).round().byte().permute(1, 2, 0).numpy(), expected)


def test_cache_round_trip_equals_no_cache(mini: Path, tmp_path: Path, monkeypatch) -> None:
    cache = tmp_path / "cache" / "val32"
    plain = CLEVRDataset(mini, "val", image_size=32)
    cached = CLEVRDataset(mini, "val", image_size=32, cache=cache)
    assert cache.with_suffix(".npy").is_file() and cache.with_suffix(".json").is_file()
    assert not list(cache.parent.glob(".*"))  # no partial file left behind
    for i in range(len(plain)):
        assert torch.equal(plain[i][0], cached[i][0]) and torch.equal(plain[i][1], cached[i][1])

    # A matching cache is reused, not rebuilt ...
    def no_rebuild(self: CLEVRDataset, record: dict, progress: bool) -> None:
        raise AssertionError("cache was rebuilt although it matches")

    with monkeypatch.context() as patch:
        patch.setattr(CLEVRDataset, "_build_cache", no_rebuild)
        again = CLEVRDataset(mini, "val", image_size=32, cache=cache)
        assert torch.equal(again[2][0], plain[2][0])
    # ... and one built for another image size or count is replaced.
    resized = CLEVRDataset(mini, "val", image_size=16, cache=cache)
    assert resized[0][0].shape == (3, 16, 16)
    fewer = CLEVRDataset(mini, "val", image_size=16, cache=cache, max_samples=2)
    assert len(fewer) == 2 and torch.equal(fewer[1][0], resized[1][0])


@pytest.mark.parametrize("change", ["replaced", "truncated", "scenes"])
def test_a_cache_whose_source_changed_is_rebuilt(mini: Path, tmp_path: Path, change: str) -> None:
    cache = tmp_path / "cache" / "val16"
    before = CLEVRDataset(mini, "val", image_size=16, cache=cache)[1][0]
    images = mini / "CLEVR_v1.0" / "images" / "val"
    if change == "replaced":  # another picture under the same name
        shutil.copy(images / "CLEVR_val_000002.png", images / "CLEVR_val_000001.png")
        after = CLEVRDataset(mini, "val", image_size=16, cache=cache)[1][0]
        assert torch.equal(after, CLEVRDataset(mini, "val", image_size=16)[1][0]) and not torch.equal(after, before)
    elif change == "truncated":  # the stale pixels must not be used: the rebuild reads the file
        (images / "CLEVR_val_000001.png").write_bytes((images / "CLEVR_val_000001.png").read_bytes()[:1000])
        with pytest.raises(ValueError, match=r"cannot read image .*CLEVR_val_000001.png"):
            CLEVRDataset(mini, "val", image_size=16, cache=cache)
    else:  # the scenes file edited (e.g. a colour fixed): targets and cache follow
        chosen = fixture_scenes()[:3]
        chosen[1]["objects"][0]["color"] = "cyan" if chosen[1]["objects"][0]["color"] != "cyan" else "red"
        write_scenes(mini / "CLEVR_v1.0", chosen)
        dataset = CLEVRDataset(mini, "val", image_size=16, cache=cache)
        assert torch.equal(dataset.targets[1], encode_scene(chosen[1]))


def test_non_finite_coordinates_are_refused_naming_file_scene_and_object(mini: Path) -> None:
    chosen = fixture_scenes()[:3]
    chosen[1]["objects"][2]["3d_coords"] = [float("nan"), 0.0, 0.0]
    write_scenes(mini / "CLEVR_v1.0", chosen)
    with pytest.raises(
        ValueError,
        match=r"CLEVR_val_scenes.json.*scene 1 \(CLEVR_val_000001.png\): object 2: "
        r"field '3d_coords' must be 3 finite numbers",
    ):
        CLEVRDataset(mini, "val")


def test_missing_split_and_scenes_file(mini: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"image folder .*images/train.* for split 'train'"):
        CLEVRDataset(mini, "train")
    (mini / "CLEVR_v1.0" / "scenes" / "CLEVR_val_scenes.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"scenes file .*_scenes.json.* does not exist"):
        CLEVRDataset(mini, "val")
    with pytest.raises(FileNotFoundError, match="CLEVR_v1.0"):
        CLEVRDataset(mini / "nowhere", "val")


def test_truncated_json(mini: Path) -> None:
    path = mini / "CLEVR_v1.0" / "scenes" / "CLEVR_val_scenes.json"
    text = path.read_text()
    path.write_text(text[: len(text) // 2])
    with pytest.raises(ValueError, match=r"CLEVR_val_scenes.json.* is not valid JSON"):
        CLEVRDataset(mini, "val")
    path.write_text(json.dumps({"scenes": {"not": "a list"}}))
    with pytest.raises(ValueError, match="'scenes' list"):
        CLEVRDataset(mini, "val")


def test_unknown_colour_names_scene_and_object(mini: Path) -> None:
    chosen = fixture_scenes()[:3]
    chosen[2]["objects"][1]["color"] = "pink"
    write_scenes(mini / "CLEVR_v1.0", chosen)
    message = r"scene 2 \(CLEVR_val_000002.png\): object 1: unknown color 'pink'"
    with pytest.raises(ValueError, match=message):
        CLEVRDataset(mini, "val")


def test_corrupt_png(mini: Path, tmp_path: Path) -> None:
    broken = mini / "CLEVR_v1.0" / "images" / "val" / "CLEVR_val_000001.png"
    broken.write_bytes(broken.read_bytes()[:1000])  # truncated download
    dataset = CLEVRDataset(mini, "val")
    dataset[0]
    with pytest.raises(ValueError, match=r"cannot read image .*CLEVR_val_000001.png"):
        dataset[1]
    with pytest.raises(ValueError, match=r"cannot read image .*CLEVR_val_000001.png"):
        CLEVRDataset(mini, "val", cache=tmp_path / "c")
    assert not (tmp_path / "c.npy").exists() and not (tmp_path / "c.json").exists()


def test_image_count_must_match_scenes(mini: Path) -> None:
    (mini / "CLEVR_v1.0" / "images" / "val" / "CLEVR_val_000002.png").unlink()
    with pytest.raises(ValueError, match="holds 2 PNG images but .* describes 3 scenes"):
        CLEVRDataset(mini, "val")
    shutil.copy(
        mini / "CLEVR_v1.0" / "images" / "val" / "CLEVR_val_000000.png",
        mini / "CLEVR_v1.0" / "images" / "val" / "CLEVR_val_000007.png",
    )
    with pytest.raises(FileNotFoundError, match=r"CLEVR_val_000002.png.* of scene 2"):
        CLEVRDataset(mini, "val")


def test_invalid_arguments(mini: Path) -> None:
    with pytest.raises(ValueError, match="image_size"):
        CLEVRDataset(mini, "val", image_size=0)
    with pytest.raises(ValueError, match="max_samples"):
        CLEVRDataset(mini, "val", max_samples=-1)
    with pytest.raises(ValueError, match="split"):
        CLEVRDataset(mini, "")


def test_dataset_survives_pickling_with_cache(mini: Path, tmp_path: Path) -> None:
    import pickle

    dataset = CLEVRDataset(mini, "val", image_size=16, cache=tmp_path / "c")
    first = dataset[0][0]
    clone = pickle.loads(pickle.dumps(dataset))
    assert torch.equal(clone[0][0], first)
    assert clevr_data.find_dataset_dir(mini) == mini / "CLEVR_v1.0"
