"""SimCLR and MoCo under DistributedDataParallel see the global batch's negatives (2 gloo processes on CPU).

The relation asserted: with the same global batch, each rank's loss is its share of the global loss (their mean is
the single-process loss), each rank's own rows get ``world ×`` the single-process gradient through the gather
(every rank's loss uses them), and DDP's gradient averaging divides that back, so the parameter gradients equal
the single-process ones. BatchNorm runs in eval mode here: per-rank BN statistics are a separate, known difference
(SyncBatchNorm is CUDA-only), not what these tests are about.
"""

from __future__ import annotations

import pytest
import torch
import torch.distributed as tdist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from optik import distributed as odist
from optik.embed.ssl import EmbedModel, global_nt_xent, nt_xent

WORLD = 2
N, QUEUE, LR = 6, 8, 0.5  # global batch 6 (3 a rank); queue 8: the second step wraps around (ptr 12 % 8 = 4)


def _data(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "z1": torch.randn(5, 8, generator=g), "z2": torch.randn(5, 8, generator=g),  # uneven: rank 0 gets 2 rows, rank 1 gets 3
        "v1": torch.randn(2, N, 3, 8, 8, generator=g), "v2": torch.randn(2, N, 3, 8, 8, generator=g),  # 2 steps of views
    }  # fmt: skip


def _model(method: str) -> EmbedModel:
    torch.manual_seed(0)  # identical weights and initial queue in every process
    backbone = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    m = EmbedModel(backbone, feature_dim=4, method=method, proj_dim=8, hidden=16, queue=QUEUE).train()
    for mod in m.modules():
        if isinstance(mod, nn.modules.batchnorm._BatchNorm):
            mod.eval()  # batch statistics would differ per rank (see the module docstring)
    return m


class _Step(nn.Module):
    def __init__(self, model: EmbedModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, v1: torch.Tensor, v2: torch.Tensor) -> torch.Tensor:
        return self.model.ssl_loss([v1, v2], temperature=0.5, momentum=0.9)["loss"]


def _train(method: str, views: tuple[torch.Tensor, torch.Tensor], ddp: bool) -> list[dict]:
    """Two SGD steps; per step the loss, the parameter gradients and (MoCo) the queue after the step."""
    model = _model(method)
    step = DistributedDataParallel(_Step(model), broadcast_buffers=False) if ddp else _Step(model)  # queues must agree by themselves
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=LR)
    out = []
    for v1, v2 in zip(*views):
        opt.zero_grad()
        loss = step(v1, v2)
        loss.backward()
        grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
        opt.step()
        rec = {"loss": loss.detach(), "grads": grads}
        if method == "moco":
            rec.update(queue=model.queue.clone(), ptr=int(model.queue_ptr))
        out.append(rec)
    return out


def _worker(rank: int, port: int, data: dict[str, torch.Tensor], path: str) -> None:
    tdist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        rows = slice(0, 2) if rank == 0 else slice(2, 5)
        z1, z2 = data["z1"][rows].clone().requires_grad_(), data["z2"][rows].clone().requires_grad_()
        loss = global_nt_xent(z1, z2, 0.5)
        loss.backward()
        b = N // WORLD
        shard = (data["v1"][:, rank * b : (rank + 1) * b], data["v2"][:, rank * b : (rank + 1) * b])
        res = {"uneven": (loss.detach(), z1.grad, z2.grad), "simclr": _train("simclr", shard, ddp=True),
               "moco": _train("moco", shard, ddp=True)}  # fmt: skip
        torch.save(res, f"{path}/rank{rank}.pt")
    finally:
        tdist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    """Both ranks' results (one spawn of 2 gloo processes for the whole file: interpreter start-up dominates)."""
    import socket

    with socket.socket() as s:  # the conftest's free_port is function-scoped
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    path = tmp_path_factory.mktemp("ssl_ddp")
    mp.spawn(_worker, args=(port, _data(), str(path)), nprocs=WORLD, join=True)
    return [torch.load(path / f"rank{r}.pt") for r in range(WORLD)]


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_global_nt_xent_uneven_ranks_equals_single_process(ranks):
    d = _data()
    z1, z2 = d["z1"].clone().requires_grad_(), d["z2"].clone().requires_grad_()
    ref = nt_xent(z1, z2, 0.5)
    ref.backward()
    (l0, g01, g02), (l1, g11, g12) = ranks[0]["uneven"], ranks[1]["uneven"]
    _close((l0 + l1) / WORLD, ref.detach())  # each rank's share: 2 and 3 of the 5 images, weighted to the mean
    assert not torch.allclose(l0, l1)
    # A rank's rows are used by every rank's loss: their gradient is world × the single-process one.
    _close(torch.cat([g01, g11]), WORLD * z1.grad)
    _close(torch.cat([g02, g12]), WORLD * z2.grad)


def test_simclr_two_processes_equal_one_with_the_same_global_batch(ranks):
    d = _data()
    ref = _train("simclr", (d["v1"], d["v2"]), ddp=False)
    v1, v2 = d["v1"][0], d["v2"][0]
    m, b = _model("simclr"), N // WORLD
    with torch.no_grad():
        local = [nt_xent(*m.projector(m.backbone(torch.cat([v1[:b], v2[:b]]))).split(b), 0.5),
                 nt_xent(*m.projector(m.backbone(torch.cat([v1[b:], v2[b:]]))).split(b), 0.5)]  # fmt: skip
    # Negatives from the local batch only (the former behaviour) give a different loss: the test can tell.
    assert abs(float(sum(local)) / WORLD - float(ref[0]["loss"])) > 1e-2
    for step in range(2):
        r0, r1 = ranks[0]["simclr"][step], ranks[1]["simclr"][step]
        _close((r0["loss"] + r1["loss"]) / WORLD, ref[step]["loss"])
        assert r0["grads"].keys() == ref[step]["grads"].keys() and len(ref[step]["grads"]) > 0
        for k, g in ref[step]["grads"].items():
            assert torch.equal(r0["grads"][k], r1["grads"][k]), k  # DDP: one averaged gradient
            _close(r0["grads"][k], g)  # ... equal to the single-process gradient


def test_moco_queues_hold_all_ranks_keys_and_equal_single_process(ranks):
    d = _data()
    ref = _train("moco", (d["v1"], d["v2"]), ddp=False)
    for step, ptr in enumerate([N % QUEUE, 2 * N % QUEUE]):
        r0, r1 = ranks[0]["moco"][step], ranks[1]["moco"][step]
        assert torch.equal(r0["queue"], r1["queue"]) and r0["ptr"] == r1["ptr"] == ref[step]["ptr"] == ptr
        _close(r0["queue"], ref[step]["queue"])
        _close((r0["loss"] + r1["loss"]) / WORLD, ref[step]["loss"])
        for k, g in ref[step]["grads"].items():
            _close(r0["grads"][k], g)
    # The keys of the first step's 6 images are in the queue, slots 0..5; the second step wrapped around.
    assert not torch.allclose(ref[1]["queue"][:4], ref[0]["queue"][:4])


def test_enqueue_more_keys_than_the_queue_keeps_the_newest():
    m = _model("moco")
    m.queue_ptr.fill_(3)
    keys = torch.arange(20, dtype=torch.float).repeat_interleave(8).view(20, 8)  # key i is all i
    m._enqueue(keys)  # as if written one by one from slot 3: the last 8 (12..19) remain, pointer (3 + 20) % 8
    expected = torch.empty(QUEUE, 8)
    for i in range(20):
        expected[(3 + i) % QUEUE] = i
    assert torch.equal(m.queue, expected) and int(m.queue_ptr) == (3 + 20) % QUEUE


def test_single_process_unchanged_and_gather_is_identity():
    z1, z2 = torch.randn(4, 8), torch.randn(4, 8)
    assert torch.equal(global_nt_xent(z1, z2, 0.3), nt_xent(z1, z2, 0.3))
    x = torch.randn(3, 2, requires_grad=True)
    assert odist.all_gather_rows(x, grad=True) is x and odist.all_gather_rows(x) is x
