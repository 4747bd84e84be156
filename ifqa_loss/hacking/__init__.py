"""Metric gaming: measure it (:func:`hack_probe`), watch it during training (:class:`HackingMonitor`).

The defences live with the losses: ``augment=``, ``ensemble=`` and ``refresh=`` of
:class:`~ifqa_loss.IFQALoss` / :class:`~ifqa_loss.GFIQALoss` (docs/hacking.md).
"""
from .monitor import HackingMonitor, HackingWarning
from .probe import distortion, hack_probe, optimise_pixels

__all__ = ["HackingMonitor", "HackingWarning", "distortion", "hack_probe", "optimise_pixels"]
