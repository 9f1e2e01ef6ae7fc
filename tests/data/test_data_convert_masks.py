"""`optik data convert` keeps instance masks or says what it cannot keep (issue 17, bug 3).

A small COCO instances set (polygons, a two-part polygon, a compressed RLE with a hole, a
crowd uncompressed RLE, sparse category ids with `supercategory`) and optik's synthetic instance
scenes go through COCO -> COCO / YOLO(-seg) / VOC (SegmentationObject + SegmentationClass) and
back: boxes stay within 1e-6 of the image side, masks survive (polygon round trips IoU >= 0.98,
PNG round trips exact), and what a format cannot hold is logged with a count (one line per
kind) or refused under strict=true.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from pycocotools import mask as pmask
from pycocotools.coco import COCO

from optik.data.convert import convert
from optik.data.detection_dataset import DetectionDataset
from optik.data.formats.voc import read_voc
from optik.data.formats.voc_seg import read_voc_seg
from optik.data.formats.yolo import read_yolo
from optik.data.sources import load_detection_data, load_segmentation_data
from optik.errors import ConfigError, DatasetError

LOGGER = "optik.data"
CATS = [
    {"id": 3, "name": "cat", "supercategory": "animal"},
    {"id": 9, "name": "dog", "supercategory": "animal"},
    {"id": 12, "name": "car", "supercategory": "vehicle"},
]
SIZES = {"a.png": (30, 40), "b.png": (24, 36)}  # (H, W)


def _png(path: Path, hw: tuple[int, int], value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (hw[1], hw[0]), (value, value, value)).save(path)


def _uncompressed(m: np.ndarray) -> dict:
    flat = m.ravel(order="F").astype(np.int64)
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat[0]:
        counts = [0] + counts
    return {"size": list(m.shape), "counts": counts}


def _rle_bbox(rle: dict) -> list[float]:
    if isinstance(rle["counts"], list):
        rle = pmask.frPyObjects(rle, *rle["size"])
    else:
        rle = {"size": rle["size"], "counts": rle["counts"].encode()}
    return [float(v) for v in pmask.toBbox(rle)]


def coco_set(root: Path) -> Path:
    """root/annotations/instances_{train,val}.json + root/images/{a,b}.png; returns root."""
    for k, (name, hw) in enumerate(SIZES.items()):
        _png(root / "images" / name, hw, 60 + 50 * k)
    car = np.zeros(SIZES["a.png"], np.uint8)
    car[20:27, 18:30] = 1
    car[22:24, 22:25] = 0  # a hole
    car_rle = pmask.encode(np.asfortranarray(car))
    car_rle["counts"] = car_rle["counts"].decode()
    crowd = np.zeros(SIZES["a.png"], np.uint8)
    crowd[18:29, 2:13] = 1
    crowd_rle = _uncompressed(crowd)
    train = {
        "info": {"description": "test"},
        "images": [{"id": 7, "file_name": "a.png", "width": 40, "height": 30}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 3, "iscrowd": 0, "area": 120.5,
             "bbox": [2.5, 3, 11.5, 13], "segmentation": [[2.5, 3, 14, 3, 14, 12.5, 8, 16, 2.5, 12]]},
            {"id": 2, "image_id": 7, "category_id": 9, "iscrowd": 0, "area": 51.0,
             "bbox": [20, 2, 14, 8],
             "segmentation": [[20, 2, 26, 2, 26, 8, 20, 8], [29, 4, 34, 4, 31.5, 10]]},
            {"id": 3, "image_id": 7, "category_id": 12, "iscrowd": 0, "area": float(car.sum()),
             "bbox": _rle_bbox(car_rle), "segmentation": car_rle},
            {"id": 4, "image_id": 7, "category_id": 9, "iscrowd": 1, "area": float(crowd.sum()),
             "bbox": _rle_bbox(crowd_rle), "segmentation": crowd_rle},
        ],
        "categories": CATS,
    }  # fmt: skip
    val = {
        "images": [{"id": 8, "file_name": "b.png", "width": 36, "height": 24}],
        "annotations": [
            {"id": 5, "image_id": 8, "category_id": 12, "iscrowd": 0, "area": 300.0,
             "bbox": [5, 5, 25, 15], "segmentation": [[5, 5, 30, 6, 28, 20, 6, 18]]},
            {"id": 6, "image_id": 8, "category_id": 3, "iscrowd": 0, "area": 4.5,
             "bbox": [1, 1, 3, 3], "segmentation": [[1, 1, 4, 1, 4, 4]]},
        ],
        "categories": CATS,
    }  # fmt: skip
    ann = root / "annotations"
    ann.mkdir(parents=True, exist_ok=True)
    (ann / "instances_train.json").write_text(json.dumps(train))
    (ann / "instances_val.json").write_text(json.dumps(val))
    return root


# ---- reading a converted COCO folder back: per image stem, per object ---------------------


def coco_objects(root: Path) -> dict[str, list[dict]]:
    """{image stem: [{"name", "box" xyxy, "crowd", "mask", "segm", "hw"}]} over both splits."""
    out: dict[str, list[dict]] = {}
    for js in sorted((root / "annotations").glob("instances_*.json")):
        c = COCO(str(js))
        names = {cat["id"]: cat["name"] for cat in c.dataset["categories"]}
        for img in c.dataset["images"]:
            objs = []
            for a in c.loadAnns(c.getAnnIds(imgIds=img["id"])):
                x, y, w, h = a["bbox"]
                objs.append({"name": names[a["category_id"]], "box": np.array([x, y, x + w, y + h]),
                             "crowd": a.get("iscrowd", 0), "mask": c.annToMask(a).astype(bool),
                             "segm": a.get("segmentation"), "hw": (img["height"], img["width"])})  # fmt: skip
            out[Path(img["file_name"]).stem] = objs
    return out


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def assert_same_objects(src: dict, back: dict, *, exact: bool, crowd: bool) -> None:
    """Same images, classes, boxes (to 1e-6 of the image side) and masks per object."""
    assert sorted(src) == sorted(back)
    for stem, objs in src.items():
        want = [o for o in objs if crowd or not o["crowd"]]
        got = back[stem]
        assert [o["name"] for o in got] == [o["name"] for o in want], stem
        assert [o["crowd"] for o in got] == [o["crowd"] for o in want], stem
        for o, g in zip(want, got):
            h, w = o["hw"]
            np.testing.assert_allclose(g["box"], o["box"], rtol=0, atol=1e-6 * max(h, w))
            if exact:
                np.testing.assert_array_equal(g["mask"], o["mask"], err_msg=f"{stem} {o['name']}")
            else:
                assert iou(g["mask"], o["mask"]) >= 0.98, (stem, o["name"], iou(g["mask"], o["mask"]))


def logged(caplog) -> str:
    return "\n".join(r.getMessage() for r in caplog.records)


# ---- COCO -> COCO -------------------------------------------------------------------------


def test_coco_to_coco_keeps_polygons_crowd_rle_and_supercategory(tmp_path):
    src = coco_set(tmp_path / "src")
    out = convert(src, tmp_path / "out", to="coco")
    for split in ("train", "val"):
        a = json.loads((src / "annotations" / f"instances_{split}.json").read_text())
        b = json.loads((out / "annotations" / f"instances_{split}.json").read_text())
        assert b["categories"] == CATS
        assert len(b["annotations"]) == len(a["annotations"])
        for x, y in zip(a["annotations"], b["annotations"]):
            assert y["segmentation"] == x["segmentation"]  # polygons, RLE, crowd RLE: as they were
            assert (y["iscrowd"], y["area"], y["category_id"]) == (x["iscrowd"], x["area"], x["category_id"])
            np.testing.assert_allclose(y["bbox"], x["bbox"], atol=1e-5)
    # and the copy reads as instance segmentation
    seg = load_segmentation_data(out)
    assert seg.kind == "instance" and seg.train.load_target(0)["masks"].shape[0] == 4


# ---- COCO -> YOLO(-seg) -------------------------------------------------------------------


def test_coco_to_yolo_writes_segment_polygons_and_logs_what_it_cannot_hold(tmp_path, caplog):
    src = coco_set(tmp_path / "src")
    caplog.set_level(logging.INFO, logger=LOGGER)
    data_yaml = convert(src, tmp_path / "yolo", to="yolo")
    lines = (tmp_path / "yolo" / "labels" / "train" / "a.txt").read_text().splitlines()
    assert len(lines) == 3  # the crowd region is left out
    assert all(len(ln.split()) >= 7 and len(ln.split()) % 2 == 1 for ln in lines)  # class + x y pairs
    first = np.array(lines[0].split()[1:], float).reshape(-1, 2) * [40, 30]
    want = np.reshape([2.5, 3, 14, 3, 14, 12.5, 8, 16, 2.5, 12], (-1, 2))
    np.testing.assert_allclose(first, want, atol=1e-6)
    val_lines = (tmp_path / "yolo" / "labels" / "val" / "b.txt").read_text().splitlines()
    assert [ln.split()[0] for ln in val_lines] == ["2", "0"]  # car, cat (classes 0..C-1)
    text = logged(caplog)
    assert "1 crowd region left out" in text
    assert "1 RLE mask traced into a polygon" in text
    assert "2 multi-part masks joined into one polygon" in text  # the two-part dog, the car's hole
    assert "supercategor" in text
    # optik's YOLO reader reads the polygons' boxes
    train, val, _ = read_yolo(data_yaml)
    assert train.num_objects() == 3 and val.num_objects() == 2


def test_coco_to_yolo_strict_refuses_before_writing(tmp_path):
    src = coco_set(tmp_path / "src")
    with pytest.raises(ConfigError, match=r"strict=true.*1 crowd region left out"):
        convert(src, tmp_path / "yolo", to="yolo", strict=True)
    assert not (tmp_path / "yolo" / "data.yaml").exists()
    assert not (tmp_path / "yolo" / "labels").exists()


def test_round_trip_coco_yolo_coco_keeps_boxes_and_masks(tmp_path):
    src = coco_set(tmp_path / "src")
    y = convert(src, tmp_path / "yolo", to="yolo")
    back = convert(y, tmp_path / "back", to="coco")
    assert_same_objects(coco_objects(src), coco_objects(back), exact=False, crowd=False)
    # the traced RLE (with its hole) and the joined two-part polygon come back pixel-exact
    objs = coco_objects(back)["a"]
    src_objs = coco_objects(src)["a"]
    for k in (1, 2):
        np.testing.assert_array_equal(objs[k]["mask"], src_objs[k]["mask"])


# ---- COCO -> VOC (Annotations + SegmentationObject + SegmentationClass) --------------------


def test_coco_to_voc_writes_segmentation_pngs_readable_by_voc_seg(tmp_path, caplog):
    src = coco_set(tmp_path / "src")
    caplog.set_level(logging.INFO, logger=LOGGER)
    voc = convert(src, tmp_path / "voc", to="voc")
    for sub in ("SegmentationObject", "SegmentationClass"):
        with Image.open(voc / sub / "a.png") as im:
            assert im.mode == "P" and im.size == (40, 30)
    assert (voc / "ImageSets" / "Segmentation" / "train.txt").read_text().split() == ["a"]
    objs = coco_objects(src)
    inst = read_voc_seg(voc, instances=True)
    assert inst[0].classes == ["cat", "dog", "car"] and inst[1] is not None
    for ds in inst[:2]:
        for i in range(len(ds)):
            stem = Path(ds.source(i)).stem
            want = [o for o in objs[stem] if not o["crowd"]]
            t = ds.load_target(i)
            assert [ds.classes[k] for k in t["labels"]] == [o["name"] for o in want]
            np.testing.assert_array_equal(t["masks"].numpy(), np.stack([o["mask"] for o in want]))
    sem, _, _ = read_voc_seg(voc)
    cls = sem.load_target(0)["semantic"].numpy()
    crowd = objs["a"][3]["mask"]
    assert (cls[crowd] == 255).all()  # crowd = void, VOC's convention
    assert (cls[objs["a"][2]["mask"]] == 3).all() and (cls[objs["a"][0]["mask"]] == 1).all()
    assert set(np.unique(cls)) == {0, 1, 2, 3, 255}
    # the detection reader: same classes (the segmentation "background" is not one), crowd = difficult
    det, _, _ = read_voc(voc)
    assert det.classes == ["cat", "dog", "car"] and det.annotation(0)["iscrowd"].tolist() == [0, 0, 0, 1]
    assert "1 crowd mask written as void (255)" in logged(caplog)


def test_round_trip_coco_voc_coco_is_exact(tmp_path):
    src = coco_set(tmp_path / "src")
    back = convert(convert(src, tmp_path / "voc", to="voc"), tmp_path / "back", to="coco")
    assert_same_objects(coco_objects(src), coco_objects(back), exact=True, crowd=True)
    # area comes from the masks
    doc = json.loads((back / "annotations" / "instances_train.json").read_text())
    assert [a["area"] for a in doc["annotations"]][2:] == [
        float(o["mask"].sum()) for o in coco_objects(src)["a"][2:]
    ]


def test_voc_overlapping_instances_logged_or_refused(tmp_path, caplog):
    src = coco_set(tmp_path / "src")
    js = src / "annotations" / "instances_val.json"
    doc = json.loads(js.read_text())
    doc["annotations"][1]["segmentation"] = [[4, 4, 12, 4, 12, 12, 4, 12]]  # the cat on the car
    doc["annotations"][1]["bbox"] = [4, 4, 8, 8]
    js.write_text(json.dumps(doc))
    car = pmask.decode(pmask.frPyObjects(doc["annotations"][0]["segmentation"], 24, 36)).max(2)
    lost = int(car[4:12, 4:12].sum())
    assert lost > 0
    with pytest.raises(ConfigError, match=r"strict=true.*1 object lost .* overlapping"):
        convert(src, tmp_path / "voc_strict", to="voc", strict=True)
    assert not (tmp_path / "voc_strict" / "Annotations").exists()
    caplog.set_level(logging.INFO, logger=LOGGER)
    voc = convert(src, tmp_path / "voc", to="voc")
    assert f"1 object lost {lost} px to overlapping objects" in logged(caplog)
    # the smaller object is painted on top: the cat is whole, the car lost its pixels
    t = read_voc_seg(voc, instances=True)[1].load_target(0)
    assert t["masks"][1].sum() == 64


# ---- synthetic instance scenes (multi-part, occluded masks) ------------------------------


SYN = "synthetic:shapes-inst?n=5&size=64&max_objects=5&seed=3"


def test_synthetic_instance_scenes_round_trip(tmp_path, caplog):
    ref = load_segmentation_data(SYN, val_fraction=0).train
    caplog.set_level(logging.INFO, logger=LOGGER)
    coco = convert(SYN, tmp_path / "coco", to="coco")
    objs = coco_objects(coco)
    assert len(objs) == len(ref)
    for i, stem in enumerate(sorted(objs)):
        t = ref.load_target(i)
        got = objs[stem]
        if not got:
            assert len(t["labels"]) == 0
            continue
        assert [o["name"] for o in got] == [ref.classes[k] for k in t["labels"]]
        np.testing.assert_array_equal(np.stack([o["mask"] for o in got]), t["masks"].numpy())
        np.testing.assert_allclose(np.stack([o["box"] for o in got]), t["boxes"].numpy(), atol=1e-6)
    back_yolo = convert(convert(coco, tmp_path / "yolo", to="yolo"), tmp_path / "c2", to="coco")
    assert_same_objects(objs, coco_objects(back_yolo), exact=False, crowd=False)
    back_voc = convert(convert(coco, tmp_path / "voc", to="voc"), tmp_path / "c3", to="coco")
    assert_same_objects(objs, coco_objects(back_voc), exact=True, crowd=True)
    assert "traced into" in logged(caplog)


# ---- box-only sources stay box-only; boxes survive every format (property) ---------------


def test_box_only_source_writes_no_masks(tmp_path, caplog):
    ds = DetectionDataset(np.zeros((1, 16, 24, 3), np.uint8),
                          [{"boxes": [[1, 1, 5, 5], [2.25, 3, 20, 15]], "labels": [0, 1]}], ["a", "b"],
                          name="mem")  # fmt: skip
    caplog.set_level(logging.INFO, logger=LOGGER)
    y = convert(ds, tmp_path / "yolo", to="yolo")
    assert all(len(ln.split()) == 5 for ln in (tmp_path / "yolo" / "labels" / "train").glob("*.txt")
               .__next__().read_text().splitlines())  # fmt: skip
    v = convert(y, tmp_path / "voc", to="voc")
    assert not (v / "SegmentationObject").exists()
    c = convert(v, tmp_path / "coco", to="coco")
    doc = json.loads((c / "annotations" / "instances_train.json").read_text())
    assert all("segmentation" not in a for a in doc["annotations"])
    assert "without a mask" not in logged(caplog)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_boxes_survive_coco_yolo_voc_coco(tmp_path_factory, data):
    h = data.draw(st.integers(4, 300), label="h")
    w = data.draw(st.integers(4, 300), label="w")
    n = data.draw(st.integers(0, 5), label="n")
    boxes = []
    for _ in range(n):
        x0 = data.draw(st.floats(0, w - 1, allow_nan=False), label="x0")
        y0 = data.draw(st.floats(0, h - 1, allow_nan=False), label="y0")
        x1 = data.draw(st.floats(x0 + 0.01, w, allow_nan=False), label="x1")
        y1 = data.draw(st.floats(y0 + 0.01, h, allow_nan=False), label="y1")
        boxes.append([x0, y0, x1, y1])
    labels = data.draw(st.lists(st.integers(0, 2), min_size=n, max_size=n), label="labels")
    ds = DetectionDataset(np.zeros((1, h, w, 3), np.uint8), [{"boxes": boxes, "labels": labels}],
                          ["a", "b", "c"], name="mem")  # fmt: skip
    tmp = tmp_path_factory.mktemp("rt")
    back = load_detection_data(convert(convert(convert(ds, tmp / "y", to="yolo"), tmp / "v", to="voc"),
                                       tmp / "c", to="coco"), val_fraction=0).train  # fmt: skip
    a, b = ds.annotation(0), back.annotation(0)
    assert b["labels"].tolist() == a["labels"].tolist()
    np.testing.assert_allclose(b["boxes"], a["boxes"], rtol=0, atol=1e-6 * max(h, w))


def test_bad_mask_names_file_and_object_or_is_skipped(tmp_path, caplog):
    src = coco_set(tmp_path / "src")
    js = src / "annotations" / "instances_val.json"
    doc = json.loads(js.read_text())
    doc["annotations"][1]["segmentation"] = [[1, 1, 4, 1]]  # two points
    js.write_text(json.dumps(doc))
    match = r"b\.png: object 1 field 'segmentation': polygon 0 has 4 coordinates"
    with pytest.raises(DatasetError, match=match):
        convert(src, tmp_path / "voc", to="voc")
    caplog.set_level(logging.INFO, logger=LOGGER)
    y = convert(src, tmp_path / "yolo", to="yolo", skip_bad=True)
    text = logged(caplog)
    assert "skipped 1 bad" in text and "polygon 0 has 4 coordinates" in text
    assert "1 object without a mask in a source with masks written as a box rectangle" in text
    _, val, _ = read_yolo(y)
    np.testing.assert_allclose(val.annotation(0)["boxes"][1], [1, 1, 4, 4], atol=1e-5)
