import torch

from helpers import tiny_ifqa_metric


def test_alias_lets_basicsr_import_on_current_torchvision():
    import sys

    from ifqa_loss.integrations.compat import OLD_NAME, install_functional_tensor_alias

    install_functional_tensor_alias()
    import basicsr.data.degradations  # noqa: F401  (imports the old torchvision module name)

    assert OLD_NAME in sys.modules


def test_build_loss_returns_our_loss_with_loss_weight():
    from basicsr.losses import build_loss

    import ifqa_loss
    from ifqa_loss.integrations import basicsr as adapter

    loss = build_loss({"type": "IFQALoss", "loss_weight": 0.5, "metric": tiny_ifqa_metric(), "reduction": "mean"})
    assert isinstance(loss, ifqa_loss.IFQALoss) and isinstance(loss, adapter.IFQALoss)
    pred = torch.rand(2, 3, 64, 64) * 2 - 1
    plain = ifqa_loss.IFQALoss(metric=loss.metric)(pred)
    torch.testing.assert_close(loss(pred, target=torch.zeros_like(pred)), 0.5 * plain)


def test_elementwise_weight_becomes_pixel_weights():
    from ifqa_loss.integrations.basicsr import IFQALoss

    loss = IFQALoss(metric=tiny_ifqa_metric())
    pred = torch.rand(1, 3, 64, 64) * 2 - 1
    weight = torch.zeros(1, 3, 64, 64)
    weight[..., :32, :] = 1.0
    torch.testing.assert_close(loss(pred, weight=weight), loss(pred, pixel_weights=weight[:, :1]))


def test_registering_again_is_harmless():
    from basicsr.utils.registry import LOSS_REGISTRY

    from ifqa_loss.integrations import basicsr as adapter

    adapter.register()  # a second import path (e.g. CodeFormer's launcher) must not raise "already registered"
    assert LOSS_REGISTRY.get("IFQALoss") is adapter.IFQALoss
