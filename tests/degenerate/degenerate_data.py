"""The degenerate datasets and predict inputs of the degenerate-case suite, written to disk in formats optik
reads — one writer per *data kind* (``Task.data_kind``), never per task:

* ``classification`` — ImageFolder class folders, or a ``path,label`` CSV;
* ``detection`` / ``instance`` — COCO JSON (polygons; crowd regions as ``iscrowd=1`` uncompressed RLE);
* ``semantic`` — a mask-PNG folder (``images/``, ``masks/``, ``classes.txt``; unpainted pixels are void, 255);
* ``panoptic`` — COCO panoptic (``annotations/panoptic_train.json`` + segment-id PNGs + ``images/``).

Every writer takes a case of :data:`TRAIN_CASES` and returns the ``data=`` value and one image of the set
(to predict on), or raises :class:`NotApplicable` for a case its kind cannot express (no crowd flag in a
class folder). A task of a new data kind makes :func:`writer_for` fail with "add a writer for data kind …".

Scenes are a few coloured rectangles (one colour per class) on noise, 32×32, so a 1-step model sees real
structure and every annotation can be drawn exactly.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

SIZE = 32
N_IMAGES = 8  # val_fraction 0.2 → 1–2 val images, the rest train

#: Cases that change the training data: each is trained for 1 step and run through the whole pipeline.
TRAIN_CASES = ("base", "one_class", "class_one_image", "unannotated_image", "val_without_annotations", "crowd_only",
               "empty_category", "grayscale", "odd_sizes", "last_batch_of_one")  # fmt: skip
#: Train keys a case sets besides the suite's (``last_batch_of_one``: 3 training images in batches of 2).
CASE_TRAIN_KEYS: dict[str, dict[str, str]] = {"last_batch_of_one": {"batch": "2"}}
#: ``odd_sizes``: training / val images of 1×1, 8×8, 3×500 and 500×3 pixels among ordinary ones.
ODD_SIZES = [(1, 1), (8, 8), (3, 500), (500, 3)]


#: Clean refusals the suite expects at train / val, per (data kind, case) → a fragment of the one-line error. Any
#: other refusal of a training case fails: the data of every case is valid, a reader must take it or say why here.
EXPECTED_REFUSALS: dict[tuple[str, str], str] = {
    # An ImageFolder class folder without images is refused, as torchvision's ImageFolder does.
    ("classification", "empty_category"): "class folder has no images",
}


class NotApplicable(Exception):
    """The case cannot be expressed in this data kind (the suite skips it, naming the reason)."""


class MissingWriter(LookupError):
    """A catalog task declares a data kind no writer here produces."""


@dataclass
class Obj:
    label: int  # index into the scene's classes
    box: tuple[int, int, int, int]  # x, y, w, h (pixels)
    crowd: bool = False


@dataclass
class Scene:
    """A case as images of rectangles: ``classes``, per image its objects, and whether images are gray."""

    classes: list[str]
    images: list[list[Obj]] = field(default_factory=list)
    gray: bool = False
    sizes: dict[int, tuple[int, int]] = field(default_factory=dict)  # image index → (h, w); default SIZE × SIZE
    val: list[int] | None = None  # the val split, written as one; None: one set, split by optik (val_fraction)

    def size(self, i: int) -> tuple[int, int]:
        return self.sizes.get(i, (SIZE, SIZE))


COLOURS = [(220, 40, 40), (40, 200, 60), (40, 60, 220), (220, 200, 40)]


def _boxes(i: int, n: int) -> list[tuple[int, int, int, int]]:
    """``n`` non-overlapping boxes in image ``i`` (positions vary with ``i``)."""
    out = []
    for k in range(n):
        x, y = 2 + 16 * k + (i % 3), 3 + (i * 5) % 12
        out.append((x, y, 10 + i % 3, 10 + (i + k) % 5))  # inside 32 × 32
    return out


def scene(case: str) -> Scene:
    """The object layout of ``case`` (see :data:`TRAIN_CASES`)."""
    two = ["a", "b"]
    if case in ("base", "grayscale"):
        return Scene(two, [[Obj(k, b) for k, b in enumerate(_boxes(i, 2))] for i in range(N_IMAGES)], gray=case == "grayscale")
    if case == "one_class":
        return Scene(["a"], [[Obj(0, b) for b in _boxes(i, 1 + i % 2)] for i in range(N_IMAGES)])
    if case == "class_one_image":  # class "b" is in image 0 only
        return Scene(two, [[Obj(0, _boxes(i, 2)[0])] + ([Obj(1, _boxes(i, 2)[1])] if i == 0 else []) for i in range(N_IMAGES)])
    if case == "unannotated_image":  # image 0 has no annotation at all
        s = scene("base")
        s.images[0] = []
        return s
    if case == "val_without_annotations":  # an explicit val split of images without any annotation
        s = scene("base")
        s.val = [N_IMAGES - 2, N_IMAGES - 1]
        for i in s.val:
            s.images[i] = []
        return s
    if case == "last_batch_of_one":  # 3 training images, 1 val image: with batch=2 the last batch holds one image
        s = scene("base")
        s.images, s.val = s.images[:4], [3]
        return s
    if case == "crowd_only":  # image 0's only annotation is a crowd region
        s = scene("base")
        s.images[0] = [Obj(0, _boxes(0, 1)[0], crowd=True)]
        return s
    if case == "empty_category":  # class "c" is declared but never annotated
        s = scene("base")
        s.classes = ["a", "b", "c"]
        return s
    if case == "odd_sizes":  # one object over the middle of each odd image (at least 1 px)
        s = scene("base")
        for i, (h, w) in enumerate(ODD_SIZES):
            s.sizes[i] = (h, w)
            s.images[i] = [Obj(i % 2, (w // 4, h // 4, max(1, w // 2), max(1, h // 2)))]
        return s
    raise KeyError(case)


def render(s: Scene, i: int, seed: int = 0) -> np.ndarray:
    """Image ``i`` of ``s``: (H, W, 3) uint8, or (H, W) for a gray scene."""
    rng = np.random.default_rng(seed * 1000 + i)
    img = rng.integers(60, 140, (*s.size(i), 3), dtype=np.uint8)
    for o in s.images[i]:
        x, y, w, h = o.box
        img[y : y + h, x : x + w] = COLOURS[o.label % len(COLOURS)]
    return np.asarray(Image.fromarray(img).convert("L")) if s.gray else img


def save_images(s: Scene, folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(len(s.images)):
        p = folder / f"img{i}.png"
        Image.fromarray(render(s, i)).save(p)
        paths.append(p)
    return paths


def object_mask(o: Obj, size: tuple[int, int] = (SIZE, SIZE)) -> np.ndarray:
    m = np.zeros(size, bool)
    x, y, w, h = o.box
    m[y : y + h, x : x + w] = True
    return m


def uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE (column-major runs, starting with a run of zeros)."""
    flat = mask.T.ravel().astype(np.uint8)
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    if flat[0]:
        runs = [0] + runs
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": [int(r) for r in runs]}


# --- writers, one per data kind -----------------------------------------------------------------------------
Written = tuple[str, Path]  # (data= value, one image of the set)
Writer = Callable[[str, Path], Written]


def write_classification(case: str, root: Path) -> Written:
    """ImageFolder class folders (``base``, ``class_one_image``, ``empty_category``: an empty class folder) or a
    ``path,label`` CSV (``one_class``, ``grayscale``). A class folder holds no box, so the annotation cases
    (an image without annotation, crowd) do not apply."""
    if case in ("unannotated_image", "val_without_annotations", "crowd_only"):
        raise NotApplicable(f"classification data has one label per image: no '{case}'")
    s = scene(case)
    used = 1 if case == "one_class" else 2  # empty_category: class "c" gets no image
    n = len(s.images)
    labels = [1 if i == 0 else 0 for i in range(n)] if case == "class_one_image" else [i % used for i in range(n)]
    s.images = [[Obj(lab, _boxes(i, 1)[0])] for i, lab in enumerate(labels)]  # the image shows its class
    if case in ("one_class", "grayscale"):
        paths = save_images(s, root / "images")
        lines = ["path,label"] + [f"images/{p.name},{s.classes[lab]}" for p, lab in zip(paths, labels)]
        (root / "labels.csv").write_text("\n".join(lines) + "\n")
        return str(root / "labels.csv"), paths[0]
    first = None
    for name, idx in split(s).items():  # data/<class>/, or data/{train,val}/<class>/
        for i in idx:
            d = root / "data" / name / s.classes[labels[i]]
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(render(s, i)).save(d / f"img{i}.png")
            first = first or d / f"img{i}.png"
        for k, c in enumerate(s.classes):  # a class without any image (empty_category): its folder, empty
            if k not in labels:
                (root / "data" / name / c).mkdir(parents=True, exist_ok=True)
    return str(root / "data"), first


def coco_doc(s: Scene, paths: list[Path]) -> dict:
    """COCO instances: boxes, polygons, crowd regions as ``iscrowd=1`` RLE; category ids from 1."""
    images, anns = [], []
    for i, (objs, p) in enumerate(zip(s.images, paths)):
        images.append({"id": i + 1, "file_name": p.name, "height": s.size(i)[0], "width": s.size(i)[1]})
        for o in objs:
            x, y, w, h = o.box
            segm = uncompressed_rle(object_mask(o, s.size(i))) if o.crowd else [[x, y, x + w, y, x + w, y + h, x, y + h]]
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": o.label + 1, "bbox": [x, y, w, h],
                         "area": w * h, "iscrowd": int(o.crowd), "segmentation": segm})  # fmt: skip
    cats = [{"id": k + 1, "name": c, "supercategory": "shape"} for k, c in enumerate(s.classes)]
    return {"images": images, "annotations": anns, "categories": cats}


def split(s: Scene) -> dict[str, list[int]]:
    """``{"": every image}``, or ``{"train": […], "val": […]}`` for a scene with its own val split."""
    if s.val is None:
        return {"": list(range(len(s.images)))}
    return {"train": [i for i in range(len(s.images)) if i not in s.val], "val": list(s.val)}


def subset(s: Scene, paths: list[Path], idx: list[int]) -> tuple[Scene, list[Path]]:
    sub = Scene(s.classes, [s.images[i] for i in idx], s.gray, {k: s.size(i) for k, i in enumerate(idx)})
    return sub, [paths[i] for i in idx]


def write_coco(case: str, root: Path) -> Written:
    """One COCO instances JSON next to its images (detection reads the boxes, instance the masks); with a val
    split, a COCO folder: ``annotations/instances_{train,val}.json`` + ``images/``."""
    s = scene(case)
    if s.val is None:
        paths = save_images(s, root)
        (root / "instances.json").write_text(json.dumps(coco_doc(s, paths)))
        return str(root / "instances.json"), paths[0]
    paths = save_images(s, root / "images")
    (root / "annotations").mkdir()
    for name, idx in split(s).items():
        (root / "annotations" / f"instances_{name}.json").write_text(json.dumps(coco_doc(*subset(s, paths, idx))))
    return str(root), paths[0]


def write_semantic(case: str, root: Path) -> Written:
    """A mask-PNG folder: each object paints its class index, everything else is void (255), so an image
    without annotation is all void; ``classes.txt`` names every class (an unused one too). Mask PNGs carry no
    crowd flag."""
    if case == "crowd_only":
        raise NotApplicable("mask PNGs carry no crowd flag")
    s = scene(case)
    first = None
    for name, idx in split(s).items():  # root/{images,masks}, or root/{train,val}/{images,masks}
        folder = root / name
        (folder / "images").mkdir(parents=True)
        (folder / "masks").mkdir()
        for i in idx:
            Image.fromarray(render(s, i)).save(folder / "images" / f"img{i}.png")
            m = np.full(s.size(i), 255, np.uint8)
            for o in s.images[i]:
                m[object_mask(o, s.size(i))] = o.label
            Image.fromarray(m, mode="L").save(folder / "masks" / f"img{i}.png")
        first = first or folder / "images" / f"img{idx[0]}.png"
    (root / "classes.txt").write_text("\n".join(s.classes) + "\n")
    return str(root), first


def write_panoptic(case: str, root: Path) -> Written:
    """COCO panoptic: the scene's classes are things; a stuff class "ground" fills the rest of every annotated
    image (not in ``one_class``, which keeps one class). An image without annotation is all void."""
    s = scene(case)
    stuff = case != "one_class"
    paths = save_images(s, root / "images")
    cats = [{"id": k + 1, "name": c, "isthing": 1} for k, c in enumerate(s.classes)]
    if stuff:
        cats.append({"id": len(cats) + 1, "name": "ground", "isthing": 0})
    for name, idx in split(s).items():
        _panoptic_split(s, paths, idx, cats, stuff, root / "annotations", name or "train")
    return str(root), paths[0]


def _panoptic_split(s: Scene, paths: list[Path], idx: list[int], cats: list[dict], stuff: bool, ann_dir: Path, name: str) -> None:
    png_dir = ann_dir / f"panoptic_{name}"
    png_dir.mkdir(parents=True)
    images, anns = [], []
    for i in idx:
        objs, p = s.images[i], paths[i]
        ids = np.zeros(s.size(i), np.int64)
        segments = []
        for o in objs:
            sid = len(segments) + 1
            ids[object_mask(o, s.size(i))] = sid
            x, y, w, h = o.box
            segments.append({"id": sid, "category_id": o.label + 1, "iscrowd": int(o.crowd), "bbox": [x, y, w, h], "area": w * h})
        free = ids == 0
        if stuff and objs and free.any():
            sid = len(segments) + 1
            ids[free] = sid
            h, w = s.size(i)
            segments.append({"id": sid, "category_id": len(cats), "iscrowd": 0, "bbox": [0, 0, w, h], "area": int(free.sum())})
        rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536], -1).astype(np.uint8)
        Image.fromarray(rgb).save(png_dir / p.name)
        images.append({"id": i + 1, "file_name": p.name, "height": s.size(i)[0], "width": s.size(i)[1]})
        anns.append({"image_id": i + 1, "file_name": p.name, "segments_info": segments})
    doc = {"images": images, "annotations": anns, "categories": cats}
    (ann_dir / f"panoptic_{name}.json").write_text(json.dumps(doc))


WRITERS: dict[str, Writer] = {
    "classification": write_classification,
    "detection": write_coco,
    "instance": write_coco,
    "semantic": write_semantic,
    "panoptic": write_panoptic,
}


def writer_for(kind: str | None, task: str = "?") -> Writer:
    """The writer of ``kind``; :class:`MissingWriter` saying what to add when there is none."""
    if kind is None:
        raise MissingWriter(f"task {task!r} declares no data_kind: set the class attribute `data_kind` on its Task "
                            f"(one of {', '.join(sorted(WRITERS))}, or a new kind with a writer here)")  # fmt: skip
    if kind not in WRITERS:
        raise MissingWriter(f"add a writer for data kind {kind!r} (task {task!r}) to WRITERS in "
                            "tests/degenerate/degenerate_data.py")  # fmt: skip
    return WRITERS[kind]


# --- predict inputs (shared by every task) -------------------------------------------------------------------
@dataclass(frozen=True)
class Input:
    """A predict source: the file, how many results it should give (None: refusing it is fine too)."""

    name: str
    path: Path
    results: int | None
    skips: bool = False  # a folder holding an unreadable file: predicted around it, the skip counted in the log


def _noise(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


def write_video(path: Path, frames: int, size: tuple[int, int] = (48, 40)) -> Path:
    """An mp4 (mp4v) of ``frames`` noise frames (0: OpenCV writes a container without a frame)."""
    import cv2

    w, h = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (w, h))
    for k in range(frames):
        writer.write(_noise(h, w, k))
    writer.release()
    return path


def write_inputs(root: Path) -> dict[str, Input]:
    """Every predict-input case: tiny, extreme aspect, large, grayscale images and 1- / 0-frame videos."""
    root.mkdir(parents=True, exist_ok=True)

    def png(name: str, a: np.ndarray) -> Input:
        Image.fromarray(a).save(root / f"{name}.png")
        return Input(name, root / f"{name}.png", 1)

    yy, xx = np.mgrid[0:3000, 0:4000]
    large = np.stack([xx * 255 // 4000, yy * 255 // 3000, (xx + yy) % 256], -1).astype(np.uint8)
    Image.fromarray(large).save(root / "large_4000x3000.jpg", quality=80)
    return {
        i.name: i
        for i in (
            png("tiny_1x1", _noise(1, 1)),
            png("tiny_8x8", _noise(8, 8)),
            png("aspect_3x500", _noise(3, 500)),  # 3 px tall, 500 wide
            png("aspect_500x3", _noise(500, 3)),
            Input("large_4000x3000", root / "large_4000x3000.jpg", 1),
            png("grayscale_image", np.asarray(Image.fromarray(_noise(24, 40)).convert("L"))),
            Input("video_1_frame", write_video(root / "one_frame.mp4", 1), 1),
            Input("video_0_frames", write_video(root / "zero_frames.mp4", 0), None),
            _folder(root / "folder_with_0_frame_video"),
        )
    }


def _folder(d: Path) -> Input:
    """A folder of one image and a video without frames: one result, one counted skip."""
    d.mkdir()
    Image.fromarray(_noise(20, 30)).save(d / "a.png")
    write_video(d / "empty.mp4", 0)
    return Input(d.name, d, 1, skips=True)


PREDICT_CASES = ("empty_predictions", "tiny_1x1", "tiny_8x8", "aspect_3x500", "aspect_500x3", "large_4000x3000",
                 "grayscale_image", "video_1_frame", "video_0_frames", "folder_with_0_frame_video")  # fmt: skip
