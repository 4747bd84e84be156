"""Adapters for training loops people already run.

* :mod:`ifqa_loss.integrations.basicsr` – ``IFQALoss`` in basicsr's ``LOSS_REGISTRY``
* :mod:`ifqa_loss.integrations.gfpgan` – ``GFPGANIFQAModel`` in ``MODEL_REGISTRY``
* :mod:`ifqa_loss.integrations.gpen` – ``IFQATerm``, the term GPEN's patched ``train_simple.py`` adds
* :mod:`ifqa_loss.integrations.compat` – guarded fixes for basicsr/GFP-GAN on current torch, torchvision, OpenCV

Each is imported explicitly, so ``import ifqa_loss`` never needs basicsr or gfpgan.
"""
