"""Launch GFP-GAN training with the IFQA term: basicsr's training pipeline after our registrations and fixes.

    python integrations/gfpgan/train_gfpgan_ifqa.py -opt integrations/gfpgan/train_gfpgan_ifqa.yml
    # multi-GPU: torchrun --nproc_per_node=4 integrations/gfpgan/train_gfpgan_ifqa.py -opt ... --launcher pytorch
    # resume:    add --auto_resume, or set path.resume_state to experiments/<name>/training_states/<iter>.state

Does what GFP-GAN's own ``gfpgan/train.py`` does, plus, before basicsr builds anything:
registers ``GFPGANIFQAModel`` and ``IFQALoss``, and applies the guarded environment fixes of
``ifqa_loss.integrations.compat`` (torchvision alias, int JPEG quality for current OpenCV,
pure-PyTorch StyleGAN2 ops where basicsr's compiled ones are absent, numpy values in the
facial-component file under weights-only loading, resume on a CPU-only machine).
Outputs (experiments/, tb_logger/) go under the current folder.
"""
import os

from ifqa_loss.integrations.compat import install_functional_tensor_alias

install_functional_tensor_alias()  # before anything imports basicsr (gfpgan does)

import basicsr.train  # noqa: E402
import gfpgan  # noqa: E402,F401  (registers GFP-GAN's archs, datasets and models)

from ifqa_loss.integrations import compat  # noqa: E402
from ifqa_loss.integrations import gfpgan as gfpgan_ifqa  # noqa: E402  (GFPGANIFQAModel, IFQALoss)


def main() -> None:
    fixes = gfpgan_ifqa.prepare_environment()
    if fixes:
        print(f"ifqa_loss: environment fixes applied: {', '.join(fixes)}")
    basicsr.train.load_resume_state = compat.load_resume_state  # basicsr's resume maps to CUDA only
    with compat.numpy_safe_globals():  # FFHQ_eye_mouth_landmarks_512.pth holds numpy values
        basicsr.train.train_pipeline(os.getcwd())


if __name__ == "__main__":
    main()
