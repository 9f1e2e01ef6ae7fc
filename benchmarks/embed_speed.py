"""Embedding extraction and search speed (issue 16's ``embed_speed``).

- extraction: pooled features of ``timm:resnet18`` (random init: speed only) at 128 px, batch 32 — eager fp32,
  eager through optik's inference fast path (``optimize_for_inference``), the fast path under bf16 autocast, and
  ONNX Runtime fp32 (``torch.onnx.export`` of the same module); images/s, median of ``reps`` interleaved rounds,
  and the max |Δ| of the L2-normalised features vs eager fp32;
- search: :class:`optik.embed.index.FeatureIndex` (exact cosine top-10, batched matmul) over 10k and 100k random
  512-d vectors: ms per query at batch 1 and per query in a batch of 256, vs scikit-learn's brute-force
  ``NearestNeighbors(metric="cosine")`` on the same data (top-10 rows must agree).

    python benchmarks/embed_speed.py [reps=5] [imgsz=128]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from _common import write_results  # noqa: E402

from optik.device import autocast  # noqa: E402
from optik.embed.build import build_embedder  # noqa: E402
from optik.embed.index import FeatureIndex, faiss_available  # noqa: E402
from optik.engine.fastpath import optimize_for_inference  # noqa: E402


def _median_ms(fn, reps: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times)


def extraction(reps: int, imgsz: int, batch: int = 32) -> list[dict]:
    import onnxruntime as ort

    model, _ = build_embedder("timm:resnet18", img_size=imgsz)
    model.eval()
    x = torch.rand(batch, 3, imgsz, imgsz)
    with torch.inference_mode():
        ref = F.normalize(model(x), dim=-1)
    fast = optimize_for_inference(model)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "embed.onnx"
        torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=17, input_names=["images"],
                          output_names=["features"], dynamic_axes={"images": {0: "batch"}})  # fmt: skip
        so = ort.SessionOptions()
        so.intra_op_num_threads = torch.get_num_threads()
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        xn = x.numpy()

        def eager():
            with torch.inference_mode():
                return model(x)

        def fastpath():
            with torch.inference_mode():
                return fast(x)

        def fast_bf16():
            with torch.inference_mode(), autocast(torch.device("cpu"), torch.bfloat16):
                return fast(x).float()

        def onnx():
            return torch.from_numpy(sess.run(None, {"images": xn})[0])

        variants = {"eager fp32": eager, "optik fast path fp32": fastpath, "optik fast path bf16": fast_bf16, "onnxruntime fp32": onnx}
        ms: dict[str, list[float]] = {k: [] for k in variants}
        for _ in range(reps):  # interleaved rounds: load changes hit every variant alike
            for name, fn in variants.items():
                ms[name].append(_median_ms(fn, 3, warmup=1))
        rows = []
        for name, fn in variants.items():
            diff = (F.normalize(fn(), dim=-1) - ref).abs().max().item()
            m = statistics.median(ms[name])
            rows.append({"section": "extraction", "variant": name, "batch": batch, "imgsz": imgsz, "ms_per_batch": round(m, 2),
                         "img_per_s": round(1e3 * batch / m, 1), "max_abs_diff_normalised": diff})  # fmt: skip
    return rows


def search(reps: int, dim: int = 512, k: int = 10) -> list[dict]:
    from sklearn.neighbors import NearestNeighbors

    rows = []
    gen = torch.Generator().manual_seed(0)
    for n in (10_000, 100_000):
        feats = torch.randn(n, dim, generator=gen)
        queries = torch.randn(256, dim, generator=gen)
        idx = FeatureIndex(feats, [str(i) for i in range(n)])
        nn_ = NearestNeighbors(n_neighbors=k, metric="cosine", algorithm="brute").fit(feats.numpy())
        one = _median_ms(lambda: idx.search(queries[:1], k=k), reps)
        many = _median_ms(lambda: idx.search(queries, k=k), reps) / len(queries)
        ref_one = _median_ms(lambda: nn_.kneighbors(queries[:1].numpy()), reps)
        ref_many = _median_ms(lambda: nn_.kneighbors(queries.numpy()), max(reps // 2, 1)) / len(queries)
        _, rows_optik = idx.search(queries, k=k)
        _, rows_ref = nn_.kneighbors(queries.numpy())
        agree = float(np.mean([set(a) == set(b) for a, b in zip(rows_optik.tolist(), rows_ref.tolist())]))
        row = {"section": "search", "vectors": n, "dim": dim, "k": k, "optik_ms_query_b1": round(one, 3),
               "optik_ms_query_b256": round(many, 4), "sklearn_ms_query_b1": round(ref_one, 3),
               "sklearn_ms_query_b256": round(ref_many, 4), "top10_sets_agree": agree}  # fmt: skip
        if faiss_available():  # the same exact search in FAISS' IndexFlatIP (built once, at the first search)
            row["faiss_ms_query_b1"] = round(_median_ms(lambda: idx.search(queries[:1], k=k, backend="faiss"), reps), 3)
            row["faiss_ms_query_b256"] = round(_median_ms(lambda: idx.search(queries, k=k, backend="faiss"), reps) / len(queries), 4)
            row["faiss_top10_sets_agree"] = float(np.mean([set(a) == set(b) for a, b in
                                                           zip(idx.search(queries, k=k, backend="faiss")[1].tolist(), rows_ref.tolist())]))  # fmt: skip
        rows.append(row)
    return rows


def main() -> None:
    args = dict(a.split("=", 1) for a in sys.argv[1:] if "=" in a)
    reps, imgsz = int(args.get("reps", 5)), int(args.get("imgsz", 128))
    rows = extraction(reps, imgsz) + search(reps)
    write_results("embed_speed", rows, model="timm:resnet18 (random init)",
                  note="extraction: median over interleaved rounds; search: exact cosine top-10 on random vectors "
                       "(FAISS rows when faiss is installed)")  # fmt: skip


if __name__ == "__main__":
    main()
