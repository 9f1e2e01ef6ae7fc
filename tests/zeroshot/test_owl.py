"""Open-vocabulary detection: OWL-ViT / OWLv2 through ``optik detect`` (tiny random models saved locally, real
``from_pretrained`` path), checked against transformers' own forward + post-processing; auto-labelling to COCO."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from optik import Model
from optik.config import build_config
from optik.errors import ConfigError, ExportError, ModelError
from optik.models import create

from owl_tiny import write_tiny_owl

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module", params=[1, 2], ids=["owlvit", "owlv2"])
def owl_dir(request, tmp_path_factory) -> Path:
    return write_tiny_owl(tmp_path_factory.mktemp(f"owl{request.param}") / "model", version=request.param)


@pytest.fixture(scope="module")
def owl1(tmp_path_factory) -> Path:
    return write_tiny_owl(tmp_path_factory.mktemp("owl1") / "model", version=1)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """Three real photos of different shapes and sizes (scikit-image), as files in a folder."""
    data = pytest.importorskip("skimage.data")
    folder = tmp_path_factory.mktemp("photos")
    for name in ("chelsea", "coffee", "astronaut"):
        img = Image.fromarray(getattr(data, name)())
        img.thumbnail((96, 96))
        img.save(folder / f"{name}.png")
    return folder


def _reference(path: Path, queries: list[str], pixels: torch.Tensor, size: int) -> list[dict[str, torch.Tensor]]:
    """transformers' own pipeline on already-normalised pixels: processor text → forward → post_process_object_detection."""
    from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

    processor = AutoProcessor.from_pretrained(path)
    model = AutoModelForZeroShotObjectDetection.from_pretrained(path).eval()
    text = processor(text=[queries] * len(pixels), return_tensors="pt")
    with torch.no_grad():
        out = model(input_ids=text["input_ids"], attention_mask=text["attention_mask"], pixel_values=pixels)
    return processor.image_processor.post_process_object_detection(out, threshold=-1.0, target_sizes=[(size, size)] * len(pixels))


def test_detections_equal_transformers_forward_and_post_processing(owl_dir: Path) -> None:
    from torchvision.ops import clip_boxes_to_image

    queries = ["a cat", "a dog", "a remote"]
    model = create(f"hf:{owl_dir}", task="detect", num_classes=3, class_names=queries)
    assert type(model).__name__ == "OwlDetector" and model.num_classes == 3
    torch.manual_seed(1)
    x = torch.rand(2, 3, 64, 64)
    ours = model.forward_detect(x, conf=0.0, iou=1.0, max_det=10_000)  # iou=1: no NMS, as transformers
    ref = _reference(owl_dir, queries, (x - model.pixel_mean) / model.pixel_std, 64)
    for o, r in zip(ours, ref):
        assert len(o["scores"]) == len(r["scores"]) == 16  # (64 / 16)² patches, one box each
        boxes = clip_boxes_to_image(r["boxes"], (64, 64))  # optik clips to the input, transformers does not
        for box, score, label in zip(boxes, r["scores"], r["labels"]):
            hit = ((o["boxes"] - box).abs().amax(1) < 1e-4) & ((o["scores"] - score).abs() < 1e-5)
            assert hit.any() and int(o["labels"][hit][0]) == int(label)
        assert torch.all(o["scores"][:-1] >= o["scores"][1:])  # best first


def test_query_embeddings_are_cached_and_follow_the_queries(owl1: Path) -> None:
    model = create(f"hf:{owl1}", task="detect", num_classes=2, class_names=["a cat", "a dog"])
    first = model.query_embeds()
    assert model.query_embeds() is first
    model.set_queries(["a dog", "a cat"])
    swapped = model.query_embeds()
    torch.testing.assert_close(swapped, first.flip(0))
    x = torch.rand(1, 3, 64, 64)
    logits, _ = model.raw(x)
    model.set_queries(["a cat", "a dog"])
    torch.testing.assert_close(model.raw(x)[0], logits.flip(-1))
    with pytest.raises(ConfigError, match="prompts"):
        model.set_queries(["a cat", "a cat"])


def test_nms_and_thresholds(owl1: Path) -> None:
    from torchvision.ops import batched_nms

    model = create(f"hf:{owl1}", task="detect", num_classes=2, class_names=["a cat", "a dog"])
    x = torch.rand(1, 3, 64, 64)
    every = model.forward_detect(x, conf=0.0, iou=1.0)[0]
    kept = model.forward_detect(x, conf=0.0, iou=0.3)[0]
    expect = batched_nms(every["boxes"], every["scores"], every["labels"], 0.3)
    torch.testing.assert_close(kept["scores"], every["scores"][expect])
    cut = float(every["scores"].median())
    assert (model.forward_detect(x, conf=cut, iou=1.0)[0]["scores"] > cut).all()
    assert len(model.forward_detect(x, conf=0.0, iou=1.0, max_det=3)[0]["scores"]) == 3


def test_detect_predict_with_prompts_gives_results_named_by_the_prompts(owl1: Path, photos: Path) -> None:
    m = Model(f"hf:{owl1}", task="detect")
    results = m.predict(str(photos), prompts=["a cat", "a cup"], conf=0.0, imgsz=64)
    assert len(results) == 3
    r = results[0]
    assert list(r.names) == ["a cat", "a cup"] or list(r.names.values()) == ["a cat", "a cup"]
    h, w = r.orig_shape
    assert len(r.boxes) > 0 and r.boxes.xyxy[:, 2].max() <= w and r.boxes.xyxy[:, 3].max() <= h
    payload = json.loads(r.to_json())
    assert payload  # the shared Results JSON
    # The same model answers another vocabulary in the next call.
    again = m.predict(str(photos / "coffee.png"), prompts=["a remote"], conf=0.0, imgsz=64)[0]
    assert set(int(c) for c in again.boxes.cls) == {0}


def test_open_vocabulary_errors(owl1: Path, photos: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="prompts"):  # nothing to look for
        Model(f"hf:{owl1}", task="detect").predict(str(photos / "coffee.png"), imgsz=64)
    from optik.tasks.detect import DetectTask

    closed = DetectTask(build_config("detect", "predict", {"model": "house_s", "prompts": ["a cat"], "imgsz": 64}),
                        meta={"classes": ["circle", "square"]})  # fmt: skip
    with pytest.raises(ConfigError, match="open-vocabulary"):  # a detector with fixed classes
        closed.build_model()
    with pytest.raises(ConfigError, match="inference only"):
        Model(f"hf:{owl1}", task="detect").train(data="synthetic:shapes-det?n=8", epochs=1, imgsz=64, project=str(tmp_path))
    with pytest.raises(ConfigError, match="4 classes"):  # val: one prompt per data class
        Model(f"hf:{owl1}", task="detect").val(data="synthetic:shapes-det?n=8", prompts=["a thing"], imgsz=64)
    with pytest.raises(ModelError, match="inference-only"):
        create(f"hf:{owl1}", task="detect", num_classes=1, class_names=["x"]).forward_loss(torch.rand(1, 3, 64, 64), [{}])


def test_val_uses_the_data_class_names_as_queries_and_reports_coco_metrics(owl1: Path) -> None:
    metrics = Model(f"hf:{owl1}", task="detect").val(data="synthetic:shapes-det?n=12", imgsz=64, plots=False)
    assert 0.0 <= metrics["AP"] <= 1.0 and "AP50" in metrics
    named = Model(f"hf:{owl1}", task="detect").val(data="synthetic:shapes-det?n=12", imgsz=64, plots=False,
                                                   prompts=["a circle", "a square", "a triangle", "a star"])  # fmt: skip
    assert 0.0 <= named["AP"] <= 1.0
    from optik.engine.inference import load_trained

    for prompts in (None, ["a circle", "a square", "a triangle", "a star"]):
        cfg = build_config("detect", "val", {"model": f"hf:{owl1}", "data": "synthetic:shapes-det?n=12", "imgsz": 64,
                                             **({"prompts": prompts} if prompts else {})})  # fmt: skip
        task, model, _ = load_trained(cfg)
        task.datasets()
        assert task.meta["classes"] == ["circle", "square", "triangle", "star"]  # metrics are named by the data
        assert model.queries == (prompts or task.meta["classes"])  # what the detector looks for


def test_export_is_refused_clearly(owl1: Path) -> None:
    from optik.tasks.detect import DetectTask

    cfg = build_config("detect", "export", {"model": f"hf:{owl1}", "imgsz": 64})
    task = DetectTask(cfg, meta={"classes": ["a cat"], "model": f"hf:{owl1}"})
    model = create(f"hf:{owl1}", task="detect", num_classes=1, class_names=["a cat"])
    with pytest.raises(ExportError, match="cannot be exported"):
        task.export_module(model)


def test_label_writes_a_coco_json_that_reads_back(owl1: Path, photos: Path) -> None:
    from optik.data.sources import load_detection_data
    from optik.zeroshot.autolabel import label

    cfg = build_config("detect", "label", {"model": f"hf:{owl1}", "source": str(photos), "prompts": ["a cat", "a cup"],
                                           "conf": 0.2, "imgsz": 64})  # fmt: skip
    out = label(cfg)
    assert out == photos / "annotations.json"
    doc = json.loads(out.read_text())
    assert [c["name"] for c in doc["categories"]] == ["a cat", "a cup"]
    assert sorted(i["file_name"] for i in doc["images"]) == ["astronaut.png", "chelsea.png", "coffee.png"]
    assert doc["annotations"] and all(a["score"] > 0.2 for a in doc["annotations"])
    # Equal to what predict gives for the same settings.
    preds = Model(f"hf:{owl1}", task="detect").predict(str(photos), prompts=["a cat", "a cup"], conf=0.2, imgsz=64)
    expected = [(r.path, box) for r in preds for box in r.boxes.xyxy.tolist() if min(box[2] - box[0], box[3] - box[1]) >= 1.0]
    assert len(doc["annotations"]) == len(expected) > 0
    names = {i["id"]: i["file_name"] for i in doc["images"]}
    for a in doc["annotations"]:  # every written box is one predict gave for that image (xywh ↔ xyxy, 0.01 px rounding)
        x, y, w, h = a["bbox"]
        assert any(Path(p).name == names[a["image_id"]] and max(abs(x - b[0]), abs(y - b[1]), abs(x + w - b[2]), abs(y + h - b[3])) < 0.02
                   for p, b in expected)  # fmt: skip
    # Reads back as a detection dataset with the same boxes.
    data = load_detection_data(str(out), val_fraction=0.0, seed=0)
    assert list(data.classes) == ["a cat", "a cup"]
    assert sum(len(data.train.annotation(i)["boxes"]) for i in range(len(data.train))) == len(doc["annotations"])
    with pytest.raises(ConfigError, match="exists"):
        label(cfg)
    with pytest.raises(ConfigError, match="out"):
        label(build_config("detect", "label", {"model": f"hf:{owl1}", "source": str(photos / "coffee.png"), "prompts": ["a cup"]}))


def test_serve_takes_prompts_per_request(owl1: Path, photos: Path) -> None:
    from fastapi.testclient import TestClient

    from optik.serve.app import create_app

    cfg = build_config("detect", "serve", {"model": f"hf:{owl1}", "prompts": ["a cat", "a cup"], "imgsz": 64, "conf": 0.0})
    png = (photos / "chelsea.png").read_bytes()
    with TestClient(create_app(cfg)) as client:
        info = client.get("/info").json()
        assert info["defaults"]["prompts"] == ["a cat", "a cup"] and info["control_specs"]["prompts"]["kind"] == "list"
        served = client.post("/predict", files={"file": ("c.png", png)}).json()
        assert {p["name"] for p in served["predictions"]} <= {"a cat", "a cup"}
        asked = client.post("/predict?prompts=a dog,a boat,a kite", files={"file": ("c.png", png)}).json()
        names = {p["name"] for p in asked["predictions"]}
        assert names and names <= {"a dog", "a boat", "a kite"}
        # …the same as predict with those prompts, and the next plain request is back on the served prompts.
        direct = Model(f"hf:{owl1}", task="detect").predict(str(photos / "chelsea.png"), prompts=["a dog", "a boat", "a kite"],
                                                            conf=0.0, imgsz=64)[0]  # fmt: skip
        assert len(asked["predictions"]) == len(direct.boxes)
        again = client.post("/predict", files={"file": ("c.png", png)}).json()
        assert again["predictions"] == served["predictions"]
        bad = client.post("/predict?prompts=a dog,a dog", files={"file": ("c.png", png)})
        assert bad.status_code == 422 and "prompts" in bad.json()["detail"]


def test_label_with_nothing_found_and_a_video_source(owl1: Path, photos: Path, tmp_path: Path) -> None:
    import cv2

    from optik.zeroshot.autolabel import label

    out = tmp_path / "none.json"
    cfg = build_config("detect", "label", {"model": f"hf:{owl1}", "source": str(photos), "prompts": ["a cat"], "conf": 1.0,
                                           "imgsz": 64, "out": str(out)})  # fmt: skip
    doc = json.loads(label(cfg).read_text())  # nothing above the threshold: every image, no annotation, still valid COCO
    assert len(doc["images"]) == 3 and doc["annotations"] == [] and doc["categories"] == [{"id": 1, "name": "a cat"}]
    video = tmp_path / "one.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 5, (64, 48))
    writer.write(np.zeros((48, 64, 3), np.uint8))  # a 1-frame video
    writer.release()
    with pytest.raises(ConfigError, match="video"):
        label(build_config("detect", "label", {"model": f"hf:{owl1}", "source": str(video), "prompts": ["a cat"],
                                               "imgsz": 64, "out": str(tmp_path / "v.json")}))  # fmt: skip
    assert not (tmp_path / "v.json").exists()
