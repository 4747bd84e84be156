"""Online refresh under DDP (2 processes, gloo): gradients are averaged, so every rank keeps the same metric,
the one a single process would get from the ranks' batches together."""
import os
import socket
import subprocess
import sys
import textwrap

import torch

WORKER = textwrap.dedent("""
    import os, sys, torch, torch.distributed as dist
    from ifqa_loss import IFQALoss, QualityMetric
    from ifqa_loss.nets.ifqa_unet import IFQADiscriminator
    from ifqa_loss.registry import get_spec

    torch.set_num_threads(1)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1:
        dist.init_process_group("gloo")
    torch.manual_seed(0)
    metric = QualityMetric(IFQADiscriminator(widths=(4, 8, 8, 16, 16), num_bottleneck=1, input_size=64),
                           get_spec("ifqa"))
    loss = IFQALoss(metric=metric, input_range=(0, 1), refresh={"lr": 1e-3, "l2sp": 1.0, "max_shift": 1.0})
    g = torch.Generator().manual_seed(1)
    real, fake = torch.rand(4, 3, 48, 48, generator=g), torch.rand(4, 3, 48, 48, generator=g) * 0.4
    mine = slice(rank * 2, rank * 2 + 2) if world > 1 else slice(None)  # each rank its own half
    for _ in range(3):
        loss.update(real[mine], fake[mine])
    torch.save(loss.metric.net.state_dict(), sys.argv[1])
    if world > 1:
        dist.destroy_process_group()
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_ranks_keep_the_same_refreshed_metric(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    base = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()),
            "WORLD_SIZE": "2"}
    # The two ranks and the single-process reference start together (their start-up is mostly imports).
    single = {**os.environ, "OMP_NUM_THREADS": "1"}
    runs = [({**base, "RANK": "0"}, "rank0.pt"), ({**base, "RANK": "1"}, "rank1.pt"), (single, "single.pt")]
    procs = [subprocess.Popen([sys.executable, str(script), str(tmp_path / name)], env=env, stderr=subprocess.PIPE,
                              text=True) for env, name in runs]
    for proc in procs:
        _, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err
    r0, r1, one = (torch.load(tmp_path / f"{n}.pt") for n in ("rank0", "rank1", "single"))
    for name in r0:
        assert torch.equal(r0[name], r1[name]), name  # every rank: the same metric
    # = one process on both halves, up to summation order (Adam can turn a rounding-level gradient into a full
    # lr-sized step of either sign, so single elements may differ by up to 2 x lr per step; the whole barely moves).
    diff = torch.cat([(r0[n] - one[n]).flatten() for n in r0])
    weights = torch.cat([one[n].flatten() for n in r0])
    assert diff.abs().max() <= 2 * 3 * 1e-3
    assert diff.norm() <= 1e-3 * weights.norm()
