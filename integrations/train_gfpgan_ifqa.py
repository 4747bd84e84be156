"""Launch GFP-GAN training with the IFQA term: basicsr's train pipeline after our registrations.

    python integrations/train_gfpgan_ifqa.py -opt integrations/gfpgan_ifqa.yml
    # multi-GPU: torchrun --nproc_per_node=4 integrations/train_gfpgan_ifqa.py -opt ... --launcher pytorch

It does what GFP-GAN's own gfpgan/train.py does, plus one import: the registrations
must happen before basicsr builds the model from the options file.
"""
import os.path as osp

import gfpgan  # noqa: F401,I001  (registers GFP-GAN's archs, datasets and models)
from basicsr.train import train_pipeline

import ifqa_loss.integrations.gfpgan  # noqa: F401  (torchvision alias, IFQALoss, GFPGANIFQAModel)

if __name__ == "__main__":
    train_pipeline(osp.abspath(osp.join(__file__, osp.pardir, osp.pardir)))
