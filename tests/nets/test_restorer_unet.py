import pytest
import torch

from ifqa_loss.nets.restorer_unet import RestorationUNet


def test_starts_as_identity_with_residual():
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(RestorationUNet(width=8, depth=3)(x), x)


def test_trains_towards_a_target():
    torch.manual_seed(0)
    net = RestorationUNet(width=8, depth=2)
    x, target = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    first = None
    for _ in range(10):
        loss = (net(x) - target).abs().mean()
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.7 * first


@pytest.mark.parametrize("depth, blocks, max_width", [(0, 1, 8), (2, 2, 16), (3, 1, 8)])
def test_shapes_for_configurations(depth, blocks, max_width):
    net = RestorationUNet(width=4, depth=depth, blocks=blocks, max_width=max_width, residual=False)
    assert net(torch.rand(1, 3, 24, 32)).shape == (1, 3, 24, 32)


def test_width_caps_channels():
    net = RestorationUNet(width=8, depth=4, max_width=16)
    assert max(m.out_channels for m in net.modules() if isinstance(m, torch.nn.Conv2d)) == 16


def test_size_not_divisible_is_explained():
    with pytest.raises(ValueError, match="divisible by 8"):
        RestorationUNet(width=4, depth=3)(torch.rand(1, 3, 20, 20))
