"""``optik detect label``: auto-label a folder of images into a COCO dataset JSON with any detector — an
open-vocabulary one (OWL-ViT / OWLv2: ``prompts=`` name the categories) or a trained optik detector
(pseudo-labels). The file reads back as ``data=`` for ``optik detect train`` / ``val``.

    optik detect label model=hf:owlv2-base-patch16 source=photos/ prompts=[a cat,a remote] conf=0.3
    # → photos/annotations.json: images (file_name relative to the JSON's folder), categories, annotations
    #   (bbox xywh in pixels, area, score, iscrowd 0)

>>> from optik.config import build_config
>>> label(build_config("detect", "label", {"model": "hf:owl", "source": "photos/", "prompts": ["a cat"]}))  # doctest: +SKIP
PosixPath('photos/annotations.json')
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from optik.console import console
from optik.data.formats.coco import json_file_name
from optik.errors import ConfigError

MIN_SIDE = 1.0  # px: boxes thinner than this are not written


def default_out(source: Any) -> Path:
    """``<folder>/annotations.json`` for a folder source; an explicit ``out=`` otherwise."""
    if isinstance(source, (str, Path)) and Path(source).is_dir():
        return Path(source) / "annotations.json"
    raise ConfigError("missing key 'out' (the COCO JSON to write; it defaults to <folder>/annotations.json only when "
                      "source= is a folder)")  # fmt: skip


def to_coco(results: list[Any], names: list[str], out: Path) -> dict[str, Any]:
    """Detection :class:`~optik.results.Results` → a COCO dataset dict (ids from 1; each annotation keeps its ``score``;
    boxes thinner than :data:`MIN_SIDE` px dropped). Instance-segmentation results keep their RLE masks as ``segmentation``."""
    images, annotations = [], []
    cat_ids = [k + 1 for k in range(len(names))]
    for i, r in enumerate(results, 1):
        h, w = r.orig_shape
        images.append({"id": i, "file_name": json_file_name(r.path, out), "width": int(w), "height": int(h)})
        for row in r.to_coco(i, cat_ids):
            bbox = [round(float(v), 2) for v in row["bbox"]]
            if bbox[2] < MIN_SIDE or bbox[3] < MIN_SIDE:
                continue  # a sliver at the image edge (clipped box) is no object to train on
            annotations.append({**row, "bbox": bbox, "score": round(float(row["score"]), 4), "id": len(annotations) + 1,
                                "area": round(bbox[2] * bbox[3], 2), "iscrowd": 0})  # fmt: skip
    categories = [{"id": c, "name": n} for c, n in zip(cat_ids, names)]
    return {"images": images, "annotations": annotations, "categories": categories,
            "info": {"description": "optik detect label (auto-labelled)"}}  # fmt: skip


def label(cfg: Any) -> Path:
    """Predict ``cfg.source`` with ``cfg.model`` and write the detections as COCO JSON to ``cfg.out``; returns its path.

    Raises:
        ConfigError: no ``out`` for a non-folder source, ``out`` exists (without ``exist_ok=true``), a video source.
    """
    from optik.config import build_config
    from optik.engine.inference import FRAME_SEP, predict
    from optik.weights import atomic_write

    out = Path(cfg.out) if cfg.out else default_out(cfg.source)
    if out.suffix.lower() != ".json":
        raise ConfigError(f"bad value for 'out': {str(out)!r} (a COCO .json file)")
    if out.exists() and not cfg.exist_ok:
        raise ConfigError(f"bad value for 'out': {out} exists; pass exist_ok=true to overwrite it")
    keys = {k: getattr(cfg, k) for k in cfg.model_fields_set if k not in ("out", "mode", "task", "save", "save_txt")}
    pcfg = build_config("detect", "predict", {**keys, "conf": cfg.conf, "save": False})
    results, names = [], None
    with console.status("labelling…") as status:
        for r in predict(pcfg):
            if FRAME_SEP in r.path:
                raise ConfigError(f"bad value for 'source': {r.path.split(FRAME_SEP)[0]} is a video; label takes images")
            r.release_image()  # keep the boxes, not the pixels: constant memory on a large folder
            results.append(r)
            names = names or list(r.names.values() if isinstance(r.names, dict) else r.names)
            status.update(f"labelling… {len(results)} images")
    doc = to_coco(results, names or [], out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, lambda tmp: Path(tmp).write_text(json.dumps(doc), encoding="utf-8"))
    per_class = Counter(doc["categories"][a["category_id"] - 1]["name"] for a in doc["annotations"])
    counts = ", ".join(f"{n} {per_class[n]}" for n in (names or [])) or "no classes"
    console.print(f"{len(doc['images'])} images, {len(doc['annotations'])} boxes ({counts}) written to [bold]{out}[/bold]")
    return out


__all__ = ["label", "to_coco"]
