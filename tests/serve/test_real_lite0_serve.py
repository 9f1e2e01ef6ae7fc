"""``optik serve`` on real ImageNet weights (EfficientNet-Lite0, the ``lite0_weights`` fixture): a real photo uploaded
as a JPEG comes back with its ImageNet label, from the converted file and from ``model=timm:<arch> pretrained=<file>``."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from optik.models.pretrained import imagenet_classes


def jpeg(a) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "JPEG", quality=92)
    return buf.getvalue()


@pytest.mark.parametrize("how", ["converted file", "architecture + pretrained"])
def test_serve_answers_a_real_photo_with_its_imagenet_label(lite0_weights, real_photos, real_labels, make_client, how):
    if how == "converted file":
        c = make_client(lite0_weights)
    else:
        c = make_client("timm:tf_efficientnet_lite0", pretrained=str(lite0_weights))
    info = c.get("/info").json()
    assert info["classes"] == imagenet_classes() and info["imgsz"] == 224
    assert info["control_specs"]["topk"]["slider_max"] == 20
    r = c.post("/predict?topk=3", files={"file": ("coffee.jpg", jpeg(real_photos["coffee"]), "image/jpeg")})
    assert r.status_code == 200, r.text
    body = r.json()
    top = body["predictions"][0]
    assert top["class"] in real_labels["coffee"] and top["name"] == imagenet_classes()[top["class"]]
    assert len(body["predictions"]) == 3 and body["summary"].startswith(top["name"])
    cat = c.post("/predict", files={"file": ("chelsea.jpg", jpeg(real_photos["chelsea"]), "image/jpeg")}).json()
    assert cat["predictions"][0]["class"] in real_labels["chelsea"]
