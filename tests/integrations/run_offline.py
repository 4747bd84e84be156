"""Run a script as ``__main__`` with torchvision's ImageNet downloads answered by random weights.

    python run_offline.py SCRIPT [ARGS...]

Used by the loop tests: GFP-GAN's VGG19 perceptual loss and CodeFormer's LPIPS (VGG16) ask
torchvision for ImageNet weights, which cannot be downloaded here (no network). The architecture
is torchvision's own; only the values are random. Nothing else is replaced.
"""
import runpy
import sys

import torch
import torchvision
from torchvision.models import _api


def _random_imagenet_weights(url, *args, **kwargs):
    """Seeded He-uniform weights and zero biases in the shapes of torchvision's ``architecture``: the network is
    built on ``meta`` (no 0.5 GB initialisation of VGG's classifier, 1.7 s, only to be overwritten)."""
    architecture = url.rsplit("/", 1)[-1].split("-")[0]  # .../vgg19-dcbb9e9d.pth -> vgg19
    with torch.device("meta"):
        shapes = {name: value.shape for name, value in getattr(torchvision.models, architecture)().state_dict().items()}
    generator = torch.Generator().manual_seed(0)
    state = {}
    for name, shape in shapes.items():
        value = torch.zeros(shape)
        if len(shape) >= 2:  # conv / linear weight: uniform(-b, b), b = sqrt(6 / fan_in)
            value.uniform_(-1, 1, generator=generator).mul_((6 / shape[1:].numel()) ** 0.5)
        state[name] = value
    return state


if __name__ == "__main__":
    _api.load_state_dict_from_url = _random_imagenet_weights
    script, *argv = sys.argv[1:]
    sys.argv = [script, *argv]
    sys.path.insert(0, str(__import__("pathlib").Path(script).resolve().parent))
    runpy.run_path(script, run_name="__main__")
