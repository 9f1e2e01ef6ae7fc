"""Pruning: achieved sparsity, zeros kept through the fine-tune (model and EMA), whole channels for
structured pruning, the run directory's files, the CLI mode."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from optik import Model
from optik.deploy.prune import apply_pruning, prunable, sparsity
from optik.errors import ConfigError
from optik.models import create
from optik.weights import load_state_dict, read_meta


@pytest.mark.parametrize("amount", [0.3, 0.7])
def test_unstructured_sparsity_matches_amount(amount):
    model = create("resnet", num_classes=3)
    masks = apply_pruning(model, "unstructured", amount)
    assert set(masks) == {f"{n}.weight" for n, _ in prunable(model, "unstructured")}
    assert sparsity(model, masks) == pytest.approx(amount, abs=1e-3)
    # Global L1: the smallest magnitudes go, wherever they are; the state_dict keys are unchanged.
    assert not any("_orig" in k or "_mask" in k for k in model.state_dict())


def test_structured_removes_whole_output_channels():
    model = create("cnn", num_classes=3)
    masks = apply_pruning(model, "structured", 0.5)
    convs = prunable(model, "structured")
    assert convs and all(isinstance(m, torch.nn.Conv2d) for _, m in convs)
    for _, conv in convs:
        w = conv.weight.detach()
        dead = (w.flatten(1) == 0).all(1)
        assert int(dead.sum()) == round(0.5 * w.shape[0])  # whole filters
        assert (w.flatten(1)[~dead] != 0).all()  # the kept filters are untouched
    assert sparsity(model, masks) == pytest.approx(0.5, abs=1e-6)
    assert (model.head.weight != 0).all()  # structured pruning leaves the linear head alone


def test_prune_finetune_keeps_zeros_and_writes_the_table(tiny_run, tmp_path):
    # A large lr and EMA on: without the mask callback, AdamW and the EMA would refill the zeros.
    rows = Model(tiny_run["best"]).prune(amount=[0.5, 0.8], epochs=1, lr=0.01, ema=True, ema_decay=0.5, project=str(tmp_path))
    assert [r["amount"] for r in rows] == [0.5, 0.8]
    base = create("cnn", num_classes=3)
    base.load_state_dict(load_state_dict(tiny_run["best"]))
    for r in rows:
        assert r["sparsity"] == pytest.approx(r["amount"], abs=2e-3)
        assert r["nonzero_params"] < r["params"] and r["gzip_mb"] < r["size_mb"]
        assert 0 <= r["top1_pruned"] <= 1 and 0 <= r["top1_finetuned"] <= 1
        pruned = create("cnn", num_classes=3)
        pruned.load_state_dict(base.state_dict())
        masks = apply_pruning(pruned, "unstructured", r["amount"])  # deterministic: the same masks
        tuned = load_state_dict(r["weights"])
        for k, mask in masks.items():
            assert (tuned[k][mask == 0] == 0).all(), k  # zeros stayed zero
        assert any(not torch.equal(tuned[k], pruned.state_dict()[k]) for k in masks)  # and it did train
        # The weights are self-describing and load with Model(...).
        assert read_meta(r["weights"])["prune"]["amount"] == r["amount"]
        assert Model(r["weights"]).predict(torch.zeros(3, 32, 32, dtype=torch.uint8))[0].probs is not None
    assert rows[1]["gzip_mb"] < rows[0]["gzip_mb"]  # more zeros compress better

    run = Path(rows[0]["weights"]).parent.parent
    table = list(csv.DictReader(open(run / "table.csv")))
    assert [float(t["amount"]) for t in table] == [0.5, 0.8]
    assert float(table[0]["top1_finetuned"]) == pytest.approx(rows[0]["top1_finetuned"])
    results = json.loads((run / "results.json").read_text())
    assert results["baseline"]["method"] == "dense" and len(results["rows"]) == 2
    png = (run / "sparsity_accuracy.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert "| 0.8 |" in (run / "report.md").read_text()


def test_cli_prune_structured_without_finetune(tiny_run, tmp_path, monkeypatch):
    from optik.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["classify", "prune", f"model={tiny_run['run_dir']}", "method=structured", "amount=0.25", "epochs=0"]) == 0
    run = tmp_path / "runs" / "classify" / "prune"
    (row,) = json.loads((run / "results.json").read_text())["rows"]
    assert row["top1_finetuned"] is None and row["sparsity"] == pytest.approx(0.25, abs=0.02)
    w = load_state_dict(run / "weights" / "structured-0.25.safetensors")
    convs = [k for k, v in w.items() if v.ndim == 4]
    assert convs and all(int((w[k].flatten(1) == 0).all(1).sum()) == round(0.25 * w[k].shape[0]) for k in convs)
    assert not (run / "finetune").exists()


def test_prune_needs_trained_weights(tmp_path):
    with pytest.raises(ConfigError, match="'model'.*trained"):
        Model("cnn").prune(amount=[0.5], project=str(tmp_path))
    with pytest.raises(ConfigError, match="'amount'"):
        Model("cnn").prune(amount=[1.5], project=str(tmp_path))
