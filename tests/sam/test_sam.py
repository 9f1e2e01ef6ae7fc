"""SAM: promptable predictor, automatic mask generator, config and the predict runner, on a tiny
random SamModel saved locally (no network)."""

from __future__ import annotations

import json
import time

import huggingface_hub.constants
import numpy as np
import pytest
import torch
from torchvision.ops import box_iou, masks_to_boxes

from optik.errors import ConfigError, ModelError
from optik.sam import SamAutomaticMaskGenerator, SamPredictor, build_sam_config, sam_predict
from optik.sam.automatic import (
    build_all_layer_point_grids,
    build_point_grid,
    generate_crop_boxes,
    is_box_near_crop_edge,
    remove_small_regions,
    stability_score,
)
from optik.sam.config import resolve_mode

S = 64  # model input size: 4×4 image embedding, 16×16 low-res masks
AMG_LOW = {"points_per_side": 6, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.1, "crop_edge_atol": 2.0}


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


@pytest.fixture(scope="session")
def predictor(sam_dir) -> SamPredictor:
    return SamPredictor(f"hf:{sam_dir}")


@pytest.fixture(scope="session")
def image() -> np.ndarray:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (40, 56, 3)).astype(np.uint8)  # not square: exercises un-padding
    img[8:24, 10:30] = (250, 250, 250)
    return img


# ------------------------------------------------------------------------------------------- predictor
def test_point_prompt_three_ranked_masks(predictor: SamPredictor, image: np.ndarray) -> None:
    predictor.set_image(image)
    r = predictor.predict(points=[[18, 15]])
    assert r.masks.data.shape == (3, 40, 56) and r.masks.data.dtype == torch.bool
    assert r.names == ["object"] and r.boxes.cls.tolist() == [0, 0, 0]
    conf = r.boxes.conf
    assert torch.all(conf[:-1] >= conf[1:])  # best first
    assert torch.equal(r.boxes.xyxy, r.masks.boxes())
    assert r.orig_shape == (40, 56) and set(r.speed) >= {"encoder", "decoder", "postprocess"}


def test_predict_equals_transformers_pipeline(predictor: SamPredictor, image: np.ndarray) -> None:
    """Cached embedding + optik's coordinate mapping give the same masks and IoUs as the
    processor → SamModel(pixel_values, points) → post_process_masks pipeline."""
    proc, model = predictor.processor, predictor.model
    pts, labels = [[18.0, 15.0], [45.0, 33.0]], [1, 0]
    inputs = proc(images=image, input_points=[[pts]], input_labels=[[labels]], return_tensors="pt")
    with torch.no_grad():
        out = model(pixel_values=inputs["pixel_values"], input_points=inputs["input_points"].float(),
                    input_labels=inputs["input_labels"])
    ref = proc.post_process_masks(out.pred_masks, inputs["original_sizes"], inputs["reshaped_input_sizes"])[0][0]
    predictor.set_image(image)
    torch.testing.assert_close(predictor.to_input_coords(torch.tensor(pts)), inputs["input_points"][0, 0].float())
    r = predictor.predict(points=pts, labels=labels)
    order = out.iou_scores[0, 0].argsort(descending=True)
    torch.testing.assert_close(r.boxes.conf, out.iou_scores[0, 0, order], rtol=1e-4, atol=1e-5)
    assert (r.masks.data != ref[order]).float().mean() < 1e-3  # identical up to float ties at the threshold


def test_negative_points_boxes_and_single_mask(predictor: SamPredictor, image: np.ndarray) -> None:
    predictor.set_image(image)
    pos = predictor.predict(points=[[18, 15]], multimask=False)
    neg = predictor.predict(points=[[18, 15], [45, 33]], labels=[1, 0], multimask=False)
    assert len(pos.masks) == len(neg.masks) == 1
    assert not torch.isclose(pos.boxes.conf, neg.boxes.conf).all()  # the background point changes the answer
    one_box = predictor.predict(boxes=[8, 6, 32, 26])
    assert one_box.masks.data.shape == (3, 40, 56)
    two = predictor.predict(boxes=[[8, 6, 32, 26], [30, 20, 55, 39]], points=[[18, 15]], multimask=True)
    assert two.masks.data.shape == (2, 40, 56)  # one mask per box, in box order
    single = [predictor.predict(boxes=[b], points=[[18, 15]]) for b in ([8, 6, 32, 26], [30, 20, 55, 39])]
    torch.testing.assert_close(two.boxes.conf, torch.stack([s.boxes.conf[0] for s in single]), rtol=1e-4, atol=1e-5)


def test_prompt_errors(sam_dir, image: np.ndarray) -> None:
    p = SamPredictor(str(sam_dir))  # a bare dir works too
    with pytest.raises(ConfigError, match="set_image"):
        p.predict(points=[[1, 2]])
    p.set_image(image)
    with pytest.raises(ConfigError, match="'labels': 1 labels for 2 points"):
        p.predict(points=[[1, 2], [3, 4]], labels=[1])
    with pytest.raises(ConfigError, match="'labels'"):
        p.predict(points=[[1, 2]], labels=[2])
    with pytest.raises(ConfigError, match="'points'"):
        p.predict(points=[[1, 2, 3]])
    with pytest.raises(ConfigError, match="'boxes'"):
        p.predict(boxes=[[10, 10, 5, 20]])
    with pytest.raises(ConfigError, match="needs 'points' or 'boxes'"):
        p.predict()


def test_missing_model_is_one_fast_error(tmp_path) -> None:
    t = time.perf_counter()
    with pytest.raises(ModelError, match="not in the Hugging Face cache") as e:
        SamPredictor("hf:facebook/sam-vit-nonexistent")
    assert "\n" not in str(e.value) and time.perf_counter() - t < 10
    with pytest.raises(ModelError, match="not found"):
        SamPredictor(str(tmp_path / "nope"))
    with pytest.raises(ModelError, match="no config.json"):
        SamPredictor(str(tmp_path))


def test_model_dir_without_processor(sam_dir, tmp_path, image: np.ndarray) -> None:
    from transformers import SamModel

    SamModel.from_pretrained(sam_dir).save_pretrained(tmp_path)  # no preprocessor_config.json: built from the model config
    p = SamPredictor(tmp_path)
    assert p.processor.image_processor.pad_size["height"] == S
    p.set_image(image)
    assert p.predict(points=[[5, 5]]).masks.data.shape == (3, 40, 56)


# ------------------------------------------------------------------------------------------- AMG helpers
def test_stability_score_by_hand() -> None:
    logits = torch.tensor([[[-2.0, -0.5], [0.5, 3.0]], [[-3.0, -2.0], [-1.5, -1.2]]])
    # mask 0: > +1 → {3.0} (1 px); > -1 → {-0.5, 0.5, 3.0} (3 px) → 1/3; mask 1: both empty → 0
    torch.testing.assert_close(stability_score(logits, 0.0, 1.0), torch.tensor([1 / 3, 0.0]))
    # threshold 0.5, offset 0.25: > 0.75 → {3.0}; > 0.25 → {0.5, 3.0} → 1/2
    torch.testing.assert_close(stability_score(logits[:1], 0.5, 0.25), torch.tensor([0.5]))


def test_point_grids_and_crop_boxes_by_hand() -> None:
    np.testing.assert_allclose(build_point_grid(2), [[0.25, 0.25], [0.75, 0.25], [0.25, 0.75], [0.75, 0.75]])
    np.testing.assert_allclose(build_point_grid(3)[:3], [[1 / 6, 1 / 6], [0.5, 1 / 6], [5 / 6, 1 / 6]])
    assert [len(g) for g in build_all_layer_point_grids(4, 2, 2)] == [16, 4, 1]
    boxes, layers = generate_crop_boxes((100, 200), 1, 0.25)
    # short side 100, 2 crops per side, overlap int(0.25*100*2/2) = 25; crop w = ceil((25 + 200)/2) = 113,
    # crop h = ceil((25 + 100)/2) = 63; x0 ∈ {0, 113-25=88}, y0 ∈ {0, 63-25=38}; x outer, y inner
    assert boxes == [[0, 0, 200, 100], [0, 0, 113, 63], [0, 38, 113, 100], [88, 0, 200, 63], [88, 38, 200, 100]]
    assert layers == [0, 1, 1, 1, 1]
    boxes2, layers2 = generate_crop_boxes((64, 64), 2, 0.0)
    assert layers2.count(2) == 16 and boxes2[-1] == [48, 48, 64, 64]


def test_crop_edge_and_small_regions_by_hand() -> None:
    # crop [50, 0, 100, 50] of a 100×100 image; box coords are crop-relative
    boxes = torch.tensor([[10.0, 10.0, 30.0, 30.0], [0.0, 10.0, 20.0, 30.0], [10.0, 10.0, 50.0, 30.0], [10.0, 0.0, 30.0, 30.0]])
    near = is_box_near_crop_edge(boxes, [50, 0, 100, 50], [0, 0, 100, 100], atol=2.0)
    # inner box: no; touches the crop's left edge (x=50, inside the image): yes; touches the crop's right
    # edge = image right edge (x=100): no; touches the top = image top: no
    assert near.tolist() == [False, True, False, False]
    m = np.zeros((10, 10), bool)
    m[1:8, 1:8] = True
    m[4, 4] = False  # 1-px hole
    m[9, 9] = True  # 1-px island
    filled, changed = remove_small_regions(m, 3, "holes")
    assert changed and filled[4, 4] and filled.sum() == 50
    cleaned, changed = remove_small_regions(filled, 3, "islands")
    assert changed and not cleaned[9, 9] and cleaned.sum() == 49
    assert remove_small_regions(cleaned, 3, "islands")[1] is False


# ------------------------------------------------------------------------------------------- AMG
def _pairwise_max_iou(masks: torch.Tensor) -> float:
    if len(masks) < 2:
        return 0.0
    iou = box_iou(masks_to_boxes(masks), masks_to_boxes(masks))
    return float((iou - torch.eye(len(masks))).max())


def test_amg_masks_after_nms(predictor: SamPredictor, image: np.ndarray) -> None:
    gen = SamAutomaticMaskGenerator(predictor, points_per_batch=16, box_nms_thresh=0.5, **AMG_LOW)
    r = gen.generate(image)
    assert 0 < len(r.masks) < 3 * 36 and r.masks.data.shape[1:] == (40, 56)
    assert torch.all(r.boxes.conf[:-1] >= r.boxes.conf[1:])
    assert (gen.stability_scores >= 0.1).all() and r.masks.data.flatten(1).any(1).all()
    assert _pairwise_max_iou(r.masks.data) <= 0.5 + 1e-6  # NMS (on SAM's inclusive boxes) held
    assert set(gen.timing) == {"encoder", "decoder", "postprocess", "total"}
    strict = SamAutomaticMaskGenerator(predictor, points_per_side=6, pred_iou_thresh=0.0, stability_score_thresh=0.99)
    assert len(strict.generate(image).masks) < len(r.masks)  # the stability filter bites


def test_amg_crop_layers_and_small_regions(predictor: SamPredictor, image: np.ndarray) -> None:
    gen = SamAutomaticMaskGenerator(predictor, crop_n_layers=1, crop_overlap_ratio=0.25, crop_n_points_downscale_factor=2,
                                    **AMG_LOW)  # fmt: skip
    r = gen.generate(image)
    assert len(r.masks) > 0 and r.masks.data.shape[1:] == (40, 56)
    assert _pairwise_max_iou(r.masks.data) <= 0.7 + 1e-6
    clean = SamAutomaticMaskGenerator(predictor, min_mask_region_area=20, **AMG_LOW).generate(image)
    for m in clean.masks.data.numpy():
        import cv2

        n, _, stats, _ = cv2.connectedComponentsWithStats(m.astype(np.uint8), connectivity=8)
        assert n == 2 or (stats[1:, cv2.CC_STAT_AREA] >= 20).all()  # no island under 20 px (unless the only one)
    with pytest.raises(ConfigError, match="'box_nms_thresh'"):
        SamAutomaticMaskGenerator(predictor, box_nms_thresh=0)


class DiskPredictor(SamPredictor):
    """A stand-in decoder with known answers: for a point prompt, logits ``r_k - distance`` give 3
    concentric disks of radius 3, 6, 10 px with predicted IoUs 0.9, 0.8, 0.95, so stability
    ≈ ((r-1)/(r+1))² ≈ 0.25, 0.51, 0.67 and the box IoU of concentric disks is (2r+1)² / (2R+1)²."""

    radii, ious = torch.tensor([3.0, 6.0, 10.0]), torch.tensor([0.9, 0.8, 0.95])

    def __init__(self) -> None:
        self.timing = {"encoder": 0.0, "decoder": 0.0}
        self.reset_image()

    def set_image(self, image, path=None) -> None:
        self.image, self.orig_size = image, tuple(image.shape[:2])

    def predict_torch(self, points, labels, boxes, multimask=True):
        # "low-res masks" (B, 3, 1, 3): the disks themselves as (x, y, radius)
        xyr = torch.cat([points[:, :1].expand(-1, 3, -1), self.radii[None, :, None].expand(len(points), -1, -1)], -1)
        return xyr[:, :, None], self.ious.expand(len(points), 3)

    def upscale(self, low):
        h, w = self.orig_size
        yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
        x, y, r = (low[:, :, 0, i, None, None] for i in range(3))  # (N, K, 1, 1) each
        return r - ((xx - x) ** 2 + (yy - y) ** 2).sqrt()


def _centres(masks: torch.Tensor) -> list[tuple[float, float]]:
    boxes = masks_to_boxes(masks)
    return sorted({(float(b[0] + b[2]) / 2, float(b[1] + b[3]) / 2) for b in boxes})


def test_amg_algorithm_on_known_disks() -> None:
    img = np.zeros((64, 64, 3), np.uint8)
    base = {"points_per_side": 2, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0, "crop_edge_atol": 2.0}
    # 2×2 grid → points (16, 16), (48, 16), (16, 48), (48, 48); 3 disks each, all box IoUs < 0.7: 12 masks
    r = SamAutomaticMaskGenerator(DiskPredictor(), **base).generate(img)
    assert len(r.masks) == 12 and _centres(r.masks.data) == [(16.0, 16.0), (16.0, 48.0), (48.0, 16.0), (48.0, 48.0)]
    assert r.boxes.conf.tolist() == pytest.approx([0.95] * 4 + [0.9] * 4 + [0.8] * 4)
    # NMS at 0.25: r=6 vs r=10 boxes IoU 13²/21² = 0.38 → suppressed by the r=10 disk (IoU 0.95);
    # r=3 vs r=10: 7²/21² = 0.11 → kept
    r = SamAutomaticMaskGenerator(DiskPredictor(), **{**base, "box_nms_thresh": 0.25}).generate(img)
    assert sorted(r.masks.area.tolist()) == [25] * 4 + [305] * 4  # pixels at distance < 3 and < 10
    # predicted-IoU filter drops r=6 (0.8); stability filter 0.5 drops r=3 (≈ 0.25)
    gen = SamAutomaticMaskGenerator(DiskPredictor(), **{**base, "pred_iou_thresh": 0.85, "stability_score_thresh": 0.5})
    r = gen.generate(img)
    assert len(r.masks) == 4 and r.boxes.conf.tolist() == pytest.approx([0.95] * 4)
    assert ((gen.stability_scores > 0.6) & (gen.stability_scores < 0.75)).all()


def test_amg_crop_layer_duplicates_prefer_smaller_crops() -> None:
    img = np.zeros((64, 64, 3), np.uint8)
    # layer 1 = four 32×32 crops (overlap 0) with one point each at the crop centre: the same points as
    # the 2×2 grid of layer 0, so every mask appears twice and crop NMS keeps the small-crop copy
    gen = SamAutomaticMaskGenerator(DiskPredictor(), points_per_side=2, crop_n_layers=1, crop_overlap_ratio=0.0,
                                    crop_n_points_downscale_factor=2, pred_iou_thresh=0.0, stability_score_thresh=0.0,
                                    crop_edge_atol=2.0)  # fmt: skip
    r = gen.generate(img)
    assert len(r.masks) == 12 and _centres(r.masks.data) == [(16.0, 16.0), (16.0, 48.0), (48.0, 16.0), (48.0, 48.0)]
    areas = (gen.crop_boxes[:, 2] - gen.crop_boxes[:, 0]) * (gen.crop_boxes[:, 3] - gen.crop_boxes[:, 1])
    assert (areas == 32 * 32).all()
    assert sorted(set(map(tuple, gen.point_coords.tolist()))) == _centres(r.masks.data)  # prompts in image pixels
    # masks cut by a crop edge inside the image are dropped: with atol 7 the r=10 disks (6 px from the
    # crop edge) go from the crops, and their layer-0 copies survive instead
    gen.crop_edge_atol = 7.0
    r = gen.generate(img)
    assert len(r.masks) == 12 and sorted(set(((gen.crop_boxes[:, 2] - gen.crop_boxes[:, 0]).tolist()))) == [32.0, 64.0]


# ------------------------------------------------------------------------------------------- config + run
def test_config_keys_and_errors() -> None:
    cfg = build_sam_config({"points": "[[10, 20], [30, 5]]", "boxes": "[1, 2, 30, 40]"})
    assert cfg.point_labels == [1, 1] and cfg.boxes == [[1.0, 2.0, 30.0, 40.0]] and resolve_mode(cfg) == "prompt"
    assert resolve_mode(build_sam_config({})) == "auto" and build_sam_config({}).model == "hf:facebook/sam-vit-base"
    with pytest.raises(ConfigError, match="'point_labels'.*3 labels for 2 points"):
        build_sam_config({"points": [[1, 2], [3, 4]], "labels": [1, 0, 1]})
    with pytest.raises(ConfigError, match="'point_labels'.*without 'points'"):
        build_sam_config({"labels": [1]})
    with pytest.raises(ConfigError, match="'points'"):
        build_sam_config({"points": "[[1, 2, 3]]"})
    with pytest.raises(ConfigError, match="did you mean 'points_per_side'"):
        build_sam_config({"point_per_side": 8})
    with pytest.raises(ConfigError, match="'pred_iou_thresh'"):
        build_sam_config({"pred_iou_thresh": 2})


def test_sam_predict_saves(sam_dir, image: np.ndarray, tmp_path) -> None:
    from PIL import Image

    Image.fromarray(image).save(tmp_path / "pic.png")
    common = {"model": f"hf:{sam_dir}", "project": str(tmp_path / "runs"), "save": True}
    rs = sam_predict({**common, "source": [str(tmp_path / "pic.png"), image], "points": [[18, 15]], "multimask": False})
    assert [len(r.masks) for r in rs] == [1, 1] and rs[0].path.endswith("pic.png")
    run = tmp_path / "runs" / "sam" / "predict"
    assert sorted(p.name for p in run.iterdir()) == ["0000_pic.png", "0001_image1.png", "predictions.jsonl"]
    rows = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and rows[0]["shape"] == [40, 56] and len(rows[0]["predictions"]) == 1
    auto = sam_predict({**common, "source": image, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.1,
                        "points_per_side": 4})  # fmt: skip
    assert len(auto) == 1 and (tmp_path / "runs" / "sam" / "predict2" / "predictions.jsonl").is_file()
    with pytest.raises(ModelError):
        sam_predict({"model": "hf:facebook/sam-vit-nonexistent", "source": image})


def test_cli_sam_predict_with_points_and_save_txt(sam_dir, image: np.ndarray, tmp_path, capsys) -> None:
    """`optik sam predict` parses prompts from the command line and writes overlays, JSONL and polygons."""
    from PIL import Image

    from optik.cli import main

    Image.fromarray(image).save(tmp_path / "pic.png")
    args = ["sam", "predict", f"model=hf:{sam_dir}", f"source={tmp_path / 'pic.png'}", "points=[[18,15],[5,5]]",
            "point_labels=[1,0]", "multimask=false", "save=true", "save_txt=true", f"project={tmp_path / 'runs'}"]
    assert main(args) == 0
    assert "pic.png" in capsys.readouterr().out
    run = tmp_path / "runs" / "sam" / "predict"
    assert (run / "0000_pic.png").is_file() and (run / "predictions.jsonl").is_file()
    assert (run / "labels" / "pic.txt").is_file()
    assert main(["sam", "predict", f"model=hf:{sam_dir}", "source=x.png", "points=[[1,2]]", "labels=[1,1]"]) == 2
    assert "labels" in capsys.readouterr().err
