"""recall@k, CLIPScore and the zero-shot metric against hand computations and scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import top_k_accuracy_score

from optik.metrics.retrieval import ZeroShotMetric, clip_score, positives_from_ids, recall_at_k, retrieval_recalls


def test_recall_at_k_by_hand() -> None:
    sim = torch.tensor([[0.9, 0.1, 0.5, 0.3],   # correct: 2 → rank 2
                        [0.2, 0.3, 0.8, 0.1],   # correct: 0 or 3 → best rank 3 (item 0)
                        [0.1, 0.9, 0.0, 0.2],   # correct: 1 → rank 1
                        [0.5, 0.5, 0.5, 0.5]])  # no correct item: always a miss
    pos = torch.tensor([[0, 0, 1, 0], [1, 0, 0, 1], [0, 1, 0, 0], [0, 0, 0, 0]], dtype=torch.bool)
    assert recall_at_k(sim, pos, (1, 2, 3, 10)) == {1: 0.25, 2: 0.5, 3: 0.75, 10: 0.75}


def test_recall_at_k_ties_break_by_gallery_order() -> None:
    sim = torch.tensor([[0.5, 0.5, 0.5]])
    assert recall_at_k(sim, torch.tensor([[False, True, False]]), (1, 2))[1] == 0.0
    assert recall_at_k(sim, torch.tensor([[True, False, False]]), (1,))[1] == 1.0


def test_recall_equals_sklearn_top_k_accuracy_with_one_positive() -> None:
    rng = np.random.default_rng(0)
    sim = rng.normal(size=(40, 12))
    y = rng.integers(0, 12, 40)
    pos = torch.from_numpy(np.eye(12, dtype=bool)[y])
    got = recall_at_k(torch.from_numpy(sim), pos, (1, 3, 5))
    for k in (1, 3, 5):
        assert got[k] == pytest.approx(top_k_accuracy_score(y, sim, k=k, labels=range(12)))


def test_retrieval_recalls_both_directions() -> None:
    # 3 images, 2 captions: images 0 and 1 share caption 0; image 2 has caption 1.
    img = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    txt = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    pos = positives_from_ids(torch.tensor([7, 7, 9]), torch.tensor([7, 9]))
    r = retrieval_recalls(img, txt, pos, (1, 2))
    # image→text: image 1 (cos 0.6 vs 0.8) ranks caption 9 first → miss at 1.
    assert r["i2t_R@1"] == pytest.approx(2 / 3) and r["i2t_R@2"] == 1.0
    # text→image: caption 7's nearest image is 0 (correct); caption 9's is image 2 (correct).
    assert r["t2i_R@1"] == 1.0


def test_clip_score_by_hand() -> None:
    img = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    txt = torch.tensor([[4.0, 3.0], [-1.0, 0.0]])
    # cos = 24/25 = 0.96 → 100 · 2.5 · 0.96 = 240; a negative cosine scores 0.
    assert clip_score(img, txt).tolist() == pytest.approx([240.0, 0.0])
    assert clip_score(img, txt, w=1.0)[0] == pytest.approx(96.0)
    with pytest.raises(ValueError, match="pairs expected"):
        clip_score(img, txt[:1])


def test_zero_shot_metric_by_hand() -> None:
    m = ZeroShotMetric(["a", "b", "c"], heldout=[1, 2], ks=(1,))
    img = F.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [1.0, -1.0]]), dim=-1)
    logits = torch.tensor([[0.1, 0.9, 0.0],    # label 1: right
                           [0.0, 0.2, 0.8],    # label 1: wrong (2), also wrong within held-out
                           [0.9, 0.5, 0.1],    # label 2: wrong overall (0); within {1, 2}: 1 → wrong
                           [0.0, 0.0, 0.0]])   # label -1: left out of top-1
    targets = {"label": torch.tensor([1, 1, 2, -1]), "caption_id": torch.tensor([5, 6, 5, 8])}
    m.update({"image": img[:2], "text": img[:2], "logits": logits[:2]}, {k: v[:2] for k, v in targets.items()})
    m.update({"image": img[2:], "text": img[2:], "logits": logits[2:]}, {k: v[2:] for k, v in targets.items()})
    out = m.compute()
    assert out["top1"] == pytest.approx(1 / 3) and out["images_classified"] == 3
    assert out["top1_within_heldout"] == pytest.approx(1 / 3) and out["chance"] == pytest.approx(1 / 3)
    assert out["captions"] == 3  # ids 5, 6, 8; caption 5's embedding is image 0's text
    # i2t: image 0 → caption 5 (itself) ✓; image 1 → caption 6 ✓; image 2 ([.7,.7]) nearest of {5:[1,0], 6:[0,1], 8:[.7,-.7]}: tie 5/6 → 5 ✓;
    # image 3 → caption 8 ✓.
    assert out["i2t_R@1"] == 1.0
