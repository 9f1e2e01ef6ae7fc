"""Segmentation readers on tiny data written here: mask-PNG folders (index, palette, colour),
COCO instances (polygons, RLE, uncompressed RLE, crowd), Pascal VOC, COCO panoptic; every
validation error and skip_bad."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from pycocotools import mask as pmask

from optik.data.formats.coco_panoptic import rgb_to_id
from optik.data.segmentation_dataset import IGNORE_INDEX
from optik.data.sources import load_segmentation_data
from optik.errors import DatasetError

H, W = 16, 24


def save_rgb(path: Path, value: int = 0, size: tuple[int, int] = (H, W)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size[1], size[0]), (value, value, value)).save(path)
    return path


def save_mask(path: Path, a: np.ndarray, mode: str = "L") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(a.astype(np.uint8), mode="L")
    if mode == "P":
        im = im.convert("P")
        im.putpalette([v for k in range(256) for v in (k * 7 % 256, k * 13 % 256, k * 29 % 256)])
        im = Image.fromarray(a.astype(np.uint8), mode="P")
        im.putpalette([v for k in range(256) for v in (k * 7 % 256, k * 13 % 256, k * 29 % 256)])
    im.save(path)
    return path


def sem_map(seed: int, classes: int = 3) -> np.ndarray:
    a = np.random.default_rng(seed).integers(0, classes, (H, W)).astype(np.uint8)
    a[0, :5] = IGNORE_INDEX
    return a


# ---- mask-PNG folders --------------------------------------------------------------------


def make_mask_dir(root: Path, n: int = 5, mode: str = "L") -> list[np.ndarray]:
    maps = []
    for i in range(n):
        save_rgb(root / "images" / f"im{i}.jpg", 10 * i)
        maps.append(sem_map(i))
        save_mask(root / "masks" / f"im{i}.png", maps[-1], mode)
    (root / "classes.txt").write_text("road\ncar\nsky\n")
    return maps


@pytest.mark.parametrize("mode", ["L", "P"])
def test_mask_dir_index_pngs(tmp_path, mode, monkeypatch):
    maps = make_mask_dir(tmp_path, mode=mode)
    data = load_segmentation_data(tmp_path, val_fraction=0.4)
    assert data.kind == "semantic" and data.classes == ["road", "car", "sky"]
    assert len(data.train) == 3 and len(data.val) == 2 and data.isthing is None
    ds = data.train
    k = int(Path(ds.source(0)).stem[2:])
    # load_target never decodes the image
    monkeypatch.setattr("optik.data.image.as_image_tensor", lambda x: 1 / 0)
    t = ds.load_target(0)
    np.testing.assert_array_equal(t["semantic"].numpy(), maps[k])
    assert t["semantic"].dtype == torch.int64 and t["orig_size"] == (H, W) and ds.size(0) == (H, W)


def test_mask_dir_colour_masks_and_splits(tmp_path):
    colours = [[0, 0, 0], [255, 0, 0], [0, 255, 0]]
    for split in ("train", "val"):
        for i in range(2):
            save_rgb(tmp_path / split / "images" / f"{split}{i}.png")
            a = sem_map(i)
            rgb = np.zeros((H, W, 3), np.uint8)
            for c, col in enumerate(colours):
                rgb[a == c] = col
            rgb[a == IGNORE_INDEX] = [9, 9, 9]
            (tmp_path / split / "masks").mkdir(parents=True, exist_ok=True)
            Image.fromarray(rgb).save(tmp_path / split / "masks" / f"{split}{i}.png")
    doc = {"names": ["bg", "a", "b"], "colors": colours, "void_color": [9, 9, 9]}
    (tmp_path / "classes.yaml").write_text(yaml.safe_dump(doc))
    data = load_segmentation_data(tmp_path)
    assert len(data.train) == len(data.val) == 2 and data.classes == ["bg", "a", "b"]
    np.testing.assert_array_equal(data.val.load_target(1)["semantic"].numpy(), sem_map(1))
    # a colour outside the palette
    rgb = np.asarray(Image.open(tmp_path / "val" / "masks" / "val1.png")).copy()
    rgb[3, 4] = [1, 2, 3]
    Image.fromarray(rgb).save(tmp_path / "val" / "masks" / "val1.png")
    match = r"val1.png: field 'colors': colour \(1, 2, 3\) at \(x=4, y=3\)"
    with pytest.raises(DatasetError, match=match):
        load_segmentation_data(tmp_path)
    data = load_segmentation_data(tmp_path, skip_bad=True)
    assert len(data.val) == 1 and len(data.skipped) == 1


def test_mask_dir_errors_and_skip_bad(tmp_path):
    make_mask_dir(tmp_path)
    bad = sem_map(0)
    bad[2, 3] = 7
    save_mask(tmp_path / "masks" / "im1.png", bad)
    match = r"im1.png: field 'mask': class index 7 at \(x=3, y=2\) out of range for 3"
    with pytest.raises(DatasetError, match=match):
        load_segmentation_data(tmp_path)
    save_mask(tmp_path / "masks" / "im2.png", np.zeros((H, W + 1), np.uint8))
    (tmp_path / "masks" / "im3.png").unlink()
    data = load_segmentation_data(tmp_path, skip_bad=True, val_fraction=0)
    assert len(data.train) == 2 and len(data.skipped) == 3 and "3 skipped" in data.description
    reasons = " ".join(r for _, r in data.skipped)
    assert "mask is 25x16 but image 'im2.jpg' is 24x16" in reasons
    assert "class index 7" in reasons
    (tmp_path / "masks" / "im1.png").unlink()
    (tmp_path / "images" / "im1.jpg").unlink()
    with pytest.raises(DatasetError, match=r"im2.png: mask is 25x16 but image 'im2.jpg' is 24x16"):
        load_segmentation_data(tmp_path)
    with pytest.raises(DatasetError, match=r"im3.png: mask file not found \(for image 'im3.jpg'\)"):
        save_mask(tmp_path / "masks" / "im2.png", sem_map(2))
        load_segmentation_data(tmp_path)
    # RGB masks without a palette; no classes file: names from the largest index
    (tmp_path / "classes.txt").unlink()
    (tmp_path / "images" / "im3.jpg").unlink()
    data = load_segmentation_data(tmp_path, val_fraction=0)
    assert data.classes == ["0", "1", "2"]
    save_rgb(tmp_path / "masks" / "im0.png")
    match = r"im0.png: field 'mask': an RGB colour mask needs `colors`"
    with pytest.raises(DatasetError, match=match):
        load_segmentation_data(tmp_path)


# ---- COCO instances ----------------------------------------------------------------------


def coco_instances(root: Path) -> dict:
    save_rgb(root / "images" / "a.png")
    save_rgb(root / "images" / "b.png")
    m = np.zeros((H, W), np.uint8, order="F")
    m[2:9, 10:20] = 1
    rle = pmask.encode(m)
    rle["counts"] = rle["counts"].decode()
    # uncompressed RLE: column-major run lengths starting with zeros
    flat = np.zeros(H * W, np.uint8)
    flat[40:70] = 1
    counts = [40, 30, H * W - 70]
    doc = {
        "images": [{"id": 7, "file_name": "a.png", "width": W, "height": H},
                   {"id": 8, "file_name": "b.png", "width": W, "height": H}],
        "categories": [{"id": 9, "name": "dog"}, {"id": 3, "name": "cat"}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 3, "iscrowd": 0,
             "segmentation": [[1, 1, 8, 1, 8, 6, 1, 6], [12, 10, 20, 10, 16, 15]]},
            {"id": 2, "image_id": 7, "category_id": 9, "iscrowd": 0, "segmentation": rle},
            {"id": 3, "image_id": 8, "category_id": 9, "iscrowd": 1,
             "segmentation": {"size": [H, W], "counts": counts}},
        ],
    }  # fmt: skip
    return doc


def test_coco_instances_match_pycocotools(tmp_path):
    from pycocotools.coco import COCO

    doc = coco_instances(tmp_path)
    (tmp_path / "inst.json").write_text(json.dumps(doc))
    data = load_segmentation_data(tmp_path / "inst.json", val_fraction=0)
    ds = data.train
    assert data.kind == "instance" and ds.classes == ["cat", "dog"] and ds.cat_ids == [3, 9]
    assert ds.image_ids == [7, 8] and data.isthing == [True, True]
    ref = COCO(str(tmp_path / "inst.json"))
    for i, img_id in enumerate(ds.image_ids):
        t = ds.load_target(i)
        anns = ref.loadAnns(ref.getAnnIds(imgIds=img_id))
        want = np.stack([ref.annToMask(a) for a in anns]).astype(bool)
        np.testing.assert_array_equal(t["masks"].numpy(), want)
        assert t["labels"].tolist() == [ds.cat_ids.index(a["category_id"]) for a in anns]
        assert t["iscrowd"].tolist() == [a["iscrowd"] for a in anns]
        assert t["area"].tolist() == want.reshape(len(want), -1).sum(1).tolist()
    t = ds.load_target(0)
    assert t["boxes"][1].tolist() == [10, 2, 20, 9]


def test_coco_instances_errors_and_dir(tmp_path):
    doc = coco_instances(tmp_path)
    path = tmp_path / "inst.json"
    bad = json.loads(json.dumps(doc))
    bad["annotations"][0]["segmentation"] = [[1, 1, 5, 1]]
    path.write_text(json.dumps(bad))
    match = (r"inst.json: annotation id 1 \(image 'a.png'\) field 'segmentation': "
             r"polygon 0 has 4 coordinates")
    with pytest.raises(DatasetError, match=match):
        load_segmentation_data(path)
    data = load_segmentation_data(path, skip_bad=True, val_fraction=0)
    assert len(data.skipped) == 1 and len(data.train.load_target(0)["labels"]) == 1
    bad = json.loads(json.dumps(doc))
    bad["annotations"][2]["category_id"] = 5
    path.write_text(json.dumps(bad))
    match = r"annotation id 3: field 'category_id': unknown category id 5"
    with pytest.raises(DatasetError, match=match):
        load_segmentation_data(path)
    bad = json.loads(json.dumps(doc))
    bad["annotations"][2]["segmentation"]["size"] = [H + 1, W]
    path.write_text(json.dumps(bad))
    with pytest.raises(DatasetError, match=r"field 'segmentation': RLE size \[17, 24\] differs"):
        load_segmentation_data(path)
    # folder layout: annotations/instances_{train,val}.json + train/ val/ images
    root = tmp_path / "coco"
    for split in ("train", "val"):
        save_rgb(root / split / "a.png")
        save_rgb(root / split / "b.png")
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(doc))
    data = load_segmentation_data(root)
    assert len(data.train) == len(data.val) == 2 and data.classes == ["cat", "dog"]


# ---- Pascal VOC --------------------------------------------------------------------------


def make_voc(root: Path) -> tuple[list[np.ndarray], list[np.ndarray]]:
    classes, objects = [], []
    for i in range(3):
        save_rgb(root / "JPEGImages" / f"2007_{i}.jpg", 50)
        cls = np.zeros((H, W), np.uint8)
        obj = np.zeros((H, W), np.uint8)
        cls[2:8, 2:10], obj[2:8, 2:10] = 15, 1  # person
        cls[9:14, 12:22], obj[9:14, 12:22] = 12, 2  # dog
        cls[8, :], obj[8, :] = 255, 255  # boundary
        save_mask(root / "SegmentationClass" / f"2007_{i}.png", cls, "P")
        save_mask(root / "SegmentationObject" / f"2007_{i}.png", obj, "P")
        classes.append(cls)
        objects.append(obj)
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("2007_0\n2007_1\n")
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("2007_2\n")
    return classes, objects


def test_voc_semantic_and_instances(tmp_path):
    classes, objects = make_voc(tmp_path)
    data = load_segmentation_data(tmp_path)
    assert data.kind == "semantic" and len(data.classes) == 21 and data.classes[15] == "person"
    assert len(data.train) == 2 and len(data.val) == 1
    np.testing.assert_array_equal(data.val.load_target(0)["semantic"].numpy(), classes[2])
    inst = load_segmentation_data(tmp_path, kind="instance")
    assert inst.kind == "instance" and inst.classes[14] == "person" and len(inst.classes) == 20
    t = inst.train.load_target(1)
    assert t["labels"].tolist() == [14, 11]
    np.testing.assert_array_equal(t["masks"].numpy(), np.stack([objects[1] == 1, objects[1] == 2]))
    bad = classes[0].copy()
    bad[0, 0] = 30
    save_mask(tmp_path / "SegmentationClass" / "2007_0.png", bad, "P")
    match = r"2007_0.png: field 'mask': class index 30 .* out of range for 21"
    with pytest.raises(DatasetError, match=match):
        load_segmentation_data(tmp_path)
    assert len(load_segmentation_data(tmp_path, skip_bad=True).train) == 1


# ---- COCO panoptic -----------------------------------------------------------------------


def make_panoptic(root: Path) -> tuple[dict, list[np.ndarray]]:
    """Two images: a thing (person, id 5), a crowd thing, stuff (sky, id 7); void elsewhere."""
    cats = [{"id": 1, "name": "person", "isthing": 1}, {"id": 40, "name": "sky", "isthing": 0}]
    images, anns, seg_maps = [], [], []
    for i in range(2):
        save_rgb(root / "train" / f"{i}.jpg", 80)
        seg = np.zeros((H, W), np.int64)
        seg[:6] = 7 + 256 * 300  # sky, id uses G too
        seg[8:14, 2:8] = 5
        seg[8:14, 12:20] = 1000 + 256 ** 2 * 2  # crowd person, id uses B
        rgb = np.stack([seg % 256, seg // 256 % 256, seg // 65536], -1).astype(np.uint8)
        (root / "annotations" / "panoptic_train").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb).save(root / "annotations" / "panoptic_train" / f"{i}.png")
        assert (rgb_to_id(rgb) == seg).all()
        images.append({"id": 100 + i, "file_name": f"{i}.jpg", "width": W, "height": H})
        anns.append({"image_id": 100 + i, "file_name": f"{i}.png", "segments_info": [
            {"id": 5, "category_id": 1, "iscrowd": 0},
            {"id": 7 + 256 * 300, "category_id": 40, "iscrowd": 0},
            {"id": 1000 + 256 ** 2 * 2, "category_id": 1, "iscrowd": 1}]})  # fmt: skip
        seg_maps.append(seg)
    doc = {"images": images, "annotations": anns, "categories": cats}
    (root / "annotations" / "panoptic_train.json").write_text(json.dumps(doc))
    return doc, seg_maps


def test_coco_panoptic(tmp_path):
    doc, segs = make_panoptic(tmp_path)
    data = load_segmentation_data(tmp_path, val_fraction=0)
    assert data.kind == "panoptic" and data.classes == ["person", "sky"]
    assert data.isthing == [True, False] and data.train.cat_ids == [1, 40]
    t = data.train.load_target(1)
    assert t["image_id"] == 101 and t["labels"].tolist() == [0, 1, 0]
    assert t["iscrowd"].tolist() == [0, 0, 1]
    want = np.stack([segs[1] == 5, segs[1] == 7 + 256 * 300, segs[1] == 1000 + 2 * 65536])
    np.testing.assert_array_equal(t["masks"].numpy(), want)
    sem = np.full((H, W), IGNORE_INDEX)
    sem[want[0] | want[2]], sem[want[1]] = 0, 1  # crowd painted with its class
    np.testing.assert_array_equal(t["semantic"].numpy(), sem)
    same = load_segmentation_data(tmp_path / "annotations" / "panoptic_train.json", val_fraction=0)
    assert torch.equal(same.train.load_target(0)["semantic"], data.train.load_target(0)["semantic"])
    sem_only = load_segmentation_data(tmp_path, kind="semantic", val_fraction=0)
    assert set(sem_only.train.load_target(0)) == {"image_id", "orig_size", "semantic"}


def test_coco_panoptic_errors(tmp_path):
    doc, _ = make_panoptic(tmp_path)
    path = tmp_path / "annotations" / "panoptic_train.json"
    bad = json.loads(json.dumps(doc))
    del bad["annotations"][0]["segments_info"][0]  # id 5 in the PNG, not listed
    path.write_text(json.dumps(bad))
    match = r"0.png: field 'segments_info': segment id 5 is in the PNG but not in segments_info"
    with pytest.raises(DatasetError, match=match):
        load_segmentation_data(tmp_path)
    data = load_segmentation_data(tmp_path, skip_bad=True, val_fraction=0)
    assert len(data.train) == 1 and len(data.skipped) == 1
    bad = json.loads(json.dumps(doc))
    bad["annotations"][1]["segments_info"].append({"id": 99, "category_id": 1})
    path.write_text(json.dumps(bad))
    match = r"1.png: field 'segments_info': segment id 99 is listed but has no pixel"
    with pytest.raises(DatasetError, match=match):
        load_segmentation_data(tmp_path)
    bad = json.loads(json.dumps(doc))
    bad["annotations"][1]["segments_info"][0]["category_id"] = 3
    path.write_text(json.dumps(bad))
    match = r"field 'segments_info.category_id': unknown category id 3"
    with pytest.raises(DatasetError, match=match):
        load_segmentation_data(tmp_path)
    path.write_text(json.dumps(doc))
    save_rgb(tmp_path / "train" / "1.jpg", size=(H, W + 2))
    bad = json.loads(json.dumps(doc))
    bad["images"][1].pop("width")
    path.write_text(json.dumps(bad))
    with pytest.raises(DatasetError, match=r"1.png: mask is 24x16 but image '1.jpg' is 26x16"):
        load_segmentation_data(tmp_path)
