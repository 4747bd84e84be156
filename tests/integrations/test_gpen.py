import torch

from ifqa_loss import IFQALoss
from ifqa_loss.integrations import gpen

from helpers import tiny_ifqa_metric


def _loss_funcs():
    def id_loss(fake, real, inp):
        value = (fake - real).square().mean()
        return value, None, None

    return torch.nn.SmoothL1Loss(), id_loss


def _batch():
    torch.manual_seed(0)
    fake = (torch.rand(2, 3, 64, 64) * 2 - 1).requires_grad_()
    return torch.randn(2, 1), fake, torch.rand(2, 3, 64, 64) * 2 - 1, torch.rand(2, 3, 64, 64) * 2 - 1


def test_wrapper_returns_the_original_terms_plus_the_weighted_ifqa_term():
    fake_pred, fake, real, inp = _batch()
    ifqa = IFQALoss(metric=tiny_ifqa_metric())
    wrapped = gpen.with_ifqa(gpen.g_nonsaturating_loss, ifqa, weight=0.3)
    original = gpen.g_nonsaturating_loss(fake_pred, _loss_funcs(), fake, real, inp)
    total = wrapped(fake_pred, _loss_funcs(), fake, real, inp)
    torch.testing.assert_close(total, original + 0.3 * ifqa(fake))
    torch.testing.assert_close(wrapped.last_ifqa, ifqa(fake))
    total.backward()
    assert fake.grad is not None and torch.isfinite(fake.grad).all()


def test_reimplemented_gpen_loss_matches_its_formula():
    fake_pred, fake, real, inp = _batch()
    smooth_l1, id_loss = _loss_funcs()
    expected = torch.nn.functional.softplus(-fake_pred).mean() + smooth_l1(fake, real) + id_loss(fake, real, inp)[0]
    torch.testing.assert_close(gpen.g_nonsaturating_loss(fake_pred, _loss_funcs(), fake, real, inp), expected)
