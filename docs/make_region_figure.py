"""Draw docs/regions.png: the bundled sample face with its template region masks overlaid.

Run: python docs/make_region_figure.py
"""
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ifqa_loss.imageio import read_image
from ifqa_loss.regions import REGION_NAMES, template_regions

COLOURS = {
    "left_eye": (255, 64, 64), "right_eye": (255, 160, 64), "left_brow": (160, 64, 255), "right_brow": (255, 64, 255),
    "nose": (64, 255, 64), "mouth": (64, 160, 255), "skin": (255, 255, 160), "background": (40, 40, 40),
}


def main() -> None:
    here = Path(__file__).parent
    face = read_image(here.parent / "ifqa_loss" / "samples" / "face512.png")
    masks = template_regions(face.shape[-1])
    colour = sum(masks[name][0] * torch.tensor(COLOURS[name], dtype=torch.float32).view(3, 1, 1) / 255
                 for name in REGION_NAMES)
    panels = [face, 0.5 * face + 0.5 * colour, colour]
    strip = torch.cat(panels, dim=2).permute(1, 2, 0).clamp(0, 1).numpy()
    Image.fromarray((strip * 255 + 0.5).astype(np.uint8)).save(here / "regions.png")
    print(f"wrote {here / 'regions.png'}")


if __name__ == "__main__":
    main()
