"""Launch GFP-GAN training with the IFQA term: basicsr's train pipeline after our registrations.

    python integrations/train_gfpgan_ifqa.py -opt integrations/gfpgan_ifqa.yml
    # multi-GPU: torchrun --nproc_per_node=4 integrations/train_gfpgan_ifqa.py -opt ... --launcher pytorch

It does what GFP-GAN's own gfpgan/train.py does, plus our registrations, which must happen
before basicsr builds the model from the options file.
"""
import os.path as osp

from ifqa_loss.integrations.compat import install_functional_tensor_alias

install_functional_tensor_alias()  # before anything imports basicsr (gfpgan does)

import gfpgan  # noqa: E402,F401  (registers GFP-GAN's archs, datasets and models)
from basicsr.train import train_pipeline  # noqa: E402

import ifqa_loss.integrations.gfpgan  # noqa: E402,F401  (IFQALoss, GFIQALoss, GFPGANIFQAModel)

if __name__ == "__main__":
    train_pipeline(osp.abspath(osp.join(__file__, osp.pardir, osp.pardir)))
