"""IFQA guidance on a known prior, reported under a held-out judge (never the guiding metric alone).

    python integrations/diffusion/guidance_report.py --guide runs/ifqaA/last.pth --judge runs/ifqaB/last.pth

No pretrained diffusion weights exist on this machine, so the prior is one whose exact denoiser is known: a
diagonal Gaussian fitted per pixel to 64 px crops of the packaged faces (posterior mean in closed form, for
any DDIM step). Degraded faces (blur, noise, JPEG, 2x down) are restored DifFace-style: start from the
up-sampled degraded face noised to ``--strength``, DDIM to the end, three arms with the same noise:
unguided, fidelity-only guidance (control), IFQA + fidelity guidance. Per arm: guide and judge IFQA losses
(1 - mean map; lower = more real), L1 to the ground truth, and the paired judge differences to the unguided arm
(and, for IFQA + fidelity, to the fidelity-only control) with a 95% t-interval over images (each image's
scores averaged over the noise seeds first).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from scipy import stats

from ifqa_loss import IFQALoss
from ifqa_loss.diffusion.guidance import QualityGuidance
from ifqa_loss.diffusion.sampling import sample, start_sample
from ifqa_loss.imageio import read_image_official
from ifqa_loss.training.degradations import DegradationConfig, degrade

SAMPLES = Path(__file__).resolve().parents[2] / "ifqa_loss" / "samples"


def crops(n: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """(n,3,size,size) in [-1, 1]: random crops (60-100% of the side, random flips) of the packaged faces."""
    faces = [read_image_official(SAMPLES / name).float() / 255 for name in ("face256.png", "face512.png")]
    out = []
    for i in range(n):
        face = faces[i % 2]
        side = face.shape[-1]
        crop = int(side * (0.6 + 0.4 * float(torch.rand((), generator=generator))))
        y, x = (int(torch.randint(0, side - crop + 1, (), generator=generator)) for _ in range(2))
        image = F.interpolate(face[None, :, y:y + crop, x:x + crop], size=(size, size), mode="area")
        out.append(image.flip(-1) if float(torch.rand((), generator=generator)) < 0.5 else image)
    return torch.cat(out) * 2 - 1


def gaussian_denoiser(scheduler, mean: torch.Tensor, std: torch.Tensor):
    """Exact posterior-mean epsilon model of x0 ~ N(mean, diag(std^2)) (mean, std: (1,3,H,W))."""

    def denoise(x, t, cond=None):
        a = scheduler.alphas_cumprod[int(t)].to(x)
        var = std**2
        x0 = mean + a.sqrt() * var / (a * var + 1 - a) * (x - a.sqrt() * mean)
        return (x - a.sqrt() * x0) / (1 - a).sqrt()

    return denoise


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--guide", required=True, help="IFQA weights that guide (e.g. a train-ifqa run's last.pth)")
    p.add_argument("--judge", required=True, help="held-out IFQA weights (another train-ifqa run)")
    p.add_argument("--images", type=int, default=16)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--steps", type=int, default=20, help="DDIM steps")
    p.add_argument("--strength", type=float, default=0.5)
    p.add_argument("--scale", type=float, default=0.05, help="RMS step of the guidance shift per step")
    p.add_argument("--fidelity-weight", type=float, default=1.0)
    p.add_argument("--out", help="write the report as JSON here")
    args = p.parse_args(argv)
    for path in (args.guide, args.judge):
        if not Path(path).is_file():
            print(f"error: {path} not found: train one with `ifqa-loss train-ifqa` (see docs/diffusion.md)",
                  file=sys.stderr)
            return 2
    from diffusers import DDIMScheduler

    guide = IFQALoss(checkpoint=args.guide, input_range=(-1, 1), reduction="none")
    judge = IFQALoss(checkpoint=args.judge, input_range=(-1, 1), reduction="none")
    prior = crops(256, args.size, torch.Generator().manual_seed(1))
    mean, std = prior.mean(0, keepdim=True), prior.std(0, keepdim=True).clamp_min(0.02)
    hq = crops(args.images, args.size, torch.Generator().manual_seed(2))
    lq = degrade((hq + 1) / 2, DegradationConfig(), generator=torch.Generator().manual_seed(3))
    lq = F.interpolate(lq, scale_factor=0.5, mode="area").clamp(0, 1) * 2 - 1
    scheduler = DDIMScheduler(clip_sample=False)
    scheduler.set_timesteps(args.steps)
    denoiser = gaussian_denoiser(scheduler, mean, std)
    guide_mean = lambda img: guide(img).mean()  # noqa: E731
    arms = {"unguided": None,
            "fidelity_only": QualityGuidance(quality=None, fidelity_weight=args.fidelity_weight, scale=args.scale,
                                             normalize="rms"),
            "ifqa+fidelity": QualityGuidance(quality=guide_mean, fidelity_weight=args.fidelity_weight,
                                             scale=args.scale, normalize="rms")}
    scores = {arm: {"guide": [], "judge": [], "l1_to_hq": []} for arm in arms}
    start = F.interpolate(lq, size=(args.size, args.size), mode="bilinear")
    for seed in range(args.seeds):
        for arm, guidance in arms.items():
            generator = torch.Generator().manual_seed(100 + seed)
            x, timesteps = start_sample(scheduler, tuple(hq.shape), start=start, strength=args.strength,
                                        generator=generator)
            out = sample(denoiser, scheduler, x, timesteps, degraded=lq, guidance=guidance).sample.clamp(-1, 1)
            with torch.no_grad():
                scores[arm]["guide"] += guide(out).tolist()
                scores[arm]["judge"] += judge(out).tolist()
                scores[arm]["l1_to_hq"] += (out - hq).abs().mean(dim=(1, 2, 3)).tolist()
    # Unit = image: each image's judge score is averaged over the noise seeds first (the seeds of one image are
    # not independent observations), then paired differences get a 95% t-interval over the images.
    report = {"settings": vars(args), "unit": f"image (mean over {args.seeds} noise seeds)", "n": args.images,
              "arms": {}}

    def per_image(arm: str) -> torch.Tensor:
        return torch.tensor(scores[arm]["judge"]).view(args.seeds, args.images).mean(0)

    def paired(arm: str, control: str) -> list[float]:
        diff = (per_image(arm) - per_image(control)).numpy()
        low, high = stats.t.interval(0.95, len(diff) - 1, loc=diff.mean(), scale=stats.sem(diff))
        return [float(diff.mean()), float(low), float(high)]

    for arm, s in scores.items():
        row = {k: float(torch.tensor(v).mean()) for k, v in s.items()}
        if arm != "unguided":
            row["judge_minus_unguided"] = paired(arm, "unguided")
        if arm == "ifqa+fidelity":  # what IFQA adds over the fidelity term alone
            row["judge_minus_fidelity_only"] = paired(arm, "fidelity_only")
        report["arms"][arm] = row
    print(json.dumps(report, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
