"""Run a script as ``__main__`` with torchvision's ImageNet downloads answered by random weights.

    python run_offline.py SCRIPT [ARGS...]

Used by the loop tests: GFP-GAN's VGG19 perceptual loss and CodeFormer's LPIPS (VGG16) ask
torchvision for ImageNet weights, which cannot be downloaded here (no network). The architecture
is torchvision's own; only the values are random. Nothing else is replaced.
"""
import runpy
import sys

import torchvision
from torchvision.models import _api


def _random_imagenet_weights(url, *args, **kwargs):
    architecture = url.rsplit("/", 1)[-1].split("-")[0]  # .../vgg19-dcbb9e9d.pth -> vgg19
    return getattr(torchvision.models, architecture)(weights=None).state_dict()


if __name__ == "__main__":
    _api.load_state_dict_from_url = _random_imagenet_weights
    script, *argv = sys.argv[1:]
    sys.argv = [script, *argv]
    sys.path.insert(0, str(__import__("pathlib").Path(script).resolve().parent))
    runpy.run_path(script, run_name="__main__")
