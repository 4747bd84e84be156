"""Online refresh of a quality loss's discriminator (DiffusionReward-style): the one trainable exception
to the frozen-loss rule.

``IFQALoss(refresh={...})`` gets its own copy of the metric network; ``loss.update(real, restored)``
trains that copy one step to tell real faces (target 1 per pixel) from the restorer's current
outputs (target 0), with BCE on logits plus an L2-SP penalty ``l2sp / 2 * ||w - w0||^2`` towards
the starting weights ``w0``. After every step the weights are projected back into the ball
``||w - w0|| <= max_shift * ||w0||`` (L2 over all parameters), so the refreshed metric never
drifts further than that stated distance from the checkpoint the user chose.

State: the refreshed weights, ``w0``, the optimiser and the step are held by the
:class:`Refresher`, outside the parent's parameters and ``state_dict()`` (the metric stays
unregistered). Save them with ``loss.refresher.state_dict()`` and restore with
``loss.refresher.load_state_dict(...)``; with ``include_in_state_dict=True`` the parent's
state dict carries them under ``<prefix>refresh`` instead of the frozen ``metric.*`` weights.

DDP: every rank calls ``update`` with its own batch; gradients are averaged over the default
process group before the step, so every rank keeps the same metric (identical start, identical
steps).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from .augment import config_option

__all__ = ["RefreshConfig", "refresh_config", "Refresher", "REFRESH_FORMAT"]

REFRESH_FORMAT = "ifqa-loss/refresh/1"


@dataclass(frozen=True)
class RefreshConfig:
    """Options of ``refresh=``.

    Args:
        lr: Adam learning rate of the refresh steps.
        betas: Adam betas.
        l2sp: weight of the L2-SP penalty ``l2sp / 2 * ||w - w0||^2``.
        max_shift: hard bound on ``||w - w0|| / ||w0||`` (projection after every step).
        schedule: a :class:`~ifqa_loss.LossComposer` schedule spec for the learning-rate factor
            (``{"type": "linear_warmup", "steps": 100}``, ``{"type": "step", "milestones": [...]}``);
            ``None``: constant.
    """

    lr: float = 1e-5
    betas: tuple[float, float] = (0.5, 0.999)
    l2sp: float = 1.0
    max_shift: float = 0.05
    schedule: dict | None = None

    def __post_init__(self):
        if self.lr <= 0 or self.l2sp < 0 or self.max_shift <= 0:
            raise ValueError(f"refresh needs lr > 0, l2sp >= 0 and max_shift > 0; got lr={self.lr}, "
                             f"l2sp={self.l2sp}, max_shift={self.max_shift}")
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))


def refresh_config(refresh) -> RefreshConfig | None:
    """``refresh=`` of the losses -> :class:`RefreshConfig` or ``None`` (off, the default).

    Example:
        >>> refresh_config({"lr": 1e-4}).max_shift, refresh_config(None)
        (0.05, None)
    """
    return config_option(refresh, RefreshConfig, "refresh")


class Refresher:
    """Trains one metric network in place (real vs restored), near its starting weights.

    Args:
        metric: the loss's own :class:`~ifqa_loss.QualityMetric` (a private copy: it is changed).
        config: :class:`RefreshConfig`.
        input_range, antialias: how ``real`` / ``restored`` are read (the loss's settings).
    """

    def __init__(self, metric, config: RefreshConfig, *, input_range=(-1.0, 1.0), antialias: bool = False):
        from .composer import build_schedule  # composer imports the losses, which import this module

        if not metric.has_map:
            raise ValueError(f"refresh trains a per-pixel discriminator; {metric.name!r} has none (IFQA only)")
        if metric.compile:
            raise ValueError("refresh and compile=True cannot be combined (compiled graphs assume fixed weights)")
        self.metric = metric
        self.config = config
        self.input_range = tuple(input_range)
        self.antialias = antialias
        self.params = list(metric.net.parameters())
        self.anchor = [p.detach().clone() for p in self.params]
        self.anchor_norm = float(torch.sqrt(sum((a.double() ** 2).sum() for a in self.anchor)))
        self.optimizer = torch.optim.Adam(self.params, lr=config.lr, betas=config.betas)
        self.schedule = build_schedule(config.schedule)
        self.step = 0

    def distance(self) -> float:
        """``||w - w0|| / ||w0||`` over all parameters (the quantity ``max_shift`` bounds)."""
        total = sum(((p.detach().double() - a.double()) ** 2).sum() for p, a in zip(self.params, self.anchor,
                                                                                      strict=True))
        return float(torch.sqrt(total)) / max(self.anchor_norm, 1e-12)

    def update(self, real: torch.Tensor, restored: torch.Tensor) -> dict[str, float]:
        """One refresh step on (N,3,H,W) ``real`` and (M,3,H,W) ``restored`` (detached) in the loss's range.

        Returns ``{"loss_real", "loss_restored", "l2sp", "distance", "lr", "step"}``.
        """
        import torch.distributed as dist

        options = {"input_range": self.input_range, "antialias": self.antialias}
        lr = self.config.lr * self.schedule(self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        try:
            for p in self.params:
                p.requires_grad_(True)
            with torch.enable_grad():
                # Clamped like out_of_range="clamp": an unbounded generator's small overshoot is no error here.
                real_logits = self.metric.logits(real.detach().clamp(*self.input_range), **options).float()
                fake_logits = self.metric.logits(restored.detach().clamp(*self.input_range), **options).float()
                loss_real = F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
                loss_fake = F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
                l2sp = sum(((p - a) ** 2).sum() for p, a in zip(self.params, self.anchor, strict=True))
                total = loss_real + loss_fake + 0.5 * self.config.l2sp * l2sp
                self.optimizer.zero_grad(set_to_none=True)
                total.backward()
            if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
                world = dist.get_world_size()
                for p in self.params:
                    if p.grad is None:
                        p.grad = torch.zeros_like(p)
                    dist.all_reduce(p.grad)
                    p.grad.div_(world)
            self.optimizer.step()
        finally:
            for p in self.params:
                p.requires_grad_(False)
                p.grad = None
        self._project()
        self.step += 1
        return {"loss_real": float(loss_real.detach()), "loss_restored": float(loss_fake.detach()),
                "l2sp": float(l2sp.detach()),
                "distance": self.distance(), "lr": lr, "step": self.step}

    @torch.no_grad()
    def _project(self) -> None:
        limit = self.config.max_shift
        shift = self.distance()
        if shift > limit:
            factor = limit / shift * (1 - 1e-6)
            for p, a in zip(self.params, self.anchor, strict=True):
                p.copy_(a + (p - a) * factor)

    def reset(self) -> None:
        """Back to the starting weights, a fresh optimiser and step 0."""
        with torch.no_grad():
            for p, a in zip(self.params, self.anchor, strict=True):
                p.copy_(a)
        self.optimizer = torch.optim.Adam(self.params, lr=self.config.lr, betas=self.config.betas)
        self.step = 0

    def state_dict(self) -> dict:
        """Everything a resumed run needs: refreshed weights, starting weights, optimiser, step, config."""
        names = [name for name, _ in self.metric.net.named_parameters()]
        return {"format": REFRESH_FORMAT, "metric": self.metric.name, "config": asdict(self.config),
                "net": {k: v.detach().clone() for k, v in self.metric.net.state_dict().items()},
                "anchor": dict(zip(names, [a.clone() for a in self.anchor], strict=True)),
                "optimizer": self.optimizer.state_dict(), "step": self.step}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`; refuses another format, metric, architecture or starting point."""
        if not isinstance(state, dict) or state.get("format") != REFRESH_FORMAT:
            raise ValueError(f"not a refresh state (format {REFRESH_FORMAT!r}); save it with "
                             "loss.refresher.state_dict()")
        if state.get("metric") != self.metric.name:
            raise ValueError(f"the refresh state is for {state.get('metric')!r}, this loss refreshes "
                             f"{self.metric.name!r}")
        names = [name for name, _ in self.metric.net.named_parameters()]
        anchor = state["anchor"]
        if list(anchor) != names or any(anchor[n].shape != a.shape for n, a in zip(names, self.anchor, strict=True)):
            raise ValueError("the refresh state holds another architecture than this loss's metric")
        if any(not torch.equal(anchor[n].to(a.device, a.dtype), a) for n, a in zip(names, self.anchor, strict=True)):
            raise ValueError("the refresh state started from other weights than this loss's checkpoint; build the loss "
                             "with the checkpoint the refreshed run started from")
        self.metric.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state["step"])

    def apply(self, fn) -> None:
        """Follow a ``.to()`` / ``.half()`` of the loss: starting weights and optimiser state move with the net."""
        self.anchor = [fn(a) for a in self.anchor]
        for state in self.optimizer.state.values():
            for key, value in state.items():
                if isinstance(value, torch.Tensor) and key != "step":
                    state[key] = fn(value)
