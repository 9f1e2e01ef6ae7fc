"""COCO / YOLO / VOC readers (layouts, validation messages, strict vs clip, skip_bad) and the
writers + converter (round trip)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from optik.data.convert import convert, write_coco, write_voc, write_yolo
from optik.data.detection_dataset import DetectionDataset
from optik.data.formats.coco import read_coco
from optik.data.formats.voc import read_voc
from optik.data.formats.yolo import label_path, read_yolo
from optik.data.sources import load_detection_data
from optik.errors import ConfigError, DatasetError


def png(path: Path, w: int = 40, h: int = 30, value: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (w, h), (value, value, value)).save(path)
    return path


def coco_doc(**changes) -> dict:
    doc = {
        "images": [
            {"id": 10, "file_name": "a.png", "width": 40, "height": 30},
            {"id": 11, "file_name": "b.png", "width": 40, "height": 30},
        ],
        "annotations": [
            {"id": 1, "image_id": 10, "category_id": 5, "bbox": [1.5, 2, 10, 8], "area": 50.0,
             "iscrowd": 0},
            {"id": 2, "image_id": 10, "category_id": 9, "bbox": [20, 10, 15, 12.25], "iscrowd": 1},
            {"id": 3, "image_id": 11, "category_id": 5, "bbox": [0, 0, 40, 30]},
        ],
        "categories": [{"id": 9, "name": "dog"}, {"id": 5, "name": "cat"}],
    }  # fmt: skip
    doc.update(changes)
    return doc


def write_coco_files(root: Path, doc: dict | None = None, images_dir: str = "images") -> Path:
    for i, name in enumerate(("a.png", "b.png")):
        png(root / images_dir / name, value=40 * i)
    js = root / "annotations" / "instances.json"
    js.parent.mkdir(parents=True, exist_ok=True)
    js.write_text(json.dumps(doc or coco_doc()))
    return js


# ---- COCO --------------------------------------------------------------------------------


def test_coco_reader_maps_sparse_category_ids(tmp_path):
    js = write_coco_files(tmp_path)  # images in ../images relative to the json
    ds, skipped = read_coco(js)
    assert skipped == [] and ds.classes == ["cat", "dog"] and ds.cat_ids == [5, 9]
    assert ds.image_ids == [10, 11] and ds.source(0) == str(tmp_path / "images" / "a.png")
    t = ds.load(0)[1]
    assert t["boxes"].tolist() == [[1.5, 2.0, 11.5, 10.0], [20.0, 10.0, 35.0, 22.25]]
    assert t["labels"].tolist() == [0, 1] and t["iscrowd"].tolist() == [0, 1]
    gt = ds.to_coco()
    assert [a["category_id"] for a in gt["annotations"]] == [5, 9, 5]
    assert gt["annotations"][0]["area"] == 50.0  # the source's area is kept
    c = COCO()
    c.dataset = gt
    c.createIndex()
    assert c.getCatIds() == [5, 9] and len(c.getAnnIds(imgIds=[10])) == 2


def test_coco_image_search_order(tmp_path):
    # sibling images/ beside the json, and the json's own folder
    for sub in ("images", "."):
        root = tmp_path / sub.strip(".") / "x"
        png(root / sub / "a.png")
        png(root / sub / "b.png")
        (root / "c.json").write_text(json.dumps(coco_doc()))
        ds, _ = read_coco(root / "c.json")
        assert Path(ds.source(0)) == root / sub / "a.png"
    # COCO's own layout: annotations/instances_val2017.json + val2017/
    root = tmp_path / "coco"
    png(root / "val2017" / "a.png")
    png(root / "val2017" / "b.png")
    js = root / "annotations" / "instances_val2017.json"
    js.parent.mkdir(parents=True)
    js.write_text(json.dumps(coco_doc()))
    assert Path(read_coco(js)[0].source(1)) == root / "val2017" / "b.png"


def test_coco_dir_with_train_and_val(tmp_path):
    write_coco_files(tmp_path)
    (tmp_path / "annotations" / "instances.json").rename(
        tmp_path / "annotations" / "instances_train.json"
    )
    doc = coco_doc(images=coco_doc()["images"][1:], annotations=coco_doc()["annotations"][2:])
    (tmp_path / "annotations" / "instances_val.json").write_text(json.dumps(doc))
    data = load_detection_data(tmp_path)
    assert (len(data.train), len(data.val)) == (2, 1) and data.val.image_ids == [11]
    assert data.description.startswith("coco ") and data.classes == ["cat", "dog"]


@pytest.mark.parametrize(
    ("change", "pattern"),
    [
        ({"images": coco_doc()["images"] + [{"id": 10, "file_name": "b.png"}]},
         r"instances\.json: image 'b\.png' \(id 10\): duplicate image id 10"),
        ({"annotations": [{"id": 7, "image_id": 10, "category_id": 3, "bbox": [0, 0, 1, 1]}]},
         r"instances\.json: annotation id 7 \(image 'a\.png'\): field 'category_id': unknown category id 3"),
        ({"annotations": [{"id": 7, "image_id": 99, "category_id": 5, "bbox": [0, 0, 1, 1]}]},
         r"instances\.json: annotation id 7: field 'image_id': unknown image id 99"),
        ({"annotations": [{"id": 7, "image_id": 11, "category_id": 5, "bbox": [3, 3, 0, 4]}]},
         r"instances\.json: annotation id 7 \(image 'b\.png'\) field 'bbox': zero or negative width"),
        ({"annotations": [{"id": 7, "image_id": 11, "category_id": 5, "bbox": [3, 3, 4]}]},
         r"instances\.json: annotation id 7 \(image 'b\.png'\) field 'bbox': expected \[x, y, width, height\]"),
        ({"categories": [{"id": 5, "name": "cat"}, {"id": 5, "name": "dog"}]},
         r"instances\.json: categories\[1\]: duplicate category id 5"),
        ({"images": None}, r"instances\.json: field 'images' must be a list"),
    ],
)  # fmt: skip
def test_coco_validation_messages(tmp_path, change, pattern):
    js = write_coco_files(tmp_path, coco_doc(**change))
    with pytest.raises(DatasetError, match=pattern):
        read_coco(js)


def test_coco_malformed_json_names_line(tmp_path):
    js = write_coco_files(tmp_path)
    js.write_text('{\n  "images": [\n    {"id": 1,,}\n  ]\n}')
    with pytest.raises(DatasetError, match=r"instances\.json: malformed JSON at line 3"):
        read_coco(js)


def test_coco_out_of_bounds_clip_vs_strict(tmp_path, caplog):
    anns = [{"id": 1, "image_id": 10, "category_id": 5, "bbox": [-4, 5, 50, 10]},
            {"id": 2, "image_id": 11, "category_id": 5, "bbox": [30, 20, 10.005, 10]}]  # fmt: skip
    js = write_coco_files(tmp_path, coco_doc(annotations=anns))
    with caplog.at_level(logging.WARNING):
        ds, _ = read_coco(js)
    assert ds.load(0)[1]["boxes"].tolist() == [[0.0, 5.0, 40.0, 15.0]]
    assert "clipped 1 boxes" in caplog.text  # 0.005 px past the border is float noise, not counted
    with pytest.raises(DatasetError, match=r"instances\.json: annotation id 1 \(image 'a\.png'\) "
                                           r"field 'bbox': box .* outside the 40x30 image"):
        read_coco(js, strict=True)


def test_coco_skip_bad_counts_boxes_and_missing_images(tmp_path):
    anns = coco_doc()["annotations"] + [
        {"id": 8, "image_id": 10, "category_id": 5, "bbox": [1, 1, -2, 3]},
        {"id": 9, "image_id": 10, "category_id": 5, "bbox": [60, 1, 5, 3]},  # wholly outside
    ]
    imgs = coco_doc()["images"] + [{"id": 12, "file_name": "gone.png", "width": 8, "height": 8}]
    js = write_coco_files(tmp_path, coco_doc(images=imgs))
    with pytest.raises(DatasetError, match=r"image 'gone\.png' \(id 12\): image file not found"):
        read_coco(js)
    js.write_text(json.dumps(coco_doc(annotations=anns, images=imgs)))
    data = load_detection_data(js, skip_bad=True, val_fraction=0)
    assert len(data.train) == 2 and len(data.skipped) == 3
    reasons = " | ".join(r for _, r in data.skipped)
    assert "zero or negative width" in reasons and "outside the 40x30 image" in reasons
    assert "gone.png" in reasons and data.description.endswith("3 skipped")
    assert data.train.num_objects() == 3


def test_coco_missing_size_read_from_header(tmp_path):
    doc = coco_doc(images=[{"id": 1, "file_name": "a.png"}, {"id": 2, "file_name": "b.png"}],
                   annotations=[])  # fmt: skip
    ds, _ = read_coco(write_coco_files(tmp_path, doc))
    assert ds.size(0) == (30, 40) and ds.num_objects() == 0


# ---- YOLO --------------------------------------------------------------------------------


def make_yolo(root: Path, names="[cat, dog]", labels: dict[str, str] | None = None) -> Path:
    for split, stems in (("train", ("a", "b", "c")), ("val", ("d",))):
        for s in stems:
            png(root / "images" / split / f"{s}.png", w=40, h=20)
    labels = {"train/a": "0 0.5 0.5 0.5 0.5\n1 0.25 0.25 0.1 0.2\n", "train/b": "\n",
              "val/d": "1 0.5 0.5 1.0 1.0\n"} if labels is None else labels  # fmt: skip
    for key, text in labels.items():
        f = root / "labels" / f"{key}.txt"
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(text)
    y = root / "data.yaml"
    y.write_text(f"path: .\ntrain: images/train\nval: images/val\nnames: {names}\n")
    return y


def test_yolo_reader(tmp_path):
    y = make_yolo(tmp_path)
    train, val, skipped = read_yolo(y)
    assert skipped == [] and train.classes == ["cat", "dog"] and (len(train), len(val)) == (3, 1)
    t = train.load(0)[1]
    assert np.allclose(t["boxes"].numpy(), [[10, 5, 30, 15], [8, 3, 12, 7]])
    assert t["labels"].tolist() == [0, 1]
    assert train.load(1)[1]["boxes"].shape == (0, 4)  # blank label file
    assert train.load(2)[1]["boxes"].shape == (0, 4)  # missing label file: no objects
    assert val.load(0)[1]["boxes"].tolist() == [[0.0, 0.0, 40.0, 20.0]]
    assert label_path("/d/images/train/images/x.jpg") == Path("/d/images/train/labels/x.txt")
    data = load_detection_data(tmp_path)  # a folder holding data.yaml
    assert data.description.startswith("yolo ") and len(data.val) == 1


def test_yolo_txt_lists_dict_names_and_polygons(tmp_path):
    y = make_yolo(tmp_path, names="{0: cat, 3: dog}",
                  labels={"train/a": "3 0.1 0.1 0.5 0.1 0.3 0.6\n"})  # fmt: skip
    (tmp_path / "train.txt").write_text("./images/train/a.png\nimages/train/c.png\n")
    y.write_text(y.read_text().replace("train: images/train", "train: train.txt"))
    train, _, _ = read_yolo(y)
    assert len(train) == 2 and train.cat_ids == [0, 3] and train.classes == ["cat", "dog"]
    t = train.load(0)[1]
    assert t["labels"].tolist() == [1] and np.allclose(t["boxes"].numpy(), [[4, 2, 20, 12]])


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("0 0.5 0.5 0.2\n", r"a\.txt: line 1: malformed line: 4 values"),
        ("0 0.5 0.5 0.2 0.2\n0 0.5 x 0.2 0.2\n", r"a\.txt: line 2: malformed line '0 0.5 x"),
        ("7 0.5 0.5 0.2 0.2\n", r"a\.txt: line 1 field 'class'|a\.txt: line 1: field 'class': unknown class id 7"),
        ("0 0.5 0.5 0 0.2\n", r"a\.txt: line 1 field 'box': zero or negative width"),
    ],
)  # fmt: skip
def test_yolo_label_errors_name_file_and_line(tmp_path, text, pattern):
    y = make_yolo(tmp_path, labels={"train/a": text})
    with pytest.raises(DatasetError, match=pattern):
        read_yolo(y)


def test_yolo_clip_strict_and_skip_bad(tmp_path, caplog):
    y = make_yolo(tmp_path, labels={"train/a": "0 0.9 0.5 0.4 0.2\n0 0.5 0.5 0.2 -1\n1 .5 .5 .5 .5\n",
                                    "train/b": "0 0.1 0.5 0.4 0.2\n"})  # fmt: skip
    with pytest.raises(DatasetError, match="zero or negative height"):
        read_yolo(y)
    with caplog.at_level(logging.WARNING):
        train, _, skipped = read_yolo(y, skip_bad=True)
    assert "data.yaml split 'train': clipped 2 boxes" in caplog.text  # one line per split
    assert len(skipped) == 1 and "a.txt: line 2" in skipped[0][0]
    assert np.allclose(train.load(0)[1]["boxes"].numpy(), [[28, 8, 40, 12], [10, 5, 30, 15]])
    with pytest.raises(DatasetError, match=r"a\.txt: line 1 field 'box': box .* outside the 40x20"):
        read_yolo(y, strict=True, skip_bad=True)


def test_yolo_yaml_errors(tmp_path):
    y = make_yolo(tmp_path)
    y.write_text("train: images/train\nnames: [a, b\n")
    with pytest.raises(DatasetError, match=r"data\.yaml: malformed YAML at line"):
        read_yolo(y)
    y.write_text("train: images/train\nnc: 3\nnames: [a, b]\n")
    with pytest.raises(DatasetError, match=r"data\.yaml: field 'nc' is 3"):
        read_yolo(y)
    y.write_text("train: list.txt\nnames: [a, b]\n")
    (tmp_path / "list.txt").write_text("images/train/a.png\nimages/train/zz.png\n")
    with pytest.raises(DatasetError, match=r"data\.yaml: split 'train': image file not found: .*zz\.png"):
        read_yolo(y)
    train, _, skipped = read_yolo(y, skip_bad=True)
    assert len(train) == 1 and skipped[0][0].endswith("zz.png")


# ---- VOC ---------------------------------------------------------------------------------


def voc_xml(filename: str, objects: list[tuple], size=(40, 30)) -> str:
    objs = "".join(
        f"<object><name>{n}</name><difficult>{d}</difficult><bndbox><xmin>{b[0]}</xmin>"
        f"<ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
        for n, b, d in objects
    )
    return (f"<annotation><filename>{filename}</filename><size><width>{size[0]}</width>"
            f"<height>{size[1]}</height><depth>3</depth></size>{objs}</annotation>")  # fmt: skip


def make_voc(root: Path, splits: bool = True) -> Path:
    objs = {"a": [("dog", (1, 1, 10, 10), 0), ("cat", (5, 6, 40, 30), 1)],
            "b": [("cat", (11, 11, 20, 20), 0)], "c": []}  # fmt: skip
    for stem, o in objs.items():
        png(root / "JPEGImages" / f"{stem}.png")
        f = root / "Annotations" / f"{stem}.xml"
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(voc_xml(f"{stem}.png", o))
    if splits:
        main = root / "ImageSets" / "Main"
        main.mkdir(parents=True)
        (main / "train.txt").write_text("a\nc\n")
        (main / "val.txt").write_text("b\n")
    return root


def test_voc_reader_splits_difficult_and_coordinates(tmp_path):
    train, val, skipped = read_voc(make_voc(tmp_path))
    assert skipped == [] and train.classes == ["cat", "dog"] and (len(train), len(val)) == (2, 1)
    t = train.load(0)[1]
    assert t["boxes"].tolist() == [[0, 0, 10, 10], [4, 5, 40, 30]]  # 1-based inclusive -> xyxy
    assert t["labels"].tolist() == [1, 0] and t["iscrowd"].tolist() == [0, 1]  # difficult
    assert train.load(1)[1]["boxes"].shape == (0, 4)
    data = load_detection_data(tmp_path)
    assert data.description.startswith("voc ") and len(data.val) == 1


def test_voc_without_imagesets_and_with_classes_txt(tmp_path):
    make_voc(tmp_path, splits=False)
    (tmp_path / "classes.txt").write_text("dog\ncat\n")
    train, val, _ = read_voc(tmp_path)
    assert val is None and len(train) == 3 and train.classes == ["dog", "cat"]
    (tmp_path / "classes.txt").write_text("dog\n")
    with pytest.raises(DatasetError, match=r"a\.xml: object 1 \('cat'\): field <name>: unknown class"):
        read_voc(tmp_path)


def test_voc_errors(tmp_path):
    make_voc(tmp_path, splits=False)
    xml = tmp_path / "Annotations" / "b.xml"
    xml.write_text("<annotation>\n<filename>b.png</filename>\n<object>\n</annotation>")
    with pytest.raises(DatasetError, match=r"b\.xml: malformed XML at line 4"):
        read_voc(tmp_path)
    xml.write_text(voc_xml("b.png", [("cat", (5, 5, "x", 9), 0)]))
    with pytest.raises(DatasetError, match=r"b\.xml: object 0 \('cat'\): field <xmax> is not a number"):
        read_voc(tmp_path)
    xml.write_text(voc_xml("b.png", [("cat", (5, 5, 4, 9), 0)]))
    with pytest.raises(DatasetError, match=r"b\.xml: object 0 \('cat'\) field <bndbox>: zero or negative width"):
        read_voc(tmp_path)
    xml.write_text(voc_xml("zz.png", [("cat", (5, 5, 9, 9), 0)]))
    (tmp_path / "JPEGImages" / "b.png").unlink()
    with pytest.raises(DatasetError, match=r"b\.xml: field <filename>: image file not found: .*zz\.png"):
        read_voc(tmp_path)
    train, _, skipped = read_voc(tmp_path, skip_bad=True)
    assert len(train) == 2 and len(skipped) == 1


# ---- writers + converter -----------------------------------------------------------------


def boxes_by_name(ds: DetectionDataset) -> dict[str, tuple[np.ndarray, list[str]]]:
    out = {}
    for i in range(len(ds)):
        a = ds.annotation(i)
        out[Path(ds.source(i)).stem] = (a["boxes"], [ds.classes[k] for k in a["labels"]])
    return out


def test_round_trip_coco_yolo_voc_coco(tmp_path):
    rng = np.random.default_rng(0)
    anns, imgs, n = [], [], 6
    for i in range(n):
        w, h = int(rng.integers(30, 60)), int(rng.integers(30, 60))
        png(tmp_path / "src" / "images" / f"im{i:02d}.png", w, h, value=10 * i)
        imgs.append({"id": 100 + i, "file_name": f"im{i:02d}.png", "width": w, "height": h})
        for _ in range(int(rng.integers(0, 4))):
            x0, y0 = rng.uniform(0, w - 6), rng.uniform(0, h - 6)
            bw, bh = rng.uniform(1, w - x0), rng.uniform(1, h - y0)
            anns.append({"id": len(anns) + 1, "image_id": 100 + i,
                         "category_id": int(rng.choice([2, 7, 40])), "bbox": [x0, y0, bw, bh]})  # fmt: skip
    cats = [{"id": 2, "name": "ant"}, {"id": 7, "name": "bee"}, {"id": 40, "name": "cow"}]
    src = tmp_path / "src" / "annotations" / "instances_train.json"
    src.parent.mkdir(parents=True)
    for split, keep in (("train", lambda k: k >= 102), ("val", lambda k: k < 102)):
        doc = {"images": [m for m in imgs if keep(m["id"])],
               "annotations": [a for a in anns if keep(a["image_id"])], "categories": cats}  # fmt: skip
        (src.parent / f"instances_{split}.json").write_text(json.dumps(doc))

    original = load_detection_data(tmp_path / "src")
    yolo_yaml = convert(tmp_path / "src", tmp_path / "yolo", to="yolo")
    assert yolo_yaml == tmp_path / "yolo" / "data.yaml"
    voc_dir = convert(yolo_yaml, tmp_path / "voc", to="voc", link=True)
    coco_dir = convert(voc_dir, tmp_path / "coco", to="coco")
    back = load_detection_data(coco_dir)
    assert back.classes == ["ant", "bee", "cow"] and len(back.val) == 2
    for a, b in ((original.train, back.train), (original.val, back.val)):
        ra, rb = boxes_by_name(a), boxes_by_name(b)
        assert sorted(ra) == sorted(rb)
        for stem, (boxes, names) in ra.items():
            assert rb[stem][1] == names
            np.testing.assert_allclose(rb[stem][0], boxes, atol=1e-3)
    # the COCO written by write_coco is pycocotools-valid and points at real files
    js = coco_dir / "annotations" / "instances_train.json"
    c = COCO(str(js))
    assert len(c.getImgIds()) == n - 2
    assert len(c.getAnnIds()) == sum(a["image_id"] >= 102 for a in anns)
    for img in c.dataset["images"]:
        assert (coco_dir / "images" / img["file_name"]).is_file()


def test_writers_from_in_memory_dataset(tmp_path):
    images = np.zeros((2, 16, 24, 3), np.uint8)
    images[1] += 200
    ds = DetectionDataset(images, [{"boxes": [[1, 1, 5, 5]], "labels": [0], "iscrowd": [1]},
                                   {"boxes": [[2.25, 3, 20, 15]], "labels": [1]}],
                          ["a", "b"], name="mem")  # fmt: skip
    js = write_coco(ds, tmp_path / "coco" / "gt.json")
    coco_back, _ = read_coco(js)
    assert coco_back.load(1)[0].float().mean() == 200 and coco_back.load(0)[1]["iscrowd"].tolist() == [1]
    y = write_yolo(ds, tmp_path / "yolo")
    train, val, _ = read_yolo(y)
    assert val is None and train.num_objects() == 1  # YOLO has no crowd flag: left out
    np.testing.assert_allclose(train.load(1)[1]["boxes"].numpy(), [[2.25, 3, 20, 15]], atol=1e-4)
    v_train, _, _ = read_voc(write_voc(ds, tmp_path / "voc"))
    assert v_train.load(0)[1]["iscrowd"].tolist() == [1]  # crowd <-> difficult
    with pytest.raises(ConfigError, match="to='tfrecord'"):
        convert(js, tmp_path / "x", to="tfrecord")
