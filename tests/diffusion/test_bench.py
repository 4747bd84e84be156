"""The cost bench: one row end to end with small stand-ins for the full-size configs, and its refusals."""
import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("peft")

from ifqa_loss import IFQALoss  # noqa: E402
from ifqa_loss.diffusion import bench  # noqa: E402

from helpers import tiny_ifqa_metric  # noqa: E402


def test_pixel_row_reports_time_and_memory(monkeypatch):
    small = dict(sample_size=64, in_channels=3, out_channels=3, layers_per_block=1, block_out_channels=(8, 16),
                 norm_num_groups=4, down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                 up_block_types=("AttnUpBlock2D", "UpBlock2D"))
    monkeypatch.setattr("ifqa_loss.diffusion.models.pixel_unet_config", lambda size: {**small, "sample_size": size})
    quality = IFQALoss(metric=tiny_ifqa_metric(), input_range=(-1, 1))
    row = bench.bench_row("pixel", 64, quality=quality)
    for part in ("guided", "reward"):
        assert row[part]["ms"]["median"] > 0 and row[part]["saved_mb"] > 0
    # the guided step keeps the UNet's and IFQA's activations: more than one (1,3,64,64) float image
    assert row["guided"]["saved_mb"] * (1 << 20) > 3 * 64 * 64 * 4
    assert set(bench.markdown([row]).splitlines()[2].split("|")[1:3]) == {" pixel ", " 64 "}


@pytest.mark.parametrize("argv", [["--sizes", "100"], ["--models", "sd3"], ["--sizes", "x"]])
def test_bad_arguments_exit_2(argv, capsys):
    assert bench.main(argv) == 2
    assert capsys.readouterr().err.startswith("error:")


def test_saved_activations_leave_out_weights():
    layer = torch.nn.Conv2d(3, 8, 3)
    with bench.SavedActivations(layer) as kept:
        layer(torch.ones(1, 3, 16, 16, requires_grad=True)).relu().sum()
    assert kept.bytes == 3 * 16 * 16 * 4 + 8 * 14 * 14 * 4  # conv input, relu output; not the weight
