"""GFIQA: blind face IQA with a StyleGAN2 generative prior as "latent reference" (GFIQA-20k paper, Sec. IV).

    x ──ResNet50──> stage features c1..c4 ──map2style heads──> 16 codes Δw
         │                                          w = w̄ + Δw for the first K=12 codes, w̄ for the rest
         │                                          StyleGAN2 prior (frozen) ──> f_G(K): 32x512x512 (cmul1)
         │                                          5 x map2quality (CBAM + stride-2 conv) ──> 1024x16x16
         └─ c4 (2048x16x16) ─1x1 conv─> f_E (1024x16x16) ──SPADE(f_G)──> f_mod
                            concat(f_E, f_mod) 2048x16x16 ─GAP─ FC 1024 ─ FC 512 ─ FC 1 ─> MOS

Layout of the paper's Table I (read with its rows re-aligned) with ``prior="cmul1"``, the
default. Where the paper is silent the choice is an argument; every such choice, what the
paper says and why we chose it is in ONE table: docs/gfiqa.md.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .stylegan2 import StyleGAN2Generator
from .stylegan2_original import StyleGAN2GeneratorOriginal

# prior name -> (generator class, channel multiplier): the checkpoint each one loads.
PRIORS = {
    # GFP-GAN's StyleGAN2_512_Cmul1_FFHQ_B12G4_scratch_800k.pth (params_ema): the paper's widths (Table I).
    "cmul1": (StyleGAN2GeneratorOriginal, 1),
    # stylegan_decoder.* of GFPGANv1.3/1.4.pth: a deviation (f_G is 64 wide, the head 2x wider), for users
    # who have only those files.
    "clean": (StyleGAN2Generator, 2),
}
FUSIONS = ("e_mod", "e_g")  # paper: concat(f_E, f_mod); Table V's "w/o mod" ablation: concat(f_E, f_G(K))

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class ResNetEncoder(nn.Module):
    """torchvision ResNet50 trunk (state-dict names as torchvision, so ImageNet weights load).

    (N,3,H,W) in [-1,1] -> four stage maps with 256/512/1024/2048 channels (x ``width_scale``)
    at H/4, H/8, H/16, H/32.
    """

    def __init__(self, width_scale: float = 1.0):
        super().__init__()
        # Imported here: `import torchvision` pulls in torch._dynamo (~2 s), which IFQA-only users never need.
        from torchvision.models import resnet50

        base = resnet50(weights=None) if width_scale == 1.0 else _narrow_resnet(width_scale)
        self.conv1, self.bn1, self.relu, self.maxpool = base.conv1, base.bn1, base.relu, base.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = base.layer1, base.layer2, base.layer3, base.layer4

    @property
    def stage_channels(self) -> tuple[int, ...]:
        return tuple(layer[-1].conv3.out_channels for layer in (self.layer1, self.layer2, self.layer3, self.layer4))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        mean, std = x.new_tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), x.new_tensor(_IMAGENET_STD).view(1, 3, 1, 1)
        x = ((x + 1) / 2 - mean) / std
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        stages = []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            stages.append(x)
        return stages


def _narrow_resnet(width_scale: float) -> nn.Module:
    """A ResNet50-shaped network with all widths scaled (tests only: ImageNet weights need 1.0)."""
    from torchvision.models.resnet import Bottleneck, ResNet

    model = ResNet(Bottleneck, [3, 4, 6, 3])
    widths = [max(int(w * width_scale), 4) for w in (64, 128, 256, 512)]
    model.inplanes = widths[0]
    model.conv1 = nn.Conv2d(3, widths[0], 7, 2, 3, bias=False)
    model.bn1 = nn.BatchNorm2d(widths[0])
    model.layer1 = model._make_layer(Bottleneck, widths[0], 3)
    model.layer2 = model._make_layer(Bottleneck, widths[1], 4, stride=2)
    model.layer3 = model._make_layer(Bottleneck, widths[2], 6, stride=2)
    model.layer4 = model._make_layer(Bottleneck, widths[3], 3, stride=2)
    return model


class Map2Style(nn.Module):
    """pSp map2style: stride-2 3x3 convs + LeakyReLU down to 1x1, then a linear layer: (N,C,s,s) -> (N,D)."""

    def __init__(self, channels: int, style_dim: int, spatial: int):
        super().__init__()
        layers: list[nn.Module] = []
        while spatial > 1:
            layers += [nn.Conv2d(channels, channels, 3, 2, 1), nn.LeakyReLU(0.2)]
            spatial //= 2
        self.convs = nn.Sequential(*layers)
        self.linear = nn.Linear(channels, style_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.convs(x).flatten(1))


class CBAM(nn.Module):
    """Convolutional block attention (channel then spatial), used with a residual: x + CBAM(x)."""

    def __init__(self, channels: int, reduction: int = 16, kernel_size: int = 7):
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.mlp = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.ReLU(), nn.Conv2d(hidden, channels, 1))
        self.spatial = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channel = torch.sigmoid(self.mlp(x.mean((2, 3), keepdim=True)) + self.mlp(x.amax((2, 3), keepdim=True)))
        y = x * channel
        spatial = torch.sigmoid(self.spatial(torch.cat([y.mean(1, keepdim=True), y.amax(1, keepdim=True)], 1)))
        return y * spatial


class Map2Quality(nn.Module):
    """Residual CBAM, then a stride-2 3x3 conv doubling channels: (N,C,H,W) -> (N,2C,H/2,W/2)."""

    def __init__(self, channels: int):
        super().__init__()
        self.cbam = CBAM(channels)
        self.down = nn.Conv2d(channels, channels * 2, 3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(self.down(x + self.cbam(x)), 0.2)


class SPADE(nn.Module):
    """f_mod = γ(f_G) · norm(f_E) + β(f_G), γ/β are 3x3 convs of the generator features."""

    def __init__(self, channels: int, norm: str = "instance"):
        super().__init__()
        if norm not in ("instance", "batch"):
            raise ValueError(f"spade_norm must be 'instance' or 'batch', got {norm!r}")
        self.norm = nn.InstanceNorm2d(channels, affine=False) if norm == "instance" else nn.BatchNorm2d(
            channels, affine=False)
        self.gamma = nn.Conv2d(channels, channels, 3, 1, 1)
        self.beta = nn.Conv2d(channels, channels, 3, 1, 1)

    def forward(self, f_e: torch.Tensor, f_g: torch.Tensor) -> torch.Tensor:
        """f_E (N,C,h,w), f_G (N,C,h,w) -> f_mod (N,C,h,w)."""
        return self.gamma(f_g) * self.norm(f_e) + self.beta(f_g)


class GFIQA(nn.Module):
    """GFIQA quality regressor. ``forward``: (N,3,S,S) in [-1,1] -> (N,) predicted MOS in [0,1].

    Args (keyword-only; the defaults are the paper's model, docs/gfiqa.md says why each):
        image_size: input side S; also the prior's output size (512 in the paper).
        num_injected: K, the codes that drive the prior (the rest stay at w̄); 12 in the paper.
        prior: ``"cmul1"`` (GFP-GAN's original-layout StyleGAN2, channel multiplier 1: the paper's
            widths) or ``"clean"`` (GFPGANv1.3/1.4's decoder, channel multiplier 2).
        num_style_feat, num_mlp, generator_narrow: the prior's style width, MLP depth, width scale.
        encoder_width: scales the ResNet50 widths (1.0 = torchvision's, needed for ImageNet weights).
        code_groups: how many codes each ResNet stage (deepest first) produces; sums to the prior's num_latent.
        num_quality_blocks: map2quality blocks (5 brings 512 to 16).
        mlp_hidden: hidden widths of the head (two: 3 FC layers with the output layer).
        spade_norm: ``"batch"`` (Eq. 5's per-channel μ_E^c, σ_E^c) or ``"instance"``.
        fusion: ``"e_mod"`` (paper: concat f_E, f_mod) or ``"e_g"`` (Table V's "w/o mod": f_E, f_G(K)).

    Example:
        >>> net = GFIQA(image_size=32, num_injected=4, num_style_feat=16, num_mlp=1, encoder_width=0.0625,
        ...             code_groups=(2, 2, 2, 2), num_quality_blocks=1, mlp_hidden=(8, 8), generator_narrow=0.0625)
        >>> net.eval()(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2])
    """

    def __init__(self, *, image_size: int = 512, num_injected: int = 12, prior: str = "cmul1",
                 num_style_feat: int = 512, num_mlp: int = 8, encoder_width: float = 1.0,
                 code_groups: tuple[int, ...] = (4, 4, 4, 4), num_quality_blocks: int = 5,
                 mlp_hidden: tuple[int, ...] = (1024, 512), spade_norm: str = "batch",
                 generator_narrow: float = 1.0, fusion: str = "e_mod"):
        super().__init__()
        self.config = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        if prior not in PRIORS:
            raise ValueError(f"prior must be one of {sorted(PRIORS)}, got {prior!r}")
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}")
        self.input_size = image_size
        self.fusion = fusion
        self.encoder = ResNetEncoder(encoder_width)
        generator_cls, channel_multiplier = PRIORS[prior]
        self.generator = generator_cls(image_size, num_style_feat, num_mlp, channel_multiplier=channel_multiplier,
                                       narrow=generator_narrow)
        self.generator.requires_grad_(False)  # the pretrained prior stays fixed
        if sum(code_groups) != self.generator.num_latent:
            raise ValueError(f"code_groups {code_groups} must sum to the prior's {self.generator.num_latent} codes")
        if not 1 <= num_injected <= self.generator.num_latent:
            raise ValueError(f"num_injected must be in 1..{self.generator.num_latent}, got {num_injected}")
        self.num_injected = num_injected
        self.code_groups = tuple(code_groups)
        stage_channels = self.encoder.stage_channels
        self.lateral = nn.ModuleList(nn.Conv2d(c, num_style_feat, 1) for c in stage_channels)
        self.styles = nn.ModuleList()
        for depth, count in enumerate(code_groups):  # deepest stage (H/32) first
            spatial = image_size // 2 ** (5 - depth)
            self.styles.extend(Map2Style(num_style_feat, num_style_feat, spatial) for _ in range(count))
        self.register_buffer("w_avg", torch.zeros(1, num_style_feat))

        width = self.generator.channels[image_size]
        blocks = []
        for _ in range(num_quality_blocks):
            blocks.append(Map2Quality(width))
            width *= 2
        self.map2quality = nn.Sequential(*blocks)
        self.encoder_proj = nn.Conv2d(stage_channels[-1], width, 1)  # f_E: the 1x1 convolution of Sec. IV-B
        self.spade = SPADE(width, spade_norm)
        head: list[nn.Module] = []
        in_width = 2 * width
        for hidden in mlp_hidden:
            head += [nn.Linear(in_width, hidden), nn.LeakyReLU(0.2)]
            in_width = hidden
        head.append(nn.Linear(in_width, 1))
        self.head = nn.Sequential(*head)

    def train(self, mode: bool = True) -> GFIQA:
        super().train(mode)
        self.generator.eval()  # the frozen prior never switches mode
        return self

    @torch.no_grad()
    def init_mean_latent(self, num_samples: int = 4096) -> None:
        """Set w̄ from the prior's mapping network (call after loading the prior's weights)."""
        self.w_avg.copy_(self.generator.mean_latent(num_samples))

    def encode(self, x: torch.Tensor, num_codes: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(N,3,S,S) -> (codes (N,num_codes,S_w) offsets Δw, deepest stage features (N,2048,S/32,S/32)).

        ``num_codes`` (default: all ``num_latent``) computes only the first codes: the score needs
        the first K, and the heads of the later codes read the largest stage (at 512, the four
        Stage1 heads are about half of GFIQA's FLOPs), so scoring skips them and their pyramid level.
        """
        num_codes = self.generator.num_latent if num_codes is None else num_codes
        if not 1 <= num_codes <= self.generator.num_latent:
            raise ValueError(f"num_codes must be in 1..{self.generator.num_latent}, got {num_codes}")
        stages = self.encoder(x)
        codes, top = [], None
        index = 0
        for depth, count in enumerate(self.code_groups):
            if index >= num_codes:
                break
            stage = len(stages) - 1 - depth
            lateral = self.lateral[stage](stages[stage])
            top = lateral if top is None else lateral + F.interpolate(top, size=lateral.shape[-2:], mode="bilinear",
                                                                      align_corners=False)
            codes.extend(head(top) for head in self.styles[index:min(index + count, num_codes)])
            index += count
        return torch.stack(codes, dim=1), stages[-1]

    def latents(self, codes: torch.Tensor, num_injected: int) -> torch.Tensor:
        """W+ (N,num_latent,S_w): the first ``num_injected`` codes are w̄ + Δw, the rest w̄.

        ``codes`` (N,n,S_w) needs ``n >= num_injected`` entries (offsets after them are not read).
        """
        if codes.shape[1] < num_injected:
            raise ValueError(f"{num_injected} codes are injected but only {codes.shape[1]} were given")
        w = self.w_avg[:, None].expand(codes.shape[0], self.generator.num_latent, -1)
        # Offsets beyond num_injected are zero: w + 0 is w exactly, as the paper discards those codes.
        return w + F.pad(codes[:, :num_injected], (0, 0, 0, self.generator.num_latent - num_injected))

    def prior_features(self, codes: torch.Tensor, num_injected: int | None = None) -> torch.Tensor:
        """f_G(K): last-scale generator features for the first K codes (stored noise, deterministic)."""
        latents = self.latents(codes, self.num_injected if num_injected is None else num_injected)
        _, features = self.generator(latents, input_is_latent=True, randomize_noise=False, return_features=True,
                                     return_image=False)
        return features

    def reconstruct(self, codes: torch.Tensor) -> torch.Tensor:
        """x̂(N): the prior's image from all codes (the reconstruction losses' target is the input)."""
        image, _ = self.generator(self.latents(codes, codes.shape[1]), input_is_latent=True, randomize_noise=False)
        return image

    def predict(self, x: torch.Tensor, codes: torch.Tensor, f_e: torch.Tensor) -> torch.Tensor:
        """(N,) MOS from the codes and the deepest encoder stage (x is unused; kept for the training objective)."""
        f_g = self.map2quality(self.prior_features(codes))
        f_e = self.encoder_proj(f_e)
        if f_e.shape[-2:] != f_g.shape[-2:]:  # only when image_size is not the paper's 512
            f_e = F.interpolate(f_e, size=f_g.shape[-2:], mode="bilinear", align_corners=False)
        other = self.spade(f_e, f_g) if self.fusion == "e_mod" else f_g
        fused = torch.cat([f_e, other], dim=1).mean(dim=(2, 3))
        return torch.sigmoid(self.head(fused)).squeeze(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N,3,S,S) in [-1,1] -> (N,) MOS."""
        codes, f_e = self.encode(x, num_codes=self.num_injected)  # later codes would be discarded
        return self.predict(x, codes, f_e)


class ResNet50MOS(nn.Module):
    """The paper's ResNet50 baseline: ImageNet-statistics ResNet50, global pooling, MLP -> (N,) MOS."""

    def __init__(self, image_size: int = 512, encoder_width: float = 1.0, mlp_hidden: tuple[int, ...] = (1024, 512)):
        super().__init__()
        self.config = {"image_size": image_size, "encoder_width": encoder_width, "mlp_hidden": tuple(mlp_hidden)}
        self.input_size = image_size
        self.encoder = ResNetEncoder(encoder_width)
        head: list[nn.Module] = []
        in_width = self.encoder.stage_channels[-1]
        for hidden in mlp_hidden:
            head += [nn.Linear(in_width, hidden), nn.LeakyReLU(0.2)]
            in_width = hidden
        head.append(nn.Linear(in_width, 1))
        self.head = nn.Sequential(*head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.head(self.encoder(x)[-1].mean(dim=(2, 3)))).squeeze(1)


LEGACY_GFIQA_MESSAGE = (
    "this GFIQA checkpoint was trained with ifqa-loss's earlier, pre-paper variant (concat(f_mod, f_G), "
    "4 FC layers, GFPGANv1.3/1.4 prior with no 'prior' in its config); that variant is not in the paper and "
    "was removed. Retrain with  ifqa-loss train-gfiqa  (the paper's layout, docs/gfiqa.md)."
)


def check_gfiqa_config(config: dict) -> None:
    """Raise ``ValueError`` with the reason for a config of the removed pre-paper variant."""
    if "prior" not in config and "channel_multiplier" in config:
        raise ValueError(LEGACY_GFIQA_MESSAGE)


def build_gfiqa(**config) -> GFIQA:
    """GFIQA from a checkpoint's stored config; refuses configs of the removed pre-paper variant.

    Example:
        >>> try:
        ...     build_gfiqa(image_size=512, channel_multiplier=2)  # a config saved by the removed variant
        ... except ValueError as exc:
        ...     print(str(exc)[:52])
        this GFIQA checkpoint was trained with ifqa-loss's e
    """
    check_gfiqa_config(config)
    return GFIQA(**config)


# What the weights module validates a stored config against (the builder itself takes **config).
build_gfiqa.architecture = GFIQA
build_gfiqa.check_config = check_gfiqa_config
