"""Reward fine-tuning of a (tiny, randomly initialised) diffusion face restorer with IFQA: DRaFT-K end to end.

    python integrations/diffusion/reward_finetune.py --out runs/reward --steps 20           # CPU, < 2 min
    python integrations/diffusion/reward_finetune.py --out runs/reward --resume --steps 40  # continue
    torchrun --nproc_per_node 2 integrations/diffusion/reward_finetune.py --out runs/ddp --steps 4  # DDP (gloo on CPU)

Faces: random crops of the packaged sample face, degraded (blur, noise, JPEG, ...) and down-sampled 2x; the
UNet sees the degraded face on extra input channels. ``--reward-checkpoint`` / ``--judge-checkpoint`` take
IFQA weight files (e.g. two ``ifqa-loss train-ifqa`` runs): the judge is reported beside the reward on a
fixed probe batch, never used for training. Without them a tiny RANDOM IFQA net stands in (wiring only).
Swap ``tiny_unet`` for your restorer's UNet (and ``add_lora`` it) to run the recipe on real weights; on CUDA
``--amp bf16|fp16`` and ``--gradient-checkpointing`` apply (written, not executed on the CPU machine this
was developed on).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

from ifqa_loss import IFQALoss, load_metric
from ifqa_loss.diffusion.models import tiny_unet
from ifqa_loss.diffusion.reward import RewardFineTuner, add_lora
from ifqa_loss.imageio import read_image_official
from ifqa_loss.training.degradations import DegradationConfig, degrade

SAMPLE = Path(__file__).resolve().parents[2] / "ifqa_loss" / "samples" / "face256.png"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="run folder: state.pth, log.jsonl, summary.json")
    p.add_argument("--steps", type=int, default=20, help="total updates; a resumed run continues up to it")
    p.add_argument("--size", type=int, default=32, help="restored side (degraded side is half)")
    p.add_argument("--batch-size", type=int, default=4, help="faces per update and process")
    p.add_argument("--inference-steps", type=int, default=4, help="DDIM steps per restoration")
    p.add_argument("--strength", type=float, default=0.5,
                   help="start from the up-sampled degraded face noised to this level (1: from pure noise)")
    p.add_argument("--k", type=int, default=1, help="steps the reward's gradient flows through (DRaFT-K)")
    p.add_argument("--lora", type=int, default=0, help="LoRA rank (0: fine-tune the whole UNet)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--reward-weight", type=float, default=1.0)
    p.add_argument("--fidelity-weight", type=float, default=1.0)
    p.add_argument("--reward-checkpoint", help="IFQA weights for the reward (default: tiny RANDOM net, wiring only)")
    p.add_argument("--judge-checkpoint", help="held-out IFQA weights reported on the probe batch")
    p.add_argument("--init", help="restorer weights (state_dict of the UNet) to start from")
    p.add_argument("--resume", action="store_true", help="continue from OUT/state.pth")
    p.add_argument("--device", default="cpu")
    p.add_argument("--amp", choices=["none", "bf16", "fp16"], default="none",
                   help="autocast dtype (bf16 tested on CPU; fp16 needs CUDA and uses a GradScaler)")
    p.add_argument("--gradient-checkpointing", action="store_true", help="UNet gradient checkpointing (for CUDA)")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def face_batch(batch: int, size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(HQ (N,3,size,size), degraded (N,3,size/2,size/2)) in [-1, 1] from random crops of the sample face."""
    face = read_image_official(SAMPLE).float() / 255  # (3,256,256) RGB
    crops = []
    for _ in range(batch):
        side = int(torch.randint(160, 257, (1,), generator=generator))
        y, x = (int(torch.randint(0, 256 - side + 1, (1,), generator=generator)) for _ in range(2))
        crops.append(F.interpolate(face[None, :, y:y + side, x:x + side], size=(size, size), mode="area"))
    hq = torch.cat(crops)
    lq = F.interpolate(degrade(hq, DegradationConfig(), generator=generator), scale_factor=0.5, mode="area")
    return hq * 2 - 1, lq.clamp(0, 1) * 2 - 1


def ifqa_loss(checkpoint: str | None, seed: int) -> IFQALoss:
    if checkpoint:
        return IFQALoss(checkpoint=checkpoint, input_range=(-1, 1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(seed)
        tiny = load_metric("ifqa", random_weights=True, widths=(4, 8, 8, 16, 16), num_bottleneck=1)
    return IFQALoss(metric=tiny, input_range=(-1, 1))


def main(argv=None) -> int:
    args = parse_args(argv)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    device = torch.device(args.device)
    if world > 1:
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    state_path = out / "state.pth"
    if state_path.exists() and not args.resume:
        print(f"error: {state_path} exists: pass --resume to continue it, or choose another --out", file=sys.stderr)
        return 2

    unet = tiny_unet(in_channels=6, sample_size=args.size, seed=args.seed)
    if args.init:
        unet.load_state_dict(torch.load(args.init, map_location="cpu", weights_only=True))
    if args.lora:
        unet.requires_grad_(False)
        add_lora(unet, rank=args.lora)
    if args.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    unet.to(device)
    model = unet
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(unet, device_ids=[device.index] if device.type == "cuda"
                                                          else None)
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler(num_train_timesteps=1000, clip_sample=False)
    reward, judge = ifqa_loss(args.reward_checkpoint, 1).to(device), None
    if args.judge_checkpoint:
        judge = ifqa_loss(args.judge_checkpoint, 2).to(device)
    amp = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[args.amp]
    scaler = torch.amp.GradScaler("cuda") if amp is torch.float16 else None
    tuner = RewardFineTuner(model, scheduler, reward=reward, reward_weight=args.reward_weight,
                            fidelity_weight=args.fidelity_weight, k=args.k, num_inference_steps=args.inference_steps,
                            strength=args.strength,
                            lr=args.lr, autocast_dtype=amp, grad_scaler=scaler, seed=args.seed,
                            sample_shape=lambda lq: (lq.shape[0], 3, args.size, args.size))
    if args.resume and state_path.exists():
        tuner.load(state_path)
    probe_hq, probe_lq = face_batch(4, args.size, torch.Generator().manual_seed(999))
    probes = {"reward": reward, **({"judge": judge} if judge is not None else {}),
              "l1_to_hq": lambda img: F.l1_loss(img, probe_hq.to(img.device))}
    before = tuner.evaluate(probe_lq, probes)
    with open(out / "log.jsonl", "a") as log_file:
        while tuner.step_count < args.steps and not tuner.should_stop:
            generator = torch.Generator().manual_seed(args.seed * 100_003 + tuner.step_count * world + rank)
            hq, lq = face_batch(args.batch_size, args.size, generator)
            log = tuner.step(lq, target=hq)
            if rank == 0:
                log_file.write(json.dumps(log) + "\n")
                log_file.flush()
    after = tuner.evaluate(probe_lq, probes)
    if rank == 0:
        tuner.save(state_path)
    checksum = sum(float(p.detach().double().sum()) for p in unet.parameters() if p.requires_grad)
    summary = {"step": tuner.step_count, "world_size": world, "rank": rank, "probe_before": before,
               "probe_after": after, "trainable_checksum": checksum,
               "reward": args.reward_checkpoint or "tiny RANDOM IFQA (wiring only)",
               "judge": args.judge_checkpoint}
    (out / f"summary_rank{rank}.json").write_text(json.dumps(summary, indent=1))
    if rank == 0:
        print(json.dumps(summary, indent=1))
    if world > 1:
        torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
