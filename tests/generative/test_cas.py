"""Classification Accuracy Score: high when generated images carry their class, chance when labels are shuffled."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from optik.generative.cas import classification_accuracy_score


@pytest.mark.slow
def test_cas_high_on_real_digits_and_chance_on_shuffled_labels(tmp_path):
    from optik.data.synthetic import digits

    x, y, classes = digits(16)
    imgs = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()[:, :1]  # uint8 (N, 1, 16, 16) grey
    fake_x, fake_y, real_x, real_y = imgs[:1200], y[:1200], imgs[1200:], y[1200:]
    kw = dict(model="cnn", epochs=6, imgsz=16, hflip=0.0, batch=32, scale=(0.8, 1.0))
    good = classification_accuracy_score(fake_x, fake_y, real_x, real_y, classes, project=tmp_path, **kw)
    assert good["CAS"] > 0.8 and good["CAS_best"] >= good["CAS"]
    assert good["n_fake"] == 1200 and good["n_real"] == len(real_y)
    shuffled = np.random.default_rng(0).permutation(fake_y)
    bad = classification_accuracy_score(fake_x, shuffled, real_x, real_y, classes, **kw)  # temporary project
    assert bad["CAS"] < 0.3 and bad["run_dir"] is None


def test_cas_rejects_bad_labels():
    from optik.errors import DatasetError

    x = torch.zeros(4, 1, 8, 8, dtype=torch.uint8)
    with pytest.raises(DatasetError):
        classification_accuracy_score(x, [0, 1, 2, 5], x, [0, 1, 0, 1], ["a", "b"], epochs=1)
