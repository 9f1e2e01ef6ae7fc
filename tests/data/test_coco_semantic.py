"""COCO instances as semantic class maps (`task=semantic data=instances.json`): rasterisation equals
pycocotools' `annToMask` under torchvision's COCO segmentation rule (one instance -> its class, several ->
void, none -> background 0), crowd void; polygons, compressed and uncompressed RLE; real COCO 2014 annotations;
errors name the file and annotation; one tiny train + val end to end."""

from __future__ import annotations

import contextlib
import io
import json
from itertools import groupby
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as pmask

from optik.data.segmentation_dataset import (
    IGNORE_INDEX,
    SegmentationDataset,
    instances_to_semantic,
)
from optik.data.sources import load_segmentation_data
from optik.errors import DatasetError

H, W = 20, 24
REAL = Path(__file__).parent / "fixtures" / "coco_val2014_8.json"  # real COCO 2014 val annotations (CC BY 4.0)


def torchvision_rule(masks: np.ndarray, cats: list[int]) -> np.ndarray:
    """torchvision references/segmentation/coco_utils.py `ConvertCocoPolysToMask`, verbatim in torch:
    max over instances of mask * category, then pixels under more than one instance -> 255."""
    if not len(masks):
        return np.zeros(masks.shape[1:], np.uint8)
    m = torch.as_tensor(masks, dtype=torch.uint8)
    target, _ = (m * torch.as_tensor(cats, dtype=torch.uint8)[:, None, None]).max(dim=0)
    target[m.sum(0) > 1] = 255
    return target.numpy()


def reference_map(json_path: Path, img_id: int) -> np.ndarray:
    """The expected class map from pycocotools alone: annToMask per annotation, the torchvision rule on
    contiguous labels (category order + 1), then crowd regions void."""
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):  # COCO() prints its progress
        ref = COCO(str(json_path))
    cats = sorted(ref.getCatIds())
    info = ref.imgs[img_id]
    anns = ref.loadAnns(ref.getAnnIds(imgIds=img_id))
    masks = np.stack([ref.annToMask(a) for a in anns]) if anns else np.zeros((0, info["height"], info["width"]))
    want = torchvision_rule(masks, [cats.index(a["category_id"]) + 1 for a in anns])
    for a, m in zip(anns, masks):
        if a["iscrowd"]:
            want[m > 0] = IGNORE_INDEX
    return want


def save_image(path: Path, h: int = H, w: int = W) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((h, w, 3), 90, np.uint8)).save(path)


def hand_made(root: Path) -> dict:
    """Three images: polygons (multi-part, two classes overlapping, same class overlapping) + a compressed
    RLE; an uncompressed crowd RLE overlapping a polygon; no annotation at all. Sparse category ids."""
    for name in ("a.png", "b.png", "c.png"):
        save_image(root / "images" / name)
    m = np.zeros((H, W), np.uint8, order="F")
    m[2:9, 10:20] = 1
    rle = pmask.encode(m)
    rle["counts"] = rle["counts"].decode()
    crowd = np.zeros((H, W), np.uint8, order="F")
    crowd[10:18, 3:15] = 1
    # uncompressed RLE: column-major run lengths, zeros first (pixel (0, 0) is 0 here)
    counts = [len(list(run)) for _, run in groupby(crowd.ravel(order="F"))]
    doc = {
        "images": [{"id": 7, "file_name": "a.png", "width": W, "height": H},
                   {"id": 8, "file_name": "b.png", "width": W, "height": H},
                   {"id": 9, "file_name": "c.png", "width": W, "height": H}],
        "categories": [{"id": 9, "name": "dog"}, {"id": 3, "name": "cat"}, {"id": 40, "name": "bird"}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 3, "iscrowd": 0, "bbox": [1, 1, 19, 14],
             "segmentation": [[1, 1, 8, 1, 8, 6, 1, 6], [12, 10, 20, 10, 16, 15]]},
            {"id": 2, "image_id": 7, "category_id": 9, "iscrowd": 0, "bbox": [10, 2, 10, 7], "segmentation": rle},
            {"id": 3, "image_id": 7, "category_id": 3, "iscrowd": 0, "bbox": [5, 4, 7, 6],
             "segmentation": [[5, 4, 12, 4, 12, 10, 5, 10]]},  # overlaps cat #1 and dog #2
            {"id": 4, "image_id": 8, "category_id": 40, "iscrowd": 1, "bbox": [3, 10, 12, 8],
             "segmentation": {"size": [H, W], "counts": counts}},
            {"id": 5, "image_id": 8, "category_id": 9, "iscrowd": 0, "bbox": [0, 0, 8, 14],
             "segmentation": [[0, 0, 8, 0, 8, 14, 0, 14]]},  # partly under the crowd region
        ],
    }  # fmt: skip
    path = root / "inst.json"
    path.write_text(json.dumps(doc))
    return doc


def test_rule_is_torchvisions_plus_crowd_void():
    rng = np.random.default_rng(0)
    for n in (0, 1, 2, 5, 9):
        masks = rng.random((n, 12, 16)) < 0.3
        labels = rng.integers(0, 6, n)
        got = instances_to_semantic(masks, labels)
        np.testing.assert_array_equal(got, torchvision_rule(masks, (labels + 1).tolist()))
        if n:  # crowd: its own pixels void, everything else unchanged
            crowd = np.zeros(n, np.int64)
            crowd[0] = 1
            with_crowd = instances_to_semantic(masks, labels, crowd)
            np.testing.assert_array_equal(with_crowd[masks[0]], IGNORE_INDEX)
            np.testing.assert_array_equal(with_crowd[~masks[0]], got[~masks[0]])
    assert instances_to_semantic(np.zeros((0, 3, 4), bool), []).tolist() == [[0] * 4] * 3


def test_hand_made_coco_equals_pycocotools(tmp_path):
    hand_made(tmp_path)
    path = tmp_path / "inst.json"
    data = load_segmentation_data(path, kind="semantic", val_fraction=0)
    ds = data.train
    assert data.kind == "semantic" and data.isthing is None
    # class names: background + category names in category id order (the instance path's names, shifted)
    inst = load_segmentation_data(path, val_fraction=0).train
    assert ds.classes == ["background", *inst.classes] == ["background", "cat", "dog", "bird"]
    assert ds.cat_ids == [0, 3, 9, 40] and inst.cat_ids == [3, 9, 40]
    assert ds.image_ids == [7, 8, 9]
    for i, img_id in enumerate(ds.image_ids):
        got = ds.load_target(i)["semantic"]
        assert got.dtype == torch.int64 and got.shape == (H, W)
        np.testing.assert_array_equal(got.numpy(), reference_map(path, img_id))
    a, b, c = (ds.load_target(i)["semantic"].numpy() for i in range(3))
    # the rule, spelled out on known pixels: cat-only, dog-only, cat∩cat, cat∩dog, crowd, nothing
    assert a[2, 2] == 1 and a[3, 15] == 2 and a[5, 6] == IGNORE_INDEX and a[5, 11] == IGNORE_INDEX
    assert a[0, 23] == 0 and b[15, 10] == IGNORE_INDEX and b[12, 5] == IGNORE_INDEX and b[2, 2] == 2
    assert (c == 0).all()  # an image without annotations is all background
    # the instance path is untouched by the view (shared storage)
    assert "semantic" not in inst.load_target(0) and len(inst.load_target(0)["masks"]) == 3


def test_real_coco_2014_annotations(tmp_path):
    """Annotations nobody here wrote (8 COCO val2014 images: polygons, crowd RLE, heavy overlaps): every map
    equals pycocotools + the torchvision rule; classes follow COCO's 80 categories by id."""
    doc = json.loads(REAL.read_text())
    for im in doc["images"]:  # the images themselves are not shipped: blank stand-ins of the declared size
        save_image(tmp_path / "images" / im["file_name"], im["height"], im["width"])
    path = tmp_path / "instances_val2014.json"
    path.write_text(REAL.read_text())
    ds = load_segmentation_data(path, kind="semantic", val_fraction=0).train
    cats = sorted(doc["categories"], key=lambda c: c["id"])
    assert len(ds.classes) == 81 and ds.classes[:3] == ["background", "person", "bicycle"]
    assert ds.classes[1:] == [c["name"] for c in cats] and ds.cat_ids[1:] == [c["id"] for c in cats]
    crowd_px = overlap_px = 0
    for i, img_id in enumerate(ds.image_ids):
        got = ds.load_target(i)["semantic"].numpy()
        want = reference_map(path, img_id)
        np.testing.assert_array_equal(got, want, err_msg=f"image id {img_id}")
        overlap_px += int((want == IGNORE_INDEX).sum())
        crowd_px += sum(int(pmask.area(pmask.frPyObjects(a["segmentation"], *got.shape)))
                        for a in doc["annotations"] if a["image_id"] == img_id and a["iscrowd"])  # fmt: skip
    assert crowd_px > 1000 and overlap_px > crowd_px  # the fixture exercises both void sources


def test_dir_form_gives_semantic_val_split(tmp_path):
    doc = hand_made(tmp_path / "src")
    root = tmp_path / "coco"
    for split in ("train", "val"):
        for name in ("a.png", "b.png", "c.png"):
            save_image(root / split / name)
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(doc))
    data = load_segmentation_data(root, kind="semantic")
    assert data.val is not None and len(data.train) == len(data.val) == 3
    assert data.train.kind == data.val.kind == "semantic" and data.val.classes[0] == "background"
    np.testing.assert_array_equal(data.val.load_target(1)["semantic"].numpy(),
                                  reference_map(root / "annotations" / "instances_val.json", 8))  # fmt: skip


def test_bad_annotations_name_file_and_id(tmp_path):
    doc = hand_made(tmp_path)
    path = tmp_path / "inst.json"
    doc["annotations"][2]["segmentation"] = [[5, 4, 10, 4]]  # two points: no area
    path.write_text(json.dumps(doc))
    match = r"inst.json: annotation id 3 \(image 'a.png'\) field 'segmentation': polygon 0 has 4 coordinates"
    with pytest.raises(DatasetError, match=match):
        load_segmentation_data(path, kind="semantic")
    data = load_segmentation_data(path, kind="semantic", skip_bad=True, val_fraction=0)
    assert len(data.skipped) == 1 and "annotation id 3" in data.skipped[0][0]
    sem = data.train.load_target(0)["semantic"].numpy()
    assert sem[5, 6] == 1  # without annotation 3, cat #1 alone covers this pixel
    doc["annotations"][2]["segmentation"] = {"size": [H, W + 1], "counts": "0"}
    path.write_text(json.dumps(doc))
    with pytest.raises(DatasetError, match=r"annotation id 3 .*RLE size \[20, 25\] differs"):
        load_segmentation_data(path, kind="semantic")


def test_background_name_taken_and_other_kinds_still_refused(tmp_path):
    doc = hand_made(tmp_path)
    doc["categories"][0]["name"] = "background"
    doc["categories"].append({"id": 0, "name": "thing0"})
    (tmp_path / "inst.json").write_text(json.dumps(doc))
    ds = load_segmentation_data(tmp_path / "inst.json", kind="semantic", val_fraction=0).train
    assert ds.classes == ["__background__", "thing0", "cat", "background", "bird"]
    assert ds.cat_ids == [-1, 0, 3, 9, 40]
    with pytest.raises(DatasetError, match="cannot give panoptic"):  # panoptic from instances: not offered
        load_segmentation_data(tmp_path / "inst.json", kind="panoptic")
    sem = load_segmentation_data("synthetic:shapes-seg?n=2&size=16", val_fraction=0).train
    with pytest.raises(DatasetError, match="as_semantic"):
        sem.as_semantic()


def test_view_of_in_memory_instances_and_subsets():
    masks = np.zeros((2, 8, 8), bool)
    masks[0, :4] = True
    masks[1, 2:6] = True
    ds = SegmentationDataset(np.zeros((2, 8, 8, 3), np.uint8),
                             [{"masks": masks, "labels": [1, 0]}, {"masks": masks[:0], "labels": []}],
                             ["a", "b"], kind="instance")  # fmt: skip
    sub = ds.as_semantic().subset([1, 0])
    assert sub.image_ids == [2, 1]
    np.testing.assert_array_equal(sub.load_target(1)["semantic"].numpy(), instances_to_semantic(masks, [1, 0]))
    assert (sub.load_target(0)["semantic"] == 0).all()
    _, t = sub[1]  # tv_tensors path (no transform)
    assert t["semantic"].dtype == torch.uint8 and int(t["semantic"][0, 0]) == 2
