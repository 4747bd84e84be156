"""Network architectures, one per file, with state-dict names of the published checkpoints."""
from .gfiqa import GFIQA, ResNet50MOS
from .ifqa_unet import IFQADiscriminator
from .ifqa_vit import IFQAViT
from .stylegan2 import StyleGAN2Generator
from .stylegan2_original import StyleGAN2GeneratorOriginal

__all__ = ["GFIQA", "IFQADiscriminator", "IFQAViT", "ResNet50MOS", "StyleGAN2Generator", "StyleGAN2GeneratorOriginal"]
