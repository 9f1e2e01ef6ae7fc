"""A many-class per-class table lists only its lowest-F1 classes (worst first) and says how many it left out."""

from __future__ import annotations

import torch

from optik.metrics.classification import ClassificationMetrics, format_per_class_table


def test_max_rows_lists_the_lowest_f1_classes() -> None:
    g = torch.Generator().manual_seed(0)
    n, c = 2000, 60
    targets = torch.randint(0, c, (n,), generator=g)
    logits = torch.randn(n, c, generator=g)
    logits[torch.arange(n), targets] += torch.linspace(0, 6, c)[targets]  # class k gets easier with k
    m = ClassificationMetrics(num_classes=c, topk=(1,), class_names=[f"class{k}" for k in range(c)])
    m.update(logits, targets)
    r = m.compute()
    full = format_per_class_table(r).splitlines()
    short = format_per_class_table(r, max_rows=10).splitlines()
    assert len(full) == c + 2 + 4  # header, rule, 60 rows, rule, macro, weighted, accuracy
    rows = [line.split()[0] for line in short[2:12]]
    f1 = r["per_class"]["f1"]
    worst = sorted(range(c), key=lambda k: (f1[k], k))[:10]
    assert rows == [f"class{k}" for k in worst]
    assert short[12].startswith("… 50 more classes")
    assert short[-3:] == full[-3:]  # the averages cover every class either way
    assert format_per_class_table(r, max_rows=100) == format_per_class_table(r)
