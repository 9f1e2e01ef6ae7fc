"""`optik segment train task=semantic data=<COCO instances json>` end to end: instances written as COCO
(polygons from `synthetic:shapes-inst`) train a semantic model and validate against the rasterised maps."""

from __future__ import annotations

import numpy as np
import pytest

from optik import Model
from optik.cli import main
from optik.data.convert import convert
from optik.data.sources import load_segmentation_data

INST = "synthetic:shapes-inst?n=12&size=64&classes=2&max_objects=3&seed=0"


def test_coco_instances_train_semantic_and_validate(tmp_path, capsys):
    coco = convert(INST, tmp_path / "coco", to="coco")
    path = coco / "annotations" / "instances_train.json"
    # the COCO file's class maps are the synthetic scenes' own instances, rasterised (occluding: no overlap)
    data = load_segmentation_data(path, kind="semantic", val_fraction=0)
    ref = load_segmentation_data(INST, val_fraction=0).train
    assert data.classes == ["background", *ref.classes]
    for i in range(3):
        t = ref.load_target(i)
        want = np.zeros(t["orig_size"], np.int64)
        for m, lab in zip(t["masks"].numpy(), t["labels"].tolist()):
            want[m] = lab + 1
        np.testing.assert_array_equal(data.train.load_target(i)["semantic"].numpy(), want)

    args = [f"data={path}", "model=unet_s", "epochs=1", "imgsz=64", "batch=4", f"project={tmp_path}", "plots=false"]
    assert main(["segment", "train", "task=semantic", *args]) == 0, capsys.readouterr().err
    assert "cannot give semantic" not in capsys.readouterr().err
    run = max((tmp_path / "segment").glob("train*"))
    m = Model(str(run / "weights" / "best.safetensors"))
    assert m.names == ["background", *ref.classes] and m.meta["cat_ids"] == [-1, 0, 1]  # ids 0..1 taken: background -1
    metrics = m.val(data=str(path), project=str(tmp_path), plots=False)
    assert 0.0 <= metrics["mIoU"] <= 1.0 and 0.0 <= metrics["pixel_acc"] <= 1.0
    # the data recorded with the weights is enough: val re-reads the COCO file as class maps
    assert Model(str(run)).val(project=str(tmp_path), plots=False)["mIoU"] == pytest.approx(metrics["mIoU"])
