"""Adapters for training loops people already run.

* :mod:`ifqa_loss.integrations.basicsr` – ``IFQALoss`` in basicsr's ``LOSS_REGISTRY``
* :mod:`ifqa_loss.integrations.gfpgan` – ``GFPGANIFQAModel`` in ``MODEL_REGISTRY``
* :mod:`ifqa_loss.integrations.gpen` – ``g_nonsaturating_loss`` with an IFQA term

Each is imported explicitly, so ``import ifqa_loss`` never needs basicsr or gfpgan.
"""
