"""GPEN adapter: the generator loss of ``train_simple.py`` with a weighted IFQA term.

Three-line patch to GPEN's ``train_simple.py`` (after its own ``g_nonsaturating_loss`` definition)::

    from ifqa_loss import IFQALoss
    from ifqa_loss.integrations.gpen import with_ifqa
    g_nonsaturating_loss = with_ifqa(g_nonsaturating_loss, IFQALoss(input_range=(-1, 1)).to(device), weight=0.1)

Everything else in the training loop stays as it is: the returned value is the
original generator loss plus ``weight * IFQA(fake_img)``.
"""
from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F


def g_nonsaturating_loss(fake_pred, loss_funcs=None, fake_img=None, real_img=None, input_img=None):
    """GPEN's generator loss: softplus(-D(fake)) + smooth-L1 + identity, as in its train_simple.py."""
    smooth_l1_loss, id_loss = loss_funcs
    loss = F.softplus(-fake_pred).mean()
    loss_id, _, _ = id_loss(fake_img, real_img, input_img)
    return loss + smooth_l1_loss(fake_img, real_img) + loss_id


def with_ifqa(g_loss: Callable[..., torch.Tensor], ifqa: torch.nn.Module, weight: float = 0.1):
    """Wrap a GPEN-style ``g_nonsaturating_loss`` so it returns ``original + weight * ifqa(fake_img)``.

    The wrapper keeps the signature ``(fake_pred, loss_funcs=None, fake_img=None, real_img=None,
    input_img=None, **kw)``; the latest IFQA value is kept in ``wrapper.last_ifqa`` for logging.
    """

    @functools.wraps(g_loss)
    def wrapper(fake_pred, loss_funcs=None, fake_img=None, real_img=None, input_img=None, **kwargs):
        if fake_img is None:
            raise ValueError("the IFQA term needs fake_img: call g_nonsaturating_loss(..., fake_img=fake_img, ...)")
        loss = g_loss(fake_pred, loss_funcs, fake_img, real_img, input_img, **kwargs)
        wrapper.last_ifqa = ifqa(fake_img)
        return loss + weight * wrapper.last_ifqa

    wrapper.last_ifqa = None
    return wrapper
