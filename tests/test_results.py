"""Results for every task: masks ↔ polygons ↔ RLE agree, JSON/text/COCO exports parse, overlays draw
where they should, and classification/detection behaviour is unchanged."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
from pycocotools import mask as coco_mask

from optik.results import IGNORE_INDEX, Boxes, Masks, Results, encode_rle, mask_contours
from optik.viz.draw import color_for, legend_items, shade

H, W = 48, 64
NAMES = ["circle", "square", "star"]


def _disk(cy: float, cx: float, r: float, h: int = H, w: int = W) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2


def _instance_result() -> Results:
    masks = torch.from_numpy(np.stack([_disk(20, 20, 12), _disk(30, 48, 8), np.zeros((H, W), bool)]))
    boxes = Boxes(Masks(masks).boxes(), torch.tensor([0.9, 0.8, 0.3]), torch.tensor([0, 2, 2]), (H, W))
    img = np.full((H, W, 3), 40, np.uint8)
    return Results(img, path="a.png", names=NAMES, boxes=boxes, masks=masks)


def _semantic_result() -> Results:
    sem = torch.zeros(H, W, dtype=torch.long)
    sem[torch.from_numpy(_disk(20, 20, 12))] = 1
    sem[:, 56:] = 3
    sem[:4, :4] = IGNORE_INDEX
    return Results(np.zeros((H, W, 3), np.uint8), path="s.png", names=["background", *NAMES], semantic=sem)


def _panoptic_result() -> Results:
    pan = torch.zeros(H, W, dtype=torch.long)
    pan[24:] = 1  # stuff "ground"
    pan[torch.from_numpy(_disk(12, 16, 8))] = 2  # two circles
    pan[torch.from_numpy(_disk(12, 44, 8))] = 3
    segments = [{"id": 1, "label": 3, "score": None, "isthing": False},
                {"id": 2, "label": 0, "score": 0.9, "isthing": True},
                {"id": 3, "label": 0, "score": 0.7, "isthing": True}]  # fmt: skip
    return Results(np.zeros((H, W, 3), np.uint8), path="p.png", names=[*NAMES, "ground"], panoptic=pan,
                   segments=segments)


# --- Masks --------------------------------------------------------------------------------------
def test_polygon_fills_back_to_the_mask():
    disk = _disk(24, 30, 15)
    poly = Masks(torch.from_numpy(disk)).xy[0]
    assert poly.dtype == np.float32 and poly.shape[1] == 2
    filled = cv2.fillPoly(np.zeros((H, W), np.uint8), [poly.round().astype(np.int32)], 1).astype(bool)
    iou = (filled & disk).sum() / (filled | disk).sum()
    assert iou > 0.9


def test_masks_views_agree_with_coco():
    data = np.stack([_disk(20, 20, 12), _disk(30, 48, 8) | _disk(5, 5, 3), np.zeros((H, W), bool)])
    m = Masks(torch.from_numpy(data).float() * 0.9)  # probabilities are thresholded at 0.5
    assert m.data.dtype == torch.bool and len(m) == 3 and m.orig_shape == (H, W)
    assert m.area.tolist() == data.reshape(3, -1).sum(1).tolist()
    assert len(m.segments[1]) == 2 and len(m.segments[1][0]) >= len(m.segments[1][1])  # largest first
    assert m.xy[2].shape == (0, 2)
    assert np.allclose(m.xyn[0], m.xy[0] / np.array([W, H]))
    # Boxes: COCO's toBbox convention (x2 exclusive) for non-empty masks, zeros for empty ones.
    rles = m.rle
    xywh = coco_mask.toBbox([{"size": r["size"], "counts": r["counts"].encode()} for r in rles[:2]])
    boxes = m.boxes()
    assert torch.allclose(boxes[:2, :2], torch.tensor(xywh[:, :2]).float())
    assert torch.allclose(boxes[:2, 2:] - boxes[:2, :2], torch.tensor(xywh[:, 2:]).float())
    assert boxes[2].tolist() == [0, 0, 0, 0]
    assert len(m[1:]) == 2 and len(m[0]) == 1
    with pytest.raises(ValueError, match="original pixels"):
        Masks(torch.zeros(1, 8, 8), (16, 16))


def test_rle_decodes_back_exactly():
    data = np.stack([_disk(20, 20, 12), _disk(30, 48, 8), np.zeros((H, W), bool)])
    rles = Masks(torch.from_numpy(data)).rle
    assert all(isinstance(r["counts"], str) and r["size"] == [H, W] for r in rles)
    decoded = coco_mask.decode([{"size": r["size"], "counts": r["counts"].encode()} for r in rles])
    assert np.array_equal(decoded.transpose(2, 0, 1).astype(bool), data)
    assert encode_rle(data[0]) == rles[:1] and encode_rle(np.zeros((0, H, W), bool)) == []
    assert mask_contours(np.zeros((4, 4), bool)) == []


# --- exports ------------------------------------------------------------------------------------
def test_summary_and_json_for_every_kind():
    inst = json.loads(_instance_result().to_json())
    assert inst["shape"] == [H, W] and len(inst["predictions"]) == 3
    row = inst["predictions"][0]
    assert set(row) == {"class", "name", "confidence", "box", "rle", "polygon"} and row["name"] == "circle"
    assert len(row["polygon"]) % 2 == 0 and len(row["polygon"]) >= 6
    assert coco_mask.area({"size": row["rle"]["size"], "counts": row["rle"]["counts"].encode()}) == _disk(20, 20, 12).sum()

    sem = json.loads(_semantic_result().to_json())["predictions"]
    assert [(r["class"], r["name"]) for r in sem] == [(0, "background"), (1, "circle"), (3, "star")]
    assert sum(r["pixels"] for r in sem) == H * W - 16  # void pixels are not a class
    assert set(sem[0]) == {"class", "name", "pixels", "rle"}

    pan = json.loads(_panoptic_result().to_json())["predictions"]
    assert [(r["id"], r["name"], r["isthing"]) for r in pan] == [(1, "ground", False), (2, "circle", True),
                                                              (3, "circle", True)]  # fmt: skip
    assert "confidence" not in pan[0] and pan[1]["confidence"] == 0.9
    assert pan[1]["area"] == _disk(12, 16, 8).sum()
    # Panoptic results may carry boxes + masks too (one per segment): the segments are what is reported.
    r = _panoptic_result()
    seg_masks = Masks(torch.stack([r.panoptic == i for i in (1, 2, 3)]))
    both = Results(r.orig_img, "p", r.names, boxes=Boxes(seg_masks.boxes(), torch.tensor([1.0, 0.9, 0.7]),
                   torch.tensor([3, 0, 0]), (H, W)), masks=seg_masks, panoptic=r.panoptic, segments=r.segments)
    assert both.summary() == r.summary() and both.verbose() == r.verbose()
    assert np.array_equal(both.plot(), r.plot()) and both.to_coco(1) == r.to_coco(1)


def test_verbose_strings():
    assert _instance_result().verbose() == "1 circle, 2 star"
    assert _semantic_result().verbose() == "background 73%, circle 14%, star 12%"
    assert _panoptic_result().verbose() == "2 circle, ground 50%"
    empty = Results(np.zeros((8, 8, 3), np.uint8), path="e", names=NAMES, masks=torch.zeros(0, 8, 8, dtype=torch.bool))
    assert empty.verbose() == "no masks"
    probs = Results(np.zeros((8, 8, 3), np.uint8), path="c", names=["cat", "dog"], probs=torch.tensor([0.2, 0.8]))
    assert probs.verbose() == "dog 0.80, cat 0.20"


def test_save_txt_yolo_polygons(tmp_path):
    path = _instance_result().save_txt(tmp_path / "labels" / "a.txt", save_conf=True)
    lines = path.read_text().splitlines()
    assert len(lines) == 2  # the empty mask has no polygon
    for line, (cls, conf) in zip(lines, [(0, 0.9), (2, 0.8)]):
        parts = line.split()
        coords = np.array(parts[1:-1], float)
        assert int(parts[0]) == cls and float(parts[-1]) == pytest.approx(conf)
        assert len(coords) % 2 == 0 and len(coords) >= 6 and ((coords >= 0) & (coords <= 1)).all()
    # Normalised polygon × image size fills back to the mask.
    xy = np.array(lines[0].split()[1:-1], float).reshape(-1, 2) * [W, H]
    filled = cv2.fillPoly(np.zeros((H, W), np.uint8), [xy.round().astype(np.int32)], 1).astype(bool)
    assert (filled & _disk(20, 20, 12)).sum() / (filled | _disk(20, 20, 12)).sum() > 0.9

    sem = _semantic_result().save_txt(tmp_path / "s.txt").read_text().splitlines()
    assert sorted({int(s.split()[0]) for s in sem}) == [0, 1, 3]
    pan = _panoptic_result().save_txt(tmp_path / "p.txt").read_text().splitlines()
    assert [int(s.split()[0]) for s in pan] == [3, 0, 0]
    det = Results(np.zeros((H, W, 3), np.uint8), "d", NAMES,
                  boxes=Boxes(torch.tensor([[0.0, 0, 32, 24]]), torch.tensor([0.5]), torch.tensor([1]), (H, W)))
    assert det.save_txt(tmp_path / "d.txt").read_text() == "1 0.250000 0.250000 0.500000 0.500000\n"


def test_to_coco_adds_segmentation():
    rows = _instance_result().to_coco(7, cat_ids=[1, 2, 3])
    assert [r["category_id"] for r in rows] == [1, 3, 3] and rows[0]["image_id"] == 7
    assert all("segmentation" in r and "bbox" in r for r in rows)
    decoded = coco_mask.decode({"size": rows[1]["segmentation"]["size"], "counts": rows[1]["segmentation"]["counts"]})
    assert np.array_equal(decoded.astype(bool), _disk(30, 48, 8))
    sem = _semantic_result().to_coco(1)
    assert [r["category_id"] for r in sem] == [0, 1, 3] and "score" not in sem[0]
    pan = _panoptic_result().to_coco(1)
    assert [r.get("score") for r in pan] == [None, 0.9, 0.7]


def test_shapes_must_match_the_image():
    with pytest.raises(ValueError, match="semantic"):
        Results(np.zeros((8, 8, 3), np.uint8), "x", NAMES, semantic=torch.zeros(4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="one box per mask"):
        Results(np.zeros((8, 8, 3), np.uint8), "x", NAMES, masks=torch.zeros(2, 8, 8, dtype=torch.bool),
                boxes=Boxes(torch.zeros(1, 4), torch.ones(1), torch.zeros(1), (8, 8)))
    r = _panoptic_result()
    r.release_image()
    assert r.orig_shape == (H, W) and r.panoptic is not None and len(r.summary()) == 3


# --- plots --------------------------------------------------------------------------------------
def _contains(region: np.ndarray, color) -> bool:
    return bool((np.abs(region.astype(int) - np.asarray(color)) <= 2).all(-1).any())


def test_plot_instance_overlay_inside_the_mask():
    r = _instance_result()
    out = r.plot()
    factor = 3  # 48 px < 128 px: enlarged by ceil(128 / 48), masks nearest-neighbour with it
    assert out.dtype == np.uint8 and out.shape == (H * factor, W * factor, 3)
    blended = (np.full(3, 40) * 0.5 + np.asarray(color_for(0)) * 0.5).astype(int)
    cy, cx = 20 * factor, 20 * factor
    assert _contains(out[cy - 3 : cy + 3, cx - 3 : cx + 3], blended)
    assert (out[2 * H * factor // 3 + 30 :, : W * factor // 5] == 40).all()  # far from every mask: untouched


def test_plot_sam_like_masks_get_instance_colours():
    masks = torch.from_numpy(np.stack([_disk(20, 20, 10), _disk(30, 48, 10)]))
    r = Results(np.zeros((H, W, 3), np.uint8), "sam", ["object"], masks=masks,
                boxes=Boxes(Masks(masks).boxes(), torch.tensor([0.95, 0.9]), torch.zeros(2), (H, W)))
    out = r.plot(labels=False)
    f = out.shape[0] // H
    assert _contains(out[30 * f - 2 : 30 * f + 2, 48 * f - 2 : 48 * f + 2], np.asarray(color_for(1)) // 2)


def test_plot_semantic_has_legend_of_present_classes():
    r = _semantic_result()
    assert legend_items(r.semantic.numpy(), r.names) == [("background", None), ("circle", color_for(1)),
                                                         ("star", color_for(3))]  # fmt: skip
    out = r.plot()
    f = out.shape[0] // H
    assert out.shape == (H * f, W * f, 3) and out.dtype == np.uint8
    exact = lambda c: bool((out == np.asarray(c)).all(-1).any())  # noqa: E731
    assert exact(color_for(1)) and exact(color_for(3))  # legend swatches are exact colours
    assert not exact(color_for(2))  # "square" is absent
    assert _contains(out[20 * f - 2 : 20 * f + 2, 20 * f - 2 : 20 * f + 2], np.asarray(color_for(1)) // 2)
    assert (out[30 * f : 40 * f, 2 * f : 6 * f] == 0).all()  # background is left untinted
    bare = r.plot(labels=False)
    assert not (bare == np.asarray(color_for(1))).all(-1).any()  # no legend: only blended pixels


def test_plot_panoptic_shades_instances_and_colours_stuff():
    r = _panoptic_result()
    out = r.plot(labels=False)
    f = out.shape[0] // H
    half = lambda c: np.asarray(c) // 2  # noqa: E731  (black image, alpha 0.5)
    assert _contains(out[12 * f - 1 : 12 * f + 1, 16 * f - 1 : 16 * f + 1], half(shade(color_for(0), 0)))
    assert _contains(out[12 * f - 1 : 12 * f + 1, 44 * f - 1 : 44 * f + 1], half(shade(color_for(0), 1)))
    assert _contains(out[40 * f : 42 * f, 30 * f : 32 * f], half(color_for(3)))
    assert (out[2 * f : 4 * f, 60 * f : 62 * f] == 0).all()  # void stays as is
    assert r.plot().shape == out.shape


def test_classification_and_detection_plots_unchanged():
    img = np.zeros((200, 300, 3), np.uint8)
    det = Results(img, "d", NAMES, boxes=Boxes(torch.tensor([[10.0, 10, 50, 60]]), torch.tensor([0.9]),
                                               torch.tensor([0]), (200, 300)))  # fmt: skip
    assert det.plot().shape == (200, 300, 3) and det.verbose() == "1 circle"
    assert set(json.loads(det.to_json())["predictions"][0]) == {"class", "name", "confidence", "box"}
    assert "segmentation" not in det.to_coco(1)[0]
    cls = Results(img, "c", ["cat", "dog"], probs=torch.tensor([0.3, 0.7]))
    assert cls.plot().shape == (200, 300, 3) and cls.to_coco(1) == []
