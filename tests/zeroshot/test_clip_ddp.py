"""The tiny CLIP's contrastive loss under DistributedDataParallel uses every rank's captions and images as negatives
(2 gloo processes on CPU): the mean of the ranks' losses is the single-process loss of the whole batch, and a rank's
rows get ``world ×`` the single-process gradient through the gather (DDP's averaging divides it back)."""

from __future__ import annotations

import socket

import pytest
import torch
import torch.distributed as tdist
import torch.multiprocessing as mp
import torch.nn.functional as F

from optik.zeroshot.clip import contrastive_loss, global_contrastive_loss

WORLD = 2
SPLIT = (slice(0, 3), slice(3, 7))  # uneven on purpose: 3 and 4 rows


def _data() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    ids = torch.tensor([5, 1, 2, 5, 3, 4, 1])  # repeated captions across ranks: several positives per row
    return {"img": F.normalize(torch.randn(7, 8, generator=g), dim=-1), "txt": F.normalize(torch.randn(7, 8, generator=g), dim=-1),
            "ids": ids, "scale": torch.tensor(10.0)}  # fmt: skip


def _worker(rank: int, port: int, path: str) -> None:
    tdist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        d, rows = _data(), SPLIT[rank]
        img, txt = d["img"][rows].clone().requires_grad_(), d["txt"][rows].clone().requires_grad_()
        scale = d["scale"].clone().requires_grad_()
        loss = global_contrastive_loss(img, txt, scale, d["ids"][rows])
        loss.backward()
        torch.save({"loss": loss.detach(), "img": img.grad, "txt": txt.grad, "scale": scale.grad}, f"{path}/rank{rank}.pt")
    finally:
        tdist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    path = tmp_path_factory.mktemp("clip_ddp")
    mp.spawn(_worker, args=(port, str(path)), nprocs=WORLD, join=True)
    return [torch.load(path / f"rank{r}.pt") for r in range(WORLD)]


def test_two_ranks_equal_the_whole_batch_in_one_process(ranks):
    d = _data()
    img, txt, scale = d["img"].clone().requires_grad_(), d["txt"].clone().requires_grad_(), d["scale"].clone().requires_grad_()
    ref = contrastive_loss(img, txt, scale, d["ids"][:, None] == d["ids"][None, :])
    ref.backward()
    close = dict(rtol=1e-5, atol=1e-6)
    torch.testing.assert_close((ranks[0]["loss"] + ranks[1]["loss"]) / WORLD, ref.detach(), **close)
    torch.testing.assert_close(torch.cat([ranks[0]["img"], ranks[1]["img"]]), WORLD * img.grad, **close)
    torch.testing.assert_close(torch.cat([ranks[0]["txt"], ranks[1]["txt"]]), WORLD * txt.grad, **close)
    torch.testing.assert_close((ranks[0]["scale"] + ranks[1]["scale"]) / WORLD, scale.grad, **close)  # DDP's average
    # Local negatives only would give another loss: the test can tell the two apart.
    local = sum(contrastive_loss(d["img"][r], d["txt"][r], d["scale"], d["ids"][r][:, None] == d["ids"][r][None, :]) * len(d["ids"][r])
                for r in SPLIT) / len(d["ids"])  # fmt: skip
    assert abs(float(local) - float(ref.detach())) > 1e-2


def test_one_process_is_exactly_the_plain_loss():
    d = _data()
    plain = contrastive_loss(d["img"], d["txt"], d["scale"], d["ids"][:, None] == d["ids"][None, :])
    assert torch.equal(global_contrastive_loss(d["img"], d["txt"], d["scale"], d["ids"]), plain)
