"""Classification end to end: train → artifacts → val → predict, with native, timm and HF models."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from optik import Model
from optik.errors import ConfigError, ImageError
from optik.weights import load_state_dict


def test_run_artifacts(tiny_run):
    run = Path(tiny_run["run_dir"])
    for f in ["config.yaml", "metrics.csv", "report.md", "report.html", "weights/best.safetensors",
              "weights/last.safetensors", "weights/state.pt", "plots/training_curves.png",
              "plots/confusion_matrix.png", "plots/val_predictions.png", "plots/per_class_f1.png"]:
        assert (run / f).is_file(), f
    assert list((run / "tb").glob("events.out.tfevents.*"))
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert {"train/loss", "val/loss", "val/top1", "lr"} <= set(rows[0])
    assert "top-1 accuracy" in (run / "report.md").read_text()


def test_val_reproduces_training_metrics(tiny_run, tmp_path):
    m = Model(tiny_run["run_dir"])
    assert m.task == "classify" and len(m.names) == 3
    metrics = m.val(project=str(tmp_path))  # data, split and imgsz come from the weights' metadata
    assert metrics["top1"] == pytest.approx(tiny_run["metrics"]["top1"], abs=1e-12)
    assert metrics["count"] == tiny_run["metrics"]["count"]
    assert (Path(metrics["run_dir"]) / "plots" / "confusion_matrix.png").is_file()


def test_predict_sources(tiny_run, tmp_path):
    m = Model(tiny_run["best"])
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 255, (40, 30, 3), dtype=np.uint8)
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(arr).save(folder / f"{i}.png")
    (folder / "corrupt.png").write_bytes(b"not an image")
    res_arr = m.predict(arr)
    res_pil = m.predict(Image.fromarray(arr))
    res_dir = m.predict(str(folder))  # the corrupt file is skipped, not fatal
    res_glob = m.predict(str(folder / "*.png"))
    assert len(res_arr) == len(res_pil) == 1 and len(res_dir) == 3 and len(res_glob) == 3
    p = res_arr[0].probs
    assert torch.allclose(p.data, res_dir[0].probs.data, atol=1e-6)  # PNG round trip is lossless
    assert abs(float(p.data.sum()) - 1) < 1e-5 and p.top1 == int(p.data.argmax())
    assert res_arr[0].orig_shape == (40, 30)
    js = json.loads(res_dir[0].to_json())
    assert js["predictions"][0]["name"] == m.names[p.top1]
    plotted = res_arr[0].plot()
    assert plotted.dtype == np.uint8 and plotted.ndim == 3
    with pytest.raises(ImageError, match="corrupt.png"):
        m.predict(str(folder / "corrupt.png"))  # named explicitly: an error, not a skip
    with pytest.raises(ConfigError, match="nowhere"):
        m.predict(str(tmp_path / "nowhere.png"))


def test_predict_save_writes_images_and_jsonl(tiny_run, tmp_path):
    arr = np.zeros((32, 32, 3), np.uint8)
    res = Model(tiny_run["best"]).predict([arr, arr], save=True, project=str(tmp_path))
    out = tmp_path / "classify" / "predict"
    assert len(res) == 2 and len(list(out.glob("*.png"))) == 2
    assert len((out / "predictions.jsonl").read_text().splitlines()) == 2


@pytest.mark.slow
def test_cnn_learns_digits(tmp_path):
    m = Model("cnn")
    metrics = m.train(data="digits", epochs=3, imgsz=16, batch=32, lr=3e-3, project=str(tmp_path))
    assert metrics["top1"] > 0.85  # chance is 0.10
    assert metrics["confusion_matrix"].sum() == metrics["count"]
    assert abs(metrics["count"] - 0.2 * 1797) <= 10  # the stratified 20 % val split


def test_timm_model_trains_and_predicts(tmp_path):
    m = Model("timm:convnext_atto")
    m.train(data="synthetic:shapes?n=40&size=32&classes=2", epochs=1, imgsz=32, batch=20, project=str(tmp_path))
    assert Path(m.model).name == "best.safetensors"
    assert m.predict(np.zeros((32, 32, 3), np.uint8))[0].probs.data.shape == (2,)


def test_hf_model_from_local_dir_is_self_describing(tmp_path):
    from transformers import AutoModelForImageClassification, ViTConfig

    cfg = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                    intermediate_size=64, num_labels=5)
    hf_dir = tmp_path / "tiny-vit"
    AutoModelForImageClassification.from_config(cfg).save_pretrained(hf_dir)
    m = Model(f"hf:{hf_dir}")
    m.train(data="synthetic:shapes?n=40&size=32&classes=2", epochs=1, imgsz=32, batch=20, project=str(tmp_path))
    shutil.rmtree(hf_dir)  # val/predict must rebuild from the weights file alone
    before = m.predict(np.zeros((32, 32, 3), np.uint8))[0].probs.data
    again = Model(m.model).predict(np.zeros((32, 32, 3), np.uint8))[0].probs.data
    assert before.shape == (2,) and torch.allclose(before, again)


def test_two_phase_finetune_freezes_then_unfreezes(tiny_run, tmp_path):
    # Start from the tiny run's weights on a 2-class dataset: the head is re-initialised.
    m = Model(tiny_run["best"])
    start = load_state_dict(tiny_run["best"])
    seen = {}

    def snapshot(trainer, epoch, logs):
        seen[epoch] = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}

    m.add_callback("on_epoch_end", snapshot)
    m.train(data="synthetic:shapes?n=40&size=32&classes=2", epochs=2, imgsz=32, batch=20, freeze="backbone",
            freeze_epochs=1, project=str(tmp_path))
    body = [k for k in start if not k.startswith("head") and start[k].dtype.is_floating_point]
    assert body
    assert all(torch.equal(seen[0][k], start[k]) for k in body)  # phase 1: backbone and BN stats fixed
    assert any(not torch.equal(seen[1][k], start[k]) for k in body)  # phase 2: everything trains


def test_imbalance_options_train(tmp_path):
    m = Model("mlp")
    metrics = m.train(data="synthetic:shapes?n=30&size=16&classes=3", epochs=1, imgsz=16, batch=10,
                      class_weights=True, sampler="weighted", label_smoothing=0.1, cutmix=1.0,
                      accumulate=2, clip_grad=1.0, scheduler="onecycle", optimizer="sgd", nesterov=True,
                      project=str(tmp_path))
    assert 0.0 <= metrics["top1"] <= 1.0 and metrics["count"] == 6


def test_skip_bad_counts_and_trains(image_dir, tmp_path, caplog):
    (image_dir / "train" / "red" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    m = Model("mlp")
    with caplog.at_level("WARNING"):
        m.train(data=str(image_dir), epochs=1, imgsz=16, batch=4, skip_bad=True, project=str(tmp_path))
    assert "broken.png" in caplog.text and "skipped 1" in caplog.text


def test_predict_video_frame_by_frame(tiny_run, tmp_path):
    import cv2

    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (40, 32))
    for i in range(5):
        writer.write(np.full((32, 40, 3), 40 * i, np.uint8))
    writer.release()
    res = Model(tiny_run["best"]).predict(str(video), save=True, project=str(tmp_path))
    assert len(res) == 5 and res[0].path.endswith("#frame000000") and res[0].orig_shape == (32, 40)
    out = tmp_path / "classify" / "predict" / "clip.mp4"
    cap = cv2.VideoCapture(str(out))
    assert cap.isOpened() and int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 5
    assert len((out.parent / "predictions.jsonl").read_text().splitlines()) == 5


def test_predict_with_a_trained_hf_model_and_its_own_labels(tmp_path):
    """HF interop: an hf:<dir> classifier predicts with its id2label, no optik training needed."""
    from transformers import AutoModelForImageClassification, ViTConfig

    cfg = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                    intermediate_size=64, id2label={0: "cat", 1: "dog", 2: "fox"}, label2id={"cat": 0, "dog": 1, "fox": 2})
    hf = AutoModelForImageClassification.from_config(cfg).eval()
    hf.save_pretrained(tmp_path / "vit")
    m = Model(f"hf:{tmp_path / 'vit'}")
    r = m.predict(np.zeros((32, 32, 3), np.uint8), imgsz=32)[0]
    assert r.names == ["cat", "dog", "fox"]
    # No preprocessor_config.json was saved, so optik normalises with ImageNet statistics.
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    x = (torch.zeros(1, 3, 32, 32) - mean) / std
    with torch.no_grad():
        ref = hf(pixel_values=x).logits.softmax(-1)[0]
    assert torch.allclose(r.probs.data, ref, atol=1e-4)  # the hub weights, not a re-initialised head
