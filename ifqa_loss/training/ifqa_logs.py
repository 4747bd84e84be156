"""What a ``train-ifqa`` run writes as it goes: ``log.csv``, ``val.csv``, TensorBoard and labelled snapshots."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..nets.ifqa_unet import IFQADiscriminator
from .ifqa_objective import fprs_swap, swap_mask
from .ifqa_validation import VAL_COLUMNS

LOG_COLUMNS = ("step", "loss_d", "loss_l1", "loss_adv", "d_real", "d_fake", "lr_g", "lr_d", "seconds")
SNAPSHOT_COLUMNS = ("ground truth", "degraded", "restored", "map: truth", "map: restored", "FPRS mix", "map: mix")


class RunLogs:
    """``log.csv`` (training losses), ``val.csv`` (validation) and TensorBoard (main process only).

    On a resumed run the files are appended to (:func:`~ifqa_loss.training.ifqa_state.truncate_log` has
    already dropped rows written after the checkpoint). TensorBoard is optional (``pip install
    "ifqa-loss[tensorboard]"``); without it, one message says so and the CSV files are written.
    """

    def __init__(self, out: Path, start_step: int, *, tensorboard: bool, log=print):
        self.files, self.writers = {}, {}
        for name, columns in (("log", LOG_COLUMNS), ("val", VAL_COLUMNS)):
            path = out / f"{name}.csv"
            new = start_step == 0 or not path.is_file() or path.stat().st_size == 0
            self.files[name] = open(path, "w" if new else "a", newline="")
            self.writers[name] = csv.writer(self.files[name])
            if new:
                self.writers[name].writerow(columns)
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(out / "tensorboard"), purge_step=start_step or None)
            except ImportError:
                log('tensorboard is not installed (pip install "ifqa-loss[tensorboard]"): logging to log.csv and '
                    'val.csv only')

    def train_row(self, step: int, metrics: dict) -> None:
        self._write("log", [step, *(metrics[c] for c in LOG_COLUMNS[1:])])
        if self.tb is not None:
            for key in LOG_COLUMNS[1:8]:
                self.tb.add_scalar(f"train/{key}", metrics[key], step)

    def val_row(self, step: int, metrics: dict) -> None:
        self._write("val", [step, *(metrics[c] for c in VAL_COLUMNS[1:])])
        if self.tb is not None:
            for key in VAL_COLUMNS[1:]:
                self.tb.add_scalar(f"val/{key}", metrics[key], step)

    def _write(self, name: str, row: list) -> None:
        self.writers[name].writerow(row)
        self.files[name].flush()

    def close(self) -> None:
        for f in self.files.values():
            f.close()
        if self.tb is not None:
            self.tb.close()


# ----------------------------------------------------------------------------------- snapshots
def _colour(values: np.ndarray) -> np.ndarray:
    """(H,W) in [0,1] -> (H,W,3) uint8: viridis when matplotlib is installed, else grey."""
    try:
        from ..imageio import colorize

        return colorize(torch.from_numpy(values))
    except ImportError:
        grey = (np.clip(values, 0, 1) * 255 + 0.5).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=-1)


def _tile(image: torch.Tensor) -> np.ndarray:
    return (image.detach().float().cpu().clamp(0, 1).permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)


@torch.no_grad()
def snapshot_figure(generator: nn.Module, discriminator: IFQADiscriminator, hq: torch.Tensor, lq: torch.Tensor,
                    regions: dict[str, torch.Tensor], parts: tuple[str, ...], *, title: str = ""):
    """A labelled PIL image: one row per face, columns :data:`SNAPSHOT_COLUMNS`; every quality map
    carries its score (the mean of the map) and the figure a colour bar (1 = real, 0 = restored).

    Example:
        >>> from ifqa_loss.regions import template_regions
        >>> from ifqa_loss.training.ifqa_state import build_networks
        >>> from ifqa_loss.training.ifqa_config import IFQATrainConfig
        >>> cfg = IFQATrainConfig(data="", out="", size=64, d_widths=(2, 2, 2, 2, 2), d_bottleneck=0, g_width=2,
        ...                       g_depth=1)
        >>> g, d = build_networks(cfg)
        >>> x = torch.rand(2, 3, 64, 64)
        >>> snapshot_figure(g, d, x, x, template_regions(64, batch=2), ("mouth",), title="step 1").size
        (628, 226)
    """
    from PIL import Image, ImageDraw

    restored = generator(lq).clamp(0, 1)
    mixed, _, _, _ = fprs_swap(hq, restored, swap_mask(regions, parts))
    maps = [discriminator(x * 2 - 1) for x in (hq, restored, mixed)]
    n, size = hq.shape[0], hq.shape[-1]
    tile, gap, header, caption, bar = max(size, 80), 4, 30, 14, 40
    width = 7 * (tile + gap) + bar
    height = header + n * (tile + caption + gap)
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((2, 2), title, fill="black")
    for j, label in enumerate(SNAPSHOT_COLUMNS):
        draw.text((j * (tile + gap) + 2, 16), label, fill="black")
    for i in range(n):
        y = header + i * (tile + caption + gap)
        images = [hq[i], lq[i], restored[i], maps[0][i], maps[1][i], mixed[i], maps[2][i]]
        for j, img in enumerate(images):
            is_map = img.shape[0] == 1
            pixels = _colour(img[0].float().cpu().numpy()) if is_map else _tile(img)
            picture = Image.fromarray(pixels).resize((tile, tile), Image.NEAREST)
            canvas.paste(picture, (j * (tile + gap), y))
            if is_map:
                draw.text((j * (tile + gap) + 2, y + tile), f"score {float(img.mean()):.3f}", fill="black")
    bar_x, bar_h = 7 * (tile + gap) + 6, max(20, height - header - 20)
    ramp = np.linspace(1.0, 0.0, bar_h)[:, None].repeat(10, 1)
    canvas.paste(Image.fromarray(_colour(ramp)), (bar_x, header))
    draw.text((bar_x + 12, header), "1", fill="black")
    draw.text((bar_x + 12, header + bar_h - 10), "0", fill="black")
    return canvas


def write_snapshot(out: Path, step: int, generator: nn.Module, discriminator: IFQADiscriminator, snap: dict,
                   parts: tuple[str, ...], tb=None) -> Path:
    """``out/snapshots/step_XXXXXXX.png`` from :func:`snapshot_figure`; also to TensorBoard when given."""
    figure = snapshot_figure(generator, discriminator, snap["hq"], snap["lq"], snap["regions"], parts,
                             title=f"train-ifqa step {step} (maps by the EMA discriminator; 1 = real)")
    (out / "snapshots").mkdir(exist_ok=True)
    path = out / "snapshots" / f"step_{step:07d}.png"
    figure.save(path)
    if tb is not None:
        tb.add_image("snapshot", torch.from_numpy(np.asarray(figure)).permute(2, 0, 1), step)
    return path
