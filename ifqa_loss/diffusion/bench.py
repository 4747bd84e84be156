"""Cost of quality guidance and reward fine-tuning with full-size diffusion models (random weights).

    python -m ifqa_loss.diffusion.bench                       # CPU: 256 and 512, pixel and latent models
    python -m ifqa_loss.diffusion.bench --device cuda --repeats 5 --out diffusion_cuda.json   # on a GPU

Rows (batch 1): ``pixel`` = google/ddpm-celebahq-256's UNet2DModel in pixel space (DifFace / PGDiff
setting); ``latent`` = Stable Diffusion 2.1's UNet2DConditionModel + AutoencoderKL (DiffBIR / OSEDiff
setting; the text embedding is a fixed random (1,77,1024) tensor). Per row: ``plain`` = one no-grad denoiser
call (what an unguided step costs), ``guided`` = one :class:`~ifqa_loss.diffusion.guidance.QualityGuidance`
step (denoiser with grad, x̂0, VAE decode, IFQA + fidelity, backward to x_t), ``reward`` = one
:class:`~ifqa_loss.diffusion.reward.RewardFineTuner` update with K=1 on rank-4 LoRA adapters (the same chain
plus the optimiser). Memory: ``peak`` = CUDA max allocated, or sampled process RSS on CPU (an upper bound,
allocator caches included), above the level before the call; ``saved`` = bytes autograd keeps for backward
(device-independent). The IFQA reward is the published-size architecture with RANDOM weights: costs only.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import warnings

import torch

from ..bench.memory import PeakMemory, SavedForBackward
from ..bench.timing import summarize, timed_call

MB = 1 << 20


def _ifqa(device):
    from ..losses import IFQALoss
    from ..metric import load_metric

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        metric = load_metric("ifqa", random_weights=True, device=device)
    return IFQALoss(metric=metric, input_range=(-1, 1))


def _models(kind: str, size: int, device, checkpointing: bool):
    """(unet, denoiser, scheduler, decode, sample shape, vae or None) for one row."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel, UNet2DModel

    from .guidance import vae_decoder
    from .models import pixel_unet_config, sd_unet_config, sd_vae_config
    from .sampling import unet_denoiser

    torch.manual_seed(0)
    if kind == "pixel":
        unet = UNet2DModel(**pixel_unet_config(size)).to(device).eval()
        return unet, unet_denoiser(unet, condition=None), DDIMScheduler(), None, (1, 3, size, size), None
    unet = UNet2DConditionModel(**sd_unet_config(size // 8)).to(device).eval()
    vae = AutoencoderKL(**sd_vae_config()).to(device).eval().requires_grad_(False)
    if not checkpointing:
        vae.disable_gradient_checkpointing()
    text = torch.randn(1, 77, 1024, device=device)
    scheduler = DDIMScheduler(prediction_type="v_prediction")
    return (unet, unet_denoiser(unet, condition=None, encoder_hidden_states=text), scheduler,
            vae_decoder(vae, checkpointing=checkpointing), (1, 4, size // 8, size // 8), vae)


class SavedActivations(SavedForBackward):
    """:class:`~ifqa_loss.bench.memory.SavedForBackward` without the storages of ``modules``' parameters and buffers
    (weights that autograd references, not memory a step adds): the activations a step keeps for backward.

    Example:
        >>> layer = torch.nn.Linear(4, 4)
        >>> with SavedActivations(layer) as kept:
        ...     loss = layer(torch.ones(1, 4, requires_grad=True)).exp().sum()
        >>> kept.bytes   # the input (16 B) and exp's output (16 B); the weight is not counted
        32
    """

    def __init__(self, *modules: torch.nn.Module):
        super().__init__()
        self._weights = {t.untyped_storage().data_ptr() for m in modules for t in (*m.parameters(), *m.buffers())}

    def __exit__(self, *exc) -> bool:
        super().__exit__(*exc)
        self.bytes = sum(n for ptr, n in self._storages.items() if ptr not in self._weights)
        return False


def _measure(fn, device: str, repeats: int, weights: tuple = (), saved: bool = True) -> dict:
    """Median time of ``repeats`` calls; the last one also gives peak memory and saved-for-backward bytes
    (a single call when ``repeats=1``: slow CPUs pay for each step once)."""
    times = [timed_call(fn) for _ in range(repeats - 1)]
    gc.collect()
    with PeakMemory(device) as memory:
        if saved:
            with SavedActivations(*weights) as kept:
                times.append(timed_call(fn))
        else:
            times.append(timed_call(fn))
    return {"ms": summarize(times), "peak_mb": memory.peak_bytes / MB,
            **({"saved_mb": kept.bytes / MB} if saved else {})}


def bench_row(kind: str, size: int, *, device: str = "cpu", repeats: int = 1, checkpointing: bool = True,
              quality=None) -> dict:
    """Measure one (model, size) row -> dict of ``plain`` / ``guided`` / ``reward`` timings and memory."""
    from .guidance import QualityGuidance
    from .reward import RewardFineTuner, add_lora

    unet, denoiser, scheduler, decode, shape, vae = _models(kind, size, device, checkpointing)
    scheduler.set_timesteps(50)
    quality = quality or _ifqa(device)
    x = torch.randn(shape, device=device)
    degraded = torch.rand(1, 3, size // 4, size // 4, device=device) * 2 - 1
    t = scheduler.timesteps[25]
    unet.requires_grad_(False)
    weights = tuple(m for m in (unet, vae, quality.metric.net) if m is not None)

    def plain():
        with torch.no_grad():
            denoiser(x, t, None)

    guidance = QualityGuidance(quality=quality, fidelity_weight=1.0, scale=1.0, decode=decode)

    def guided():
        guidance(x, t, 25, denoiser=denoiser, scheduler=scheduler, degraded=degraded)

    row = {"model": kind, "size": size, "device": device, "decoder_checkpointing": checkpointing if decode else None,
           "plain": _measure(plain, device, repeats, saved=False), "guided": _measure(guided, device, repeats, weights)}
    add_lora(unet, rank=4)
    tuner = RewardFineTuner(unet, scheduler, reward=quality, fidelity_weight=1.0, k=1, num_inference_steps=1,
                            condition=None, decode=decode, denoiser=denoiser, sample_shape=lambda lq: shape)

    def reward():
        tuner.step(degraded)

    row["reward"] = _measure(reward, device, repeats, weights + (unet,))
    row["guided_added_ms"] = row["guided"]["ms"]["median"] - row["plain"]["ms"]["median"]
    row["reward_added_ms"] = row["reward"]["ms"]["median"] - row["plain"]["ms"]["median"]
    return row


def markdown(rows: list[dict]) -> str:
    """The rows as a Markdown table (median ms; peak / saved-for-backward MB)."""
    lines = ["| model | size | decoder ckpt | plain ms | guided ms (+added) | guided peak / saved MB | "
             "reward ms (+added) | reward peak / saved MB |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        g, w = r["guided"], r["reward"]
        lines.append(f"| {r['model']} | {r['size']} | {r['decoder_checkpointing']} | {r['plain']['ms']['median']:.0f} "
                     f"| {g['ms']['median']:.0f} (+{r['guided_added_ms']:.0f}) | {g['peak_mb']:.0f} / "
                     f"{g['saved_mb']:.0f} | {w['ms']['median']:.0f} (+{r['reward_added_ms']:.0f}) | "
                     f"{w['peak_mb']:.0f} / {w['saved_mb']:.0f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ifqa_loss.diffusion.bench", description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="256,512", help="image sides (latent models use side/8 latents)")
    parser.add_argument("--models", default="pixel,latent", help="pixel, latent, or both")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=1, help="timed calls per measurement (median reported)")
    parser.add_argument("--no-decoder-checkpointing", action="store_true", help="latent rows without checkpointing")
    parser.add_argument("--out", help="also write the rows as JSON here")
    args = parser.parse_args(argv)
    try:
        sizes = [int(s) for s in args.sizes.split(",")]
    except ValueError:
        print(f"error: --sizes must be comma-separated integers, got {args.sizes!r}", file=sys.stderr)
        return 2
    models = args.models.split(",")
    if bad := [m for m in models if m not in ("pixel", "latent")] or [s for s in sizes if s % 64]:
        print(f"error: unknown model or size {bad}: models are pixel,latent; sizes multiples of 64", file=sys.stderr)
        return 2
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("error: --device cuda but no CUDA device is visible; use --device cpu", file=sys.stderr)
        return 2
    rows = []
    print(f"device {args.device}, torch threads {torch.get_num_threads()}, load average "
          f"{' '.join(f'{v:.1f}' for v in os.getloadavg())}", flush=True)
    for size in sizes:
        for kind in models:
            row = bench_row(kind, size, device=args.device, repeats=args.repeats,
                            checkpointing=not args.no_decoder_checkpointing)
            row["load_average"] = os.getloadavg()
            rows.append(row)
            print(json.dumps(row), flush=True)
            if args.out:  # after every row: a slow machine keeps what it finished
                with open(args.out, "w") as f:
                    json.dump({"command": " ".join(sys.argv), "torch_threads": torch.get_num_threads(), "rows": rows},
                              f, indent=1)
            gc.collect()
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
