"""GFP-GAN adapter: ``GFPGANIFQAModel`` = GFP-GAN's model with an IFQA term in the generator objective.

Options (``model_type: GFPGANIFQAModel``)::

    train:
      ifqa_opt:
        type: IFQALoss
        loss_weight: 0.1
        region_weights: {eyes: 2.0, mouth: 2.0, nose: 1.5, skin: 1.0, background: 0.0}

When the batch carries GFP-GAN's component boxes (``loc_left_eye``, ``loc_right_eye``,
``loc_mouth``), they place the eye and mouth masks; otherwise the FFHQ template does.
The term is logged as ``l_g_ifqa``. The IFQA network is a loss, not a network of the
model, so it is never saved with ``net_g``/``net_d``.

Importing this module registers the model (and, through the basicsr adapter, the loss).
"""
from __future__ import annotations

from .compat import install_functional_tensor_alias

install_functional_tensor_alias()  # must run before the first basicsr import below

from basicsr.losses import build_loss  # noqa: E402
from basicsr.utils.registry import MODEL_REGISTRY  # noqa: E402
from gfpgan.models.gfpgan_model import GFPGANModel  # noqa: E402

from ..regions import regions_from_boxes  # noqa: E402
from . import basicsr as _registers_losses  # noqa: E402,F401  (IFQALoss/GFIQALoss in LOSS_REGISTRY)
from . import compat  # noqa: E402


class _PixelLossWithIFQA:
    """Stands in for ``GFPGANModel.cri_pix``: GFPGANModel calls it exactly once per generator update,
    with the restored output, which is where the IFQA term joins ``l_g_total``."""

    def __init__(self, model: GFPGANIFQAModel, pixel_loss):
        self.model = model
        self.pixel_loss = pixel_loss

    def __bool__(self) -> bool:
        return True  # GFPGANModel tests `if self.cri_pix:`

    def __call__(self, output, gt):
        l_ifqa = self.model.compute_ifqa(output)
        if self.pixel_loss is None:
            return l_ifqa
        return self.pixel_loss(output, gt) + l_ifqa


class GFPGANIFQAModel(GFPGANModel):
    """GFPGANModel whose generator loss gains ``train.ifqa_opt`` (an IFQALoss)."""

    def init_training_settings(self):
        super().init_training_settings()
        ifqa_opt = self.opt["train"].get("ifqa_opt")
        if ifqa_opt is None:
            raise KeyError("GFPGANIFQAModel needs train: ifqa_opt: {type: IFQALoss, loss_weight: ...}")
        self.cri_ifqa = build_loss(dict(ifqa_opt)).to(self.device)
        self._has_pixel_loss = self.cri_pix is not None
        self.cri_pix = _PixelLossWithIFQA(self, self.cri_pix)
        self._l_g_ifqa = None

    def get_optimizer(self, optim_type, params, lr, **kwargs):
        # GFPGANModel passes betas=(0**r, 0.99**r) = (int 0, float); torch >= 2.6 Adam rejects mixed types.
        if "betas" in kwargs:
            kwargs["betas"] = tuple(float(b) for b in kwargs["betas"])
        return super().get_optimizer(optim_type, params, lr, **kwargs)

    def compute_ifqa(self, output):
        regions = None
        if getattr(self, "loc_left_eyes", None) is not None and self.cri_ifqa.region_weights:
            size = output.shape[-1]
            regions = regions_from_boxes(self.loc_left_eyes.to(output.device), self.loc_right_eyes.to(output.device),
                                         self.loc_mouths.to(output.device), size=self.cri_ifqa.metric.input_size,
                                         source_size=size)
        self._l_g_ifqa = self.cri_ifqa(output, regions=regions)
        return self._l_g_ifqa

    def optimize_parameters(self, current_iter):
        self._l_g_ifqa = None
        super().optimize_parameters(current_iter)
        if self._l_g_ifqa is not None:
            value = self.reduce_loss_dict({"l_g_ifqa": self._l_g_ifqa.detach()})["l_g_ifqa"]
            self.log_dict["l_g_ifqa"] = value
            if self._has_pixel_loss and "l_g_pix" in self.log_dict:
                self.log_dict["l_g_pix"] -= value  # l_g_pix carried the IFQA term into l_g_total; log it apart
        self.after_generator_step(current_iter)

    def after_generator_step(self, current_iter):
        """Refresh the IFQA metric (``ifqa_opt: {refresh: {...}}``) and run an attached ``hacking_monitor``."""
        if getattr(self.cri_ifqa, "refresher", None) is not None and getattr(self, "output", None) is not None:
            self.cri_ifqa.update(self.gt, self.output.detach())  # docs/hacking.md; its state is not in .state files
        monitor = getattr(self, "hacking_monitor", None)  # ifqa_loss.hacking.HackingMonitor, set by the launcher
        if monitor is not None:
            monitor(current_iter, lambda lq: self.get_bare_model(self.net_g)(lq, return_rgb=False)[0])


def prepare_environment() -> list[str]:
    """Apply the guarded environment fixes GFP-GAN training needs here; returns the names applied.

    int JPEG quality where OpenCV refuses floats (basicsr issue #578); pure-PyTorch StyleGAN2 ops
    where basicsr's compiled ``fused_act``/``upfirdn2d`` are absent (GFP-GAN's
    ``StyleGAN2Discriminator``). Run it after GFP-GAN's archs are imported (``import gfpgan``),
    before building the model. Numpy values in the component file need :func:`compat.numpy_safe_globals`
    around dataset construction, and CPU resume :func:`compat.load_resume_state`; the launcher does both.

    Example:
        >>> isinstance(prepare_environment(), list)
        True
    """
    import gfpgan.archs  # noqa: F401  (their modules import the ops by name: fix them too)

    fixes = ["int_jpeg_quality"] if compat.fix_jpeg_quality() else []
    return fixes + [f"native_{name}" for name in compat.install_native_ops()]


def register(registry=MODEL_REGISTRY) -> None:
    if "GFPGANIFQAModel" not in registry:
        registry.register(GFPGANIFQAModel)


register()
