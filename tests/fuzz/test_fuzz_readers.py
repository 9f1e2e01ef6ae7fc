"""Fuzzing every annotation reader through the public loaders (`load_detection_data`,
`load_segmentation_data`, `load_classification_data`).

Each format has a small valid dataset (a template folder); every example copies it, applies one to
three mutations — arbitrary / mutated bytes in any file, wrong JSON/YAML types in any field (strings
for numbers, nulls, NaN/inf, 10**400, negative or huge ids, unicode paths, missing keys), label-txt /
CSV / list garbage, malformed XML, mask and image PNGs of the wrong size or mode, deleted files or a
folder in a file's place — and calls the loader with and without skip_bad (and strict / kind /
val_fraction drawn), then reads every item. Only `OptikError`s may escape, and their message names
the dataset file at fault (a path under the dataset folder, or the mutated file's name).

Every escape found while building this suite (by the fuzzer, or by reading the readers and then
confirming it as an escape) has a plain regression test at the end of this file that failed before its
fix.
"""

from __future__ import annotations

import json
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from fuzzkit import (
    count,
    dumps,
    examples,
    guarded,
    json_paths,
    mutated_bytes,
    mutated_text,
    nasty_values,
    only_optik_errors,
    scratch_copy,
    set_path,
)
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from PIL import Image

from optik.data.dataset import ClassificationDataset
from optik.data.detection_dataset import DetectionDataset
from optik.data.segmentation_dataset import SegmentationDataset
from optik.data.sources import (
    load_classification_data,
    load_detection_data,
    load_segmentation_data,
)
from optik.errors import OptikError

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

FAST = {"deadline": None,
        "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]}
H, W = 12, 16


# ---- templates: one small valid dataset per format ---------------------------------------------------


def save_rgb(path: Path, value: int = 60, size: tuple[int, int] = (H, W), fmt: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    a = np.full((size[0], size[1], 3), value, np.uint8)
    a[::3, ::2] = 255 - value
    Image.fromarray(a).save(path, format=fmt or "PNG")


def save_index_png(path: Path, a: np.ndarray, palette: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    a = np.asarray(a, np.uint8)
    if palette:
        im = Image.frombytes("P", (a.shape[1], a.shape[0]), a.tobytes())
        im.putpalette([v for k in range(256) for v in (k * 37 % 256, k * 91 % 256, k * 53 % 256)])
    else:
        im = Image.fromarray(a)
    im.save(path)


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def coco_polygons_rle() -> dict:
    from faster_coco_eval.core import mask as mask_utils

    m = np.zeros((H, W), np.uint8, order="F")
    m[2:7, 3:11] = 1
    rle = mask_utils.encode(m)
    return {"rle": {"size": [H, W], "counts": rle["counts"].decode()},
            "unc": {"size": [H, W], "counts": [20, 14, H * W - 34]},
            "poly": [[1, 1, 8, 1, 8, 6, 1, 6], [10, 7, 15, 7, 12, 11]]}  # fmt: skip


def build_coco(root: Path) -> None:
    segs = coco_polygons_rle()
    save_rgb(root / "images" / "a.png", 10)
    save_rgb(root / "images" / "b.png", 90)
    save_rgb(root / "images" / "c.png", 170)
    train = {
        "images": [{"id": 1, "file_name": "a.png", "width": W, "height": H},
                   {"id": 2, "file_name": "b.png"}],
        "categories": [{"id": 3, "name": "cat", "supercategory": "animal"}, {"id": 7, "name": "dog"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 3, "bbox": [1, 1, 7, 5], "area": 35.0, "iscrowd": 0,
             "segmentation": segs["poly"]},
            {"id": 2, "image_id": 1, "category_id": 7, "bbox": [3, 2, 8, 5], "iscrowd": 0,
             "segmentation": segs["rle"]},
            {"id": 3, "image_id": 2, "category_id": 7, "bbox": [0.5, 0.5, 15, 11], "iscrowd": 1,
             "segmentation": segs["unc"]},
        ],
    }  # fmt: skip
    val = {
        "images": [{"id": 9, "file_name": "c.png", "width": W, "height": H}],
        "categories": train["categories"],
        "annotations": [{"id": 4, "image_id": 9, "category_id": 3, "bbox": [2, 2, 4, 4],
                         "segmentation": [[2, 2, 6, 2, 6, 6, 2, 6]]}],
    }  # fmt: skip
    write(root / "annotations" / "instances_train.json", json.dumps(train))
    write(root / "annotations" / "instances_val.json", json.dumps(val))


def build_panoptic(root: Path) -> None:
    cats = [{"id": 1, "name": "person", "isthing": 1}, {"id": 40, "name": "sky", "isthing": 0}]
    images, anns = [], []
    for i in range(2):
        save_rgb(root / "images" / f"{i}.png", 40 + 50 * i)
        seg = np.zeros((H, W), np.int64)
        seg[:4] = 7 + 256 * 3  # sky
        seg[5:10, 2:7] = 5  # person
        seg[5:10, 9:14] = 1000 + 65536 * 2  # crowd person
        rgb = np.stack([seg % 256, seg // 256 % 256, seg // 65536], -1).astype(np.uint8)
        (root / "annotations" / "panoptic_train").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb).save(root / "annotations" / "panoptic_train" / f"{i}.png")
        images.append({"id": 100 + i, "file_name": f"{i}.png", "width": W, "height": H})
        anns.append({"image_id": 100 + i, "file_name": f"{i}.png", "segments_info": [
            {"id": 5, "category_id": 1, "iscrowd": 0, "area": 25, "bbox": [2, 5, 5, 5]},
            {"id": 7 + 256 * 3, "category_id": 40, "iscrowd": 0},
            {"id": 1000 + 65536 * 2, "category_id": 1, "iscrowd": 1}]})  # fmt: skip
    write(root / "annotations" / "panoptic_train.json",
          json.dumps({"images": images, "annotations": anns, "categories": cats}))  # fmt: skip


def build_yolo(root: Path) -> None:
    for split, names in (("train", ("a", "b")), ("val", ("c",))):
        for k, n in enumerate(names):
            save_rgb(root / "images" / split / f"{n}.png", 30 + 60 * k)
    write(root / "labels" / "train" / "a.txt", "0 0.5 0.5 0.25 0.5\n1 0.25 0.25 0.2 0.2\n")
    write(root / "labels" / "train" / "b.txt", "1 0.1 0.1 0.9 0.1 0.9 0.8 0.1 0.8\n")
    write(root / "labels" / "val" / "c.txt", "0 0.4 0.6 0.3 0.3\n")
    write(root / "data.yaml", yaml.safe_dump({"path": ".", "train": "images/train", "val": "images/val",
                                              "nc": 2, "names": ["cat", "dog"]}))  # fmt: skip
    write(root / "train_list.txt", "images/train/a.png\n./images/train/b.png\n")


VOC_XML = """<annotation>
  <folder>VOC</folder><filename>{name}.jpg</filename>
  <size><width>{w}</width><height>{h}</height><depth>3</depth></size>
  <object><name>cat</name><difficult>0</difficult>
    <bndbox><xmin>2</xmin><ymin>2</ymin><xmax>9</xmax><ymax>8</ymax></bndbox></object>
  <object><name>dog</name><difficult>1</difficult>
    <bndbox><xmin>5.5</xmin><ymin>3</ymin><xmax>16</xmax><ymax>12</ymax></bndbox></object>
</annotation>
"""


def build_voc(root: Path) -> None:
    for k, name in enumerate(("2007_a", "2007_b", "2007_c")):
        save_rgb(root / "JPEGImages" / f"{name}.jpg", 40 * k, fmt="JPEG")
        write(root / "Annotations" / f"{name}.xml", VOC_XML.format(name=name, w=W, h=H))
    write(root / "ImageSets" / "Main" / "train.txt", "2007_a\n2007_b\n")
    write(root / "ImageSets" / "Main" / "val.txt", "2007_c\n")
    write(root / "classes.txt", "cat\ndog\n")


def build_voc_seg(root: Path) -> None:
    for k, name in enumerate(("2008_a", "2008_b", "2008_c")):
        save_rgb(root / "JPEGImages" / f"{name}.jpg", 50 * k, fmt="JPEG")
        cls = np.zeros((H, W), np.uint8)
        obj = np.zeros((H, W), np.uint8)
        cls[1:6, 2:8], obj[1:6, 2:8] = 15, 1
        cls[7:11, 9:15], obj[7:11, 9:15] = 12, 2
        cls[6, :], obj[6, :] = 255, 255
        save_index_png(root / "SegmentationClass" / f"{name}.png", cls, palette=True)
        save_index_png(root / "SegmentationObject" / f"{name}.png", obj, palette=True)
    write(root / "ImageSets" / "Segmentation" / "train.txt", "2008_a\n2008_b\n")
    write(root / "ImageSets" / "Segmentation" / "val.txt", "2008_c\n")


def build_masks(root: Path) -> None:
    rng = np.random.default_rng(0)
    for k in range(3):
        save_rgb(root / "images" / f"m{k}.png", 20 + 70 * k)
        a = rng.integers(0, 3, (H, W)).astype(np.uint8)
        a[0, :4] = 255
        save_index_png(root / "masks" / f"m{k}.png", a, palette=k == 1)
    write(root / "classes.txt", "road\ncar\nsky\n")


def build_masks_colour(root: Path) -> None:
    colours = [[0, 0, 0], [255, 0, 0], [0, 0, 255]]
    rng = np.random.default_rng(1)
    for split in ("train", "val"):
        for k in range(2):
            save_rgb(root / split / "images" / f"{split}{k}.png", 30 + 90 * k)
            idx = rng.integers(0, 3, (H, W))
            rgb = np.asarray(colours, np.uint8)[idx]
            rgb[0, 0] = (255, 255, 255)  # void
            (root / split / "masks").mkdir(parents=True, exist_ok=True)
            Image.fromarray(rgb).save(root / split / "masks" / f"{split}{k}.png")
    write(root / "classes.yaml", yaml.safe_dump({"names": ["bg", "red", "blue"], "colors": colours,
                                                 "void_color": [255, 255, 255]}))  # fmt: skip


def build_csv(root: Path) -> None:
    rows = ["path,label,split"]
    for k, (name, label, split) in enumerate([("a", "cat", "train"), ("b", "dog", "train"),
                                              ("c", "cat", "val"), ("d", "dog", "val")]):  # fmt: skip
        save_rgb(root / "images" / f"{name}.png", 40 * k)
        rows.append(f"images/{name}.png,{label},{split}")
    write(root / "labels.csv", "\n".join(rows) + "\n")
    write(root / "classes.txt", "cat\ndog\n")


def build_imagefolder(root: Path) -> None:
    for split in ("train", "val"):
        for k, cls in enumerate(("cat", "dog")):
            save_rgb(root / split / cls / f"{split}_{k}.png", 50 * k)
            if split == "train":
                save_rgb(root / split / cls / f"x{k}.jpg", 20 * k, fmt="JPEG")


@dataclass
class Format:
    build: Callable[[Path], None]
    task: str  # detect | segment | classify
    specs: list[str]  # relative to the root ("." = the folder)
    kinds: list[str | None] = field(default_factory=lambda: [None])  # segmentation kind= values


FORMATS: dict[str, Format] = {
    "coco-det": Format(build_coco, "detect", ["annotations/instances_train.json", "."]),
    "coco-seg": Format(build_coco, "segment", ["annotations/instances_train.json", "."],
                       [None, "instance"]),
    "coco-panoptic": Format(build_panoptic, "segment", ["annotations/panoptic_train.json", "."],
                            [None, "semantic", "instance", "panoptic"]),
    "yolo": Format(build_yolo, "detect", ["data.yaml", "."]),
    "voc": Format(build_voc, "detect", ["."]),
    "voc-seg": Format(build_voc_seg, "segment", ["."], [None, "semantic", "instance"]),
    "masks": Format(build_masks, "segment", ["."]),
    "masks-colour": Format(build_masks_colour, "segment", ["."]),
    "csv": Format(build_csv, "classify", ["labels.csv"]),
    "imagefolder": Format(build_imagefolder, "classify", ["."]),
}  # fmt: skip


@pytest.fixture(scope="module")
def templates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = {}
    for name, fmt in FORMATS.items():
        root = tmp_path_factory.mktemp("tpl") / f"{name} ü日本"  # unicode and a space in every path
        root.mkdir()
        fmt.build(root)
        out[name] = root
        check_template(name, root)
    return out


def check_template(name: str, root: Path) -> None:
    """The unmutated template loads cleanly (else the fuzzing proves nothing)."""
    fmt = FORMATS[name]
    for spec in fmt.specs:
        for kind in fmt.kinds:
            data = load(fmt, root, spec, skip_bad=False, strict=True, kind=kind, val_fraction=0.0)
            assert len(data.train) >= 1 and not data.skipped, (name, spec, kind)
            exercise(data)


def load(fmt: Format, root: Path, spec: str, *, skip_bad: bool, strict: bool, kind: str | None,
         val_fraction: float) -> Any:  # fmt: skip
    target = str(root if spec == "." else root / spec)
    if fmt.task == "detect":
        return load_detection_data(target, skip_bad=skip_bad, strict=strict, val_fraction=val_fraction)
    if fmt.task == "segment":
        return load_segmentation_data(target, skip_bad=skip_bad, kind=kind, val_fraction=val_fraction)
    return load_classification_data(target, skip_bad=skip_bad, val_fraction=val_fraction)


def exercise(data: Any) -> None:
    """Read every item the loader promised (decoding happens here, lazily)."""
    for ds in (data.train, data.val):
        if ds is None:
            continue
        for i in range(len(ds)):
            item = ds[i]
            if isinstance(ds, ClassificationDataset):
                img, label = item
                assert 0 <= label < len(ds.classes)
            else:
                img, target = item
                assert img.dtype.is_floating_point is False and img.shape[0] == 3
            if isinstance(ds, SegmentationDataset):
                t = ds.load_target(i)
                if "semantic" in t:
                    sem = t["semantic"]
                    assert sem.shape == img.shape[1:]
                    bad = (sem >= len(ds.classes)) & (sem != 255)
                    assert not bool(bad.any()), "class index out of range reached a target"
                if "masks" in t:
                    assert t["masks"].shape[1:] == img.shape[1:]
                    assert len(t["labels"]) == len(t["masks"]) == len(t["boxes"])
            if isinstance(ds, DetectionDataset):
                b = target["boxes"]
                assert bool(np.isfinite(b.numpy()).all())
                assert len(b) == len(target["labels"])
        if isinstance(ds, DetectionDataset):
            ds.to_coco()


# ---- mutations -------------------------------------------------------------------------------------------


def file_kind(path: Path) -> str:
    s = path.suffix.lower()
    if s == ".json":
        return "json"
    if s in (".yaml", ".yml"):
        return "yaml"
    if s == ".xml":
        return "xml"
    if s in (".png", ".jpg", ".jpeg"):
        parts = set(path.parts)
        if parts & {"masks", "SegmentationClass", "SegmentationObject", "panoptic_train"}:
            return "mask"
        return "image"
    return "text"


def image_variant(draw: st.DrawFn) -> bytes:
    """A decodable image of a random size, mode and file format (whatever the file's extension)."""
    import io

    h = draw(st.sampled_from([H, 1, 2, H + 1, 7, 500]))
    w = draw(st.sampled_from([W, 1, 3, W - 1, 500]))
    if h * w > 6000:
        h, w = (1, w) if h > w else (h, 1)
    mode = draw(st.sampled_from(["L", "P", "1", "LA", "RGB", "RGBA", "I;16", "I", "F", "CMYK"]))
    hi = draw(st.sampled_from([2, 4, 256, 65536, 2**31 - 1]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    vals = rng.integers(0, hi, (h, w), dtype=np.int64)
    if draw(st.booleans()):
        vals[:] = draw(st.sampled_from([0, 1, 254, 255, 256, 65535, 2**31 - 1, -1]))
    if mode in ("L", "P"):
        im = Image.frombytes(mode, (w, h), (vals % 256).astype(np.uint8).tobytes())
        if mode == "P":
            im.putpalette(list(range(256)) * 3)
    elif mode == "1":
        im = Image.fromarray((vals % 2).astype(bool))
    elif mode == "I;16":
        im = Image.fromarray((vals % 65536).astype(np.uint16))
    elif mode == "I":
        im = Image.fromarray(vals.astype(np.int32))
    elif mode == "F":
        im = Image.fromarray(vals.astype(np.float32) * draw(st.sampled_from([1.0, -1.0, float("nan")])))
    else:
        base = Image.fromarray(np.repeat((vals % 256).astype(np.uint8)[..., None], 4, 2))
        im = base.convert(mode)
    fmt = draw(st.sampled_from(["PNG", "PNG", "TIFF", "BMP", "GIF", "JPEG"]))
    buf = io.BytesIO()
    try:
        im.save(buf, fmt)
    except (OSError, ValueError, KeyError):
        buf = io.BytesIO()
        im.convert("RGB").save(buf, "PNG")
    return buf.getvalue()


def mutate_json(draw: st.DrawFn, text: str) -> str:
    try:
        doc = json.loads(text)
    except ValueError:  # an earlier edit broke it: edit it as text
        return draw(mutated_text(text))
    for _ in range(draw(st.integers(1, 3))):
        paths = json_paths(doc)
        path = draw(st.sampled_from(paths))
        action = draw(st.sampled_from(["set", "set", "set", "delete", "dup", "wrong_container"]))
        if action == "delete" and path:
            doc = set_path(doc, path, None, delete=True)
        elif action == "dup" and path and isinstance(parent := _get(doc, path[:-1]), list):
            parent.append(json.loads(json.dumps(_get(doc, path), allow_nan=True)))
        elif action == "wrong_container":
            doc = set_path(doc, path, draw(st.sampled_from([[], {}, [[]], {"id": 1}, "", 0])))
        else:
            doc = set_path(doc, path, draw(nasty_values(depth=1)))
    out = dumps(doc)
    if draw(st.integers(0, 9)) == 0:  # truncated JSON
        out = out[: draw(st.integers(0, max(len(out) - 1, 0)))]
    return out


def _get(doc: Any, path: tuple) -> Any:
    for k in path:
        doc = doc[k]
    return doc


def mutate_yaml(draw: st.DrawFn, text: str) -> str:
    try:
        doc = yaml.safe_load(text)
    except Exception:  # noqa: BLE001 - an earlier edit broke it: edit it as text
        return draw(mutated_text(text))
    if draw(st.booleans()):
        return draw(mutated_text(text))
    for _ in range(draw(st.integers(1, 2))):
        path = draw(st.sampled_from(json_paths(doc)))
        if path and draw(st.booleans()):
            doc = set_path(doc, path, None, delete=True)
        else:
            doc = set_path(doc, path, draw(nasty_values(depth=1)))
    try:
        return yaml.safe_dump(doc, allow_unicode=True)
    except (yaml.YAMLError, ValueError):
        return text


def mutate_xml(draw: st.DrawFn, text: str) -> str:
    try:
        root = ET.fromstring(text)
    except ET.ParseError:  # an earlier edit broke it: edit it as text
        root = None
    if root is None or draw(st.integers(0, 3)) == 0:
        return draw(mutated_text(text))
    nodes = list(root.iter())
    for _ in range(draw(st.integers(1, 3))):
        node = draw(st.sampled_from(nodes))
        action = draw(st.sampled_from(["text", "text", "remove", "dup", "child"]))
        if action == "text":
            node.text = str(draw(st.one_of(st.sampled_from(["", " ", "nan", "inf", "-inf", "1e999", "-5",
                                                            "abc", "0", "1e308", "2.5", "ü/../x",
                                                            "99999999999999999999", "x" * 300]),
                                           st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")),
                                                   max_size=10)))).strip() or None  # fmt: skip
        elif action == "remove":
            for parent in root.iter():
                if node in list(parent):
                    parent.remove(node)
                    break
        elif action == "dup" and node is not root:
            for parent in root.iter():
                if node in list(parent):
                    parent.append(ET.fromstring(ET.tostring(node)))
                    break
        else:
            ET.SubElement(node, draw(st.sampled_from(["object", "name", "bndbox", "size", "xmin", "filename"])))
    return ET.tostring(root, encoding="unicode")


@st.composite
def mutations(draw: st.DrawFn, files: list[Path]) -> list[tuple[str, str]]:
    """1..3 (relative path, action) edits of the template's files (the action's details are drawn
    when it is applied)."""
    out = []
    for _ in range(draw(st.integers(1, 3))):
        rel = draw(st.sampled_from(files))
        kind = file_kind(rel)
        actions = ["bytes", "delete", "dir"]
        actions += {"json": ["json"] * 6, "yaml": ["yaml"] * 4, "xml": ["xml"] * 4,
                    "image": ["image"] * 2, "mask": ["image"] * 4, "text": ["text"] * 4}[kind]  # fmt: skip
        out.append((str(rel), draw(st.sampled_from(actions))))
    return out


def apply(draw: st.DrawFn, root: Path, rel: str, action: str) -> None:
    path = root / rel
    if not path.is_file():
        return  # deleted or replaced by an earlier edit
    if action == "delete":
        path.unlink()
    elif action == "dir":
        path.unlink()
        path.mkdir()
    elif action == "bytes":
        path.write_bytes(draw(mutated_bytes(path.read_bytes())))
    elif action == "image":
        path.write_bytes(image_variant(draw))
    else:
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            return
        new = {"json": mutate_json, "yaml": mutate_yaml, "xml": mutate_xml,
               "text": lambda d, t: d(mutated_text(t))}[action](draw, text)  # fmt: skip
        path.write_text(new, encoding="utf-8", errors="surrogatepass")


def template_files(root: Path) -> list[Path]:
    return sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())


def check_mutated(fmt_name: str, template: Path, data: st.DataObject) -> None:
    fmt = FORMATS[fmt_name]
    files = template_files(template)
    edits = data.draw(mutations(files), label="edits")
    spec = data.draw(st.sampled_from(fmt.specs), label="spec")
    kind = data.draw(st.sampled_from(fmt.kinds), label="kind")
    skip_bad = data.draw(st.booleans(), label="skip_bad")
    strict = data.draw(st.booleans(), label="strict")
    val_fraction = data.draw(st.sampled_from([0.0, 0.2, 0.5]), label="val_fraction")
    with scratch_copy(template) as root:
        for rel, action in edits:
            apply(data.draw, root, rel, action)
        names = [str(root), *{Path(rel).name for rel, _ in edits}]
        what = f"{fmt_name} {spec} kind={kind} skip_bad={skip_bad} edits={edits}"
        with guarded():
            out = only_optik_errors(
                lambda: load(fmt, root, spec, skip_bad=skip_bad, strict=strict, kind=kind,
                             val_fraction=val_fraction),
                names=names, what=what,
            )  # fmt: skip
            if not isinstance(out, OptikError):
                only_optik_errors(lambda: exercise(out), names=names, what=what + " (items)")


BUDGET = {"coco-det": 70, "coco-seg": 70, "coco-panoptic": 60, "yolo": 70, "voc": 60, "voc-seg": 50,
          "masks": 45, "masks-colour": 40, "csv": 45, "imagefolder": 30}  # fmt: skip


def _fuzz_test(fmt_name: str) -> Callable:
    @settings(max_examples=examples(BUDGET[fmt_name]), **FAST)
    @given(data=st.data())
    def test(templates, data):
        count(f"reader:{fmt_name}")
        check_mutated(fmt_name, templates[fmt_name], data)

    test.__name__ = f"test_fuzz_{fmt_name.replace('-', '_')}"
    return test


for _name in FORMATS:
    globals()[f"test_fuzz_{_name.replace('-', '_')}"] = _fuzz_test(_name)


# ---- escapes found, one plain test each (each failed before its fix) ----------------------------------


def _tiff_i32(value: int, size: tuple[int, int] = (H, W)) -> bytes:
    """A 32-bit integer image (TIFF bytes: a .png name does not stop PIL from reading it)."""
    import io

    buf = io.BytesIO()
    Image.fromarray(np.full(size, value, np.int32)).save(buf, "TIFF")
    return buf.getvalue()


def _png_bomb_header() -> bytes:
    from test_fuzz_decoder import png_header

    return png_header(65535, 65535)


def _edit_json(rel: str, fn: Callable[[dict], None]) -> Callable[[Path], None]:
    def edit(root: Path) -> None:
        doc = json.loads((root / rel).read_text())
        fn(doc)
        (root / rel).write_text(dumps(doc))

    return edit


def _prepend(rel: str, data: bytes) -> Callable[[Path], None]:
    return lambda root: (root / rel).write_bytes(data + (root / rel).read_bytes())


def _write(rel: str, data: bytes | str) -> Callable[[Path], None]:
    def edit(root: Path) -> None:
        (root / rel).write_bytes(data if isinstance(data, bytes) else data.encode())

    return edit


def _set(path: tuple, value: Any) -> Callable[[dict], None]:
    return lambda doc: set_path(doc, path, value)


COCO = "annotations/instances_train.json"
PAN = "annotations/panoptic_train.json"
# name: (format, edit, segmentation kind, expected message (regex) or None: loads[, spec]); the
# comment under each entry says what escaped before the fix
FOUND: dict[str, tuple] = {
    "coco-json-not-utf8": ("coco-det", _prepend(COCO, b"\x80"), None, r"instances_train.json: not UTF-8"),
    # UnicodeDecodeError
    "panoptic-json-not-utf8": ("coco-panoptic", _prepend(PAN, b"\xff"), None, r"panoptic_train.json: not UTF-8"),
    # UnicodeDecodeError
    "coco-file-name-too-long": ("coco-det", _edit_json(COCO, _set(("images", 0, "file_name"), "x" * 300 + ".png")),
                                None, r"instances_train.json: image 'x+\.png' .*image file not found"),
    # OSError: [Errno 36] File name too long
    "coco-bbox-10e400": ("coco-det", _edit_json(COCO, _set(("annotations", 0, "bbox", 2), 10**400)), None,
                         r"annotation id 1 .* field 'bbox'"),
    # OverflowError: int too large to convert to float
    "coco-image-id-2e70": ("coco-det", _edit_json(COCO, lambda d: (d["images"][0].update(id=2**70),
                                                                   d["annotations"][0].update(image_id=2**70),
                                                                   d["annotations"][1].update(image_id=2**70))),
                           None, r"images\[0\]: field 'id': .* outside the 64-bit"),
    # accepted; then OverflowError ("Python int too large to convert to C long") in the detection metric
    "coco-declared-size-bomb": ("coco-seg", _edit_json(COCO, lambda d: d["images"][0].update(width=10**6, height=10**6)),
                                None, r"image 'a.png' \(id 1\): field 'width'/'height': 1000000x1000000"),
    # masks rasterised at 10^12 pixels: MemoryError / OOM
    "coco-rle-early-end": ("coco-seg", _edit_json(COCO, _set(("annotations", 1, "segmentation", "counts"), "P")),
                           None, r"annotation id 2 .* field 'segmentation': compressed RLE 'counts' ends"),
    # RuntimeError: RLE string is malformed: early end
    "coco-rle-short": ("coco-seg", _edit_json(COCO, _set(("annotations", 1, "segmentation", "counts"), "12")),
                       "instance", r"annotation id 2 .* field 'segmentation': RLE 'counts' cover 3 pixels"),
    # ValueError from faster_coco_eval's decode when the item was read
    "coco-polygon-nan": ("coco-seg", _edit_json(COCO, _set(("annotations", 0, "segmentation", 0, 0), float("nan"))),
                         None, r"annotation id 1 .* field 'segmentation': polygon 0: coordinates must be finite"),
    # the C rasteriser allocated without bound: the process was OOM-killed
    "coco-polygon-1e12": ("coco-seg", _edit_json(COCO, _set(("annotations", 0, "segmentation", 0, 2), 1e12)),
                          None, r"annotation id 1 .* polygon 0: a point lies far outside the 16x12 image"),
    # the C rasteriser ran (and allocated) for minutes
    "coco-uncompressed-rle-negative": ("coco-seg", _edit_json(COCO, _set(("annotations", 2, "segmentation", "counts"),
                                                                       [-5, 39, H * W - 34])),
                                       None, r"annotation id 3 .* RLE 'counts' has a negative run"),
    # RuntimeError: Unable to cast Python instance of type <class 'list'>
    "coco-rle-size-nulls": ("coco-seg", _edit_json(COCO, _set(("annotations", 1, "segmentation", "size"), [None, None])),
                            None, r"annotation id 2 .* RLE size \[None, None\] differs"),
    # TypeError: int() argument must be ... not 'NoneType'
    "panoptic-annotations-dict": ("coco-panoptic", lambda r: (r / "annotations/pan.json").write_text(
                                      json.dumps({"images": [], "categories": [], "annotations": {"0": 1}})),
                                  None, r"pan.json: field 'annotations' must be a list", "annotations/pan.json"),
    # KeyError: 0 (is_panoptic_json, for a JSON not named panoptic_*.json)
    "panoptic-segments-info-int": ("coco-panoptic", _edit_json(PAN, _set(("annotations", 0, "segments_info"), 5)),
                                   None, r"annotations\[0\] .*field 'segments_info' must be a list"),
    # TypeError: 'int' object is not iterable
    "panoptic-segments-info-items": ("coco-panoptic", _edit_json(PAN, _set(("annotations", 0, "segments_info"), [1])),
                                     None, r"field 'segments_info'\[0\] must be an object"),
    # AttributeError: 'int' object has no attribute 'get'
    "panoptic-png-bomb": ("coco-panoptic", lambda r: (r / "annotations/panoptic_train/0.png").write_bytes(_png_bomb_header()),
                          None, r"0.png: cannot read image header \(DecompressionBombError"),
    # PIL.Image.DecompressionBombError (image_size)
    "yolo-yaml-not-utf8": ("yolo", _prepend("data.yaml", b"\xfe"), None, r"data.yaml: data.yaml is not UTF-8"),
    # UnicodeDecodeError
    "yolo-names-float-key": ("yolo", _write("data.yaml", "train: images/train\nnames: {0: cat, 1.5: dog}\n"), None,
                             r"data.yaml: field 'names': keys must be class ids"),
    # KeyError: 1
    "yolo-path-unknown-user": ("yolo", _write("data.yaml", "path: ~no_such_user_optik/x\ntrain: images/train\n"
                                                           "names: [cat, dog]\n"), None,
                               r"data.yaml: field 'train': .* is not a folder"),
    # RuntimeError: Could not determine home directory
    "yolo-image-list-not-utf8": ("yolo", lambda r: (_write("data.yaml", "train: train_list.txt\nnames: [a, b]\n")(r),
                                                    _prepend("train_list.txt", b"\xff")(r)),
                                 None, r"train_list.txt: image list is not UTF-8"),
    # UnicodeDecodeError
    "voc-width-inf": ("voc", lambda r: (r / "Annotations/2007_a.xml").write_text(
                          VOC_XML.format(name="2007_a", w="inf", h=H)), None, None),
    # OverflowError: cannot convert float infinity to integer (now: size read from the image)
    "voc-difficult-text": ("voc", lambda r: (r / "Annotations/2007_b.xml").write_text(
                               VOC_XML.format(name="2007_b", w=W, h=H).replace("<difficult>1<", "<difficult>abc<")),
                           None, r"2007_b.xml: object 1 \('dog'\): field <difficult> must be 0 or 1"),
    # ValueError: could not convert string to float: 'abc'
    "voc-xml-unknown-encoding": ("voc", _write("Annotations/2007_a.xml", '<?xml version="1.0" encoding="x-nope"?>'
                                                                       "<annotation/>"),
                                 None, r"2007_a.xml: cannot read XML \(LookupError"),
    # LookupError: unknown encoding: x-nope
    "voc-imagesets-not-utf8": ("voc", _prepend("ImageSets/Main/train.txt", b"\xff"), None,
                               r"train.txt: image id list is not UTF-8"),
    # UnicodeDecodeError
    "voc-classes-not-utf8": ("voc", _prepend("classes.txt", b"\xff"), None, r"classes.txt: class list is not UTF-8"),
    # UnicodeDecodeError
    "voc-seg-object-ids-2e31": ("voc-seg", _write("SegmentationObject/2008_a.png", _tiff_i32(2**31 - 1)), "instance",
                                r"SegmentationObject/2008_a.png: field 'mask': values 2147483647"),
    # a dense id table of 2**31 entries: MemoryError (16 GiB)
    "masks-index-2e31-no-classes": ("masks", lambda r: ((r / "classes.txt").unlink(),
                                                        _write("masks/m0.png", _tiff_i32(2**31 - 1))(r)),
                                    None, r"m0.png: field 'mask': values 2147483647..2147483647"),
    # a class list of 2**31 names: hang, then MemoryError
    "masks-index-300-no-classes": ("masks", lambda r: ((r / "classes.txt").unlink(),
                                                       _write("masks/m1.png", _tiff_i32(300))(r)),
                                   None, r"m1.png: field 'mask': class index 300 > 254"),
    # "masks:train: 301 classes" named no file
    "masks-negative-index": ("masks", _write("masks/m2.png", _tiff_i32(-1)), None,
                             r"m2.png: field 'mask': values -1..-1"),
    # silently wrapped to 255 (void): the labels were lost
    "masks-yaml-mixed-keys": ("masks-colour", _write("classes.yaml", "names: {0: bg, x: red, 2: blue}\n"), None,
                              r"classes.yaml: field 'names': keys must be class indices"),
    # TypeError: '<' not supported between instances of 'str' and 'int'
    "csv-not-utf8": ("csv", _prepend("labels.csv", b"\xff"), None, r"labels.csv: not UTF-8"),
    # UnicodeDecodeError
    "csv-huge-field": ("csv", _write("labels.csv", "path,label\n" + "x" * 200_000 + ",cat\n"), None,
                       r"labels.csv: malformed CSV \(field larger than field limit"),
    # _csv.Error: field larger than field limit (131072)
    "csv-classes-not-utf8": ("csv", _prepend("classes.txt", b"\xe3"), None, r"classes.txt: class list is not UTF-8"),
    # UnicodeDecodeError (found by the fuzzer: edits=[('classes.txt', 'bytes', 0)])
    "yolo-duplicate-names": ("yolo", _write("data.yaml", "names:\n- dog\n- dog\nnc: 2\npath: .\ntrain: images/train\nval: images/val\n"),
                             None, r"data.yaml: field 'names': duplicate class names \['dog'\]"),
    # "yolo:train: duplicate class names" named no file (found by the fuzzer: edits=[('data.yaml', 'yaml')])
}  # fmt: skip


# One bad item (annotation, mask, image): skip_bad=true skips it, counted in `.skipped` (logged once by
# the loader); the rest are problems of a whole file (JSON, YAML, CSV, list, class list), still errors.
SKIPPABLE = {"coco-bbox-10e400", "coco-file-name-too-long", "coco-polygon-1e12", "coco-polygon-nan",
             "coco-rle-early-end", "coco-rle-short", "coco-rle-size-nulls", "coco-uncompressed-rle-negative",
             "masks-index-2e31-no-classes", "masks-index-300-no-classes", "masks-negative-index",
             "panoptic-png-bomb", "voc-seg-object-ids-2e31"}  # fmt: skip


@pytest.mark.parametrize("name", sorted(FOUND))
@pytest.mark.parametrize("skip_bad", [False, True])
def test_escape_regression(templates, name, skip_bad):
    count("reader:regressions", plain=True)
    fmt_name, edit, kind, pattern, *spec = FOUND[name]
    fmt = FORMATS[fmt_name]
    with scratch_copy(templates[fmt_name]) as root:
        edit(root)
        with guarded():
            out = only_optik_errors(lambda: load(fmt, root, (spec or fmt.specs)[0], skip_bad=skip_bad, strict=False,
                                                 kind=kind, val_fraction=0.0),
                                    names=[str(root)], what=name)  # fmt: skip
            if not isinstance(out, OptikError):
                only_optik_errors(lambda: exercise(out), names=[str(root)], what=name)
        if pattern is None:
            assert not isinstance(out, OptikError), out
        elif skip_bad and name in SKIPPABLE:
            assert not isinstance(out, OptikError), out
            assert len(out.skipped) == 1 and str(root) in " ".join(out.skipped[0]), out.skipped
        else:
            assert isinstance(out, OptikError), f"{name}: loaded"
            assert re.search(pattern, str(out)), str(out)


# ---- the data= value itself -------------------------------------------------------------------------------

LOADERS = (load_detection_data, load_segmentation_data, load_classification_data)
# Former escapes in optik/data/sources.py (`resolve_source`): pathlib raising from expanduser / exists.
SOURCES_ESCAPES = {
    "unknown-user": "~no_such_user_optik/data",  # RuntimeError: Could not determine home directory.
    "name-too-long": "x" * 300,  # OSError: [Errno 36] File name too long (Path.exists)
}


@pytest.mark.parametrize("case", sorted(SOURCES_ESCAPES))
@pytest.mark.parametrize("loader", LOADERS, ids=lambda f: f.__name__)
def test_data_spec_escapes_in_sources(loader, case):
    count("sources:spec", plain=True)
    only_optik_errors(lambda: loader(SOURCES_ESCAPES[case]), what=case)


@pytest.fixture(scope="module")
def empty_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("empty")


@settings(max_examples=examples(40), **FAST)
@given(spec=st.one_of(st.text(alphabet="~/.\\x\x00 :?=&ü-_", max_size=300), st.text(max_size=40)),
       loader=st.sampled_from(LOADERS))  # fmt: skip
def test_fuzz_data_spec(empty_dir, spec, loader):
    """Arbitrary `data=` strings (relative to an empty folder): a missing path, a bad synthetic
    name or parameter, never a traceback."""
    count("sources:spec")
    assume("synthetic" not in spec)  # generators: covered by tests/data/test_data_sources.py
    cwd = os.getcwd()
    os.chdir(empty_dir)
    try:
        with guarded():
            only_optik_errors(lambda: loader(spec), what=repr(spec))
    finally:
        os.chdir(cwd)
