"""GFIQA: blind face IQA with a StyleGAN2 generative prior as "latent reference" (GFIQA-20k paper, Sec. IV).

    x ──ResNet50──> stage features c1..c4 ──map2style heads──> 16 codes Δw
         │                                          w = w̄ + Δw for the first K codes, w̄ for the rest
         │                                          StyleGAN2 (frozen prior) ──> f_G(K): last-scale features
         │                                          5 x map2quality (CBAM + stride-2 conv) ──> 16x16
         └─ c4 (2048x16x16) ─1x1 conv─> f_E ──SPADE(f_G)──> f_mod
                                   concat(f_mod, f_G) ─GAP─ MLP ─> MOS

Choices where the paper leaves room (all constructor arguments):
    * code groups: the 16 codes come from the four ResNet stages, coarse codes from deep
      stages (``code_groups=(4, 4, 4, 4)`` = stage 4 -> codes 0-3, ..., stage 1 -> 12-15),
      with a pSp-style top-down pathway (each stage gets the upsampled deeper map added).
    * widths: map2quality doubles channels from the generator's last width (64 at 512 with
      channel_multiplier 2) to ``64 * 2**5 = 2048``, matching f_E; with channel_multiplier 1
      they end at 1024 and f_E is projected to 1024.
    * SPADE normalisation: parameter-free InstanceNorm (``spade_norm="instance"``, batch-size
      independent) or BatchNorm; γ and β are single 3x3 convs of f_G; f_mod = γ·norm(f_E) + β.
    * head: MLP over the pooled concat with hidden widths ``(2048, 1024, 512)``, LeakyReLU(0.2),
      sigmoid output (MOS lies in [0,1]).
    * encoder input: [-1,1] RGB, converted to ImageNet statistics inside so torchvision's
      ResNet50 ImageNet weights apply unchanged.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from .stylegan2 import StyleGAN2Generator

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class ResNetEncoder(nn.Module):
    """torchvision ResNet50 trunk (state-dict names as torchvision, so ImageNet weights load).

    (N,3,H,W) in [-1,1] -> four stage maps with 256/512/1024/2048 channels (x ``width_scale``)
    at H/4, H/8, H/16, H/32.
    """

    def __init__(self, width_scale: float = 1.0):
        super().__init__()
        base = torchvision.models.resnet50(weights=None) if width_scale == 1.0 else _narrow_resnet(width_scale)
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
        return self.gamma(f_g) * self.norm(f_e) + self.beta(f_g)


class GFIQA(nn.Module):
    """GFIQA quality regressor. ``forward``: (N,3,S,S) in [-1,1] -> (N,) predicted MOS in [0,1].

    Args:
        image_size: input side S; also the prior's output size (512 in the paper).
        num_injected: K, the codes that drive the prior (the rest stay at w̄).
        channel_multiplier, num_style_feat, num_mlp: the StyleGAN2 prior (GFP-GAN's: 2, 512, 8).
        encoder_width: scales the ResNet50 widths (1.0 = torchvision's, needed for ImageNet weights).
        code_groups: how many codes each ResNet stage (deepest first) produces; sums to the prior's num_latent.
        num_quality_blocks: map2quality blocks (5 brings 512 to 16).
        mlp_hidden: hidden widths of the MOS head. spade_norm: "instance" or "batch".
    """

    def __init__(self, image_size: int = 512, num_injected: int = 12, channel_multiplier: int = 2,
                 num_style_feat: int = 512, num_mlp: int = 8, encoder_width: float = 1.0,
                 code_groups: tuple[int, ...] = (4, 4, 4, 4), num_quality_blocks: int = 5,
                 mlp_hidden: tuple[int, ...] = (2048, 1024, 512), spade_norm: str = "instance",
                 generator_narrow: float = 1.0):
        super().__init__()
        self.config = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        self.input_size = image_size
        self.encoder = ResNetEncoder(encoder_width)
        self.generator = StyleGAN2Generator(image_size, num_style_feat, num_mlp, channel_multiplier, generator_narrow)
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
        self.encoder_proj = nn.Conv2d(stage_channels[-1], width, 1)
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

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N,3,S,S) -> (codes (N,num_latent,S_w) offsets Δw, deepest stage features (N,2048,S/32,S/32))."""
        stages = self.encoder(x)
        codes, top = [], None
        index = 0
        for depth, count in enumerate(self.code_groups):
            stage = len(stages) - 1 - depth
            lateral = self.lateral[stage](stages[stage])
            top = lateral if top is None else lateral + F.interpolate(top, size=lateral.shape[-2:], mode="bilinear",
                                                                      align_corners=False)
            codes.extend(head(top) for head in self.styles[index:index + count])
            index += count
        return torch.stack(codes, dim=1), stages[-1]

    def latents(self, codes: torch.Tensor, num_injected: int) -> torch.Tensor:
        """W+ with the first ``num_injected`` codes = w̄ + Δw and the rest = w̄: (N,num_latent,S_w)."""
        w = self.w_avg[:, None].expand(codes.shape[0], codes.shape[1], -1)
        keep = torch.zeros(codes.shape[1], 1, device=codes.device, dtype=codes.dtype)
        keep[:num_injected] = 1
        return w + codes * keep

    def prior_features(self, codes: torch.Tensor, num_injected: int | None = None) -> torch.Tensor:
        """f_G(K): last-scale generator features for the first K codes (stored noise, deterministic)."""
        latents = self.latents(codes, self.num_injected if num_injected is None else num_injected)
        _, features = self.generator(latents, input_is_latent=True, randomize_noise=False, return_features=True)
        return features

    def reconstruct(self, codes: torch.Tensor) -> torch.Tensor:
        """x̂(N): the prior's image from all codes (the reconstruction losses' target is the input)."""
        image, _ = self.generator(self.latents(codes, codes.shape[1]), input_is_latent=True, randomize_noise=False)
        return image

    def predict(self, x: torch.Tensor, codes: torch.Tensor, f_e: torch.Tensor) -> torch.Tensor:
        f_g = self.map2quality(self.prior_features(codes))
        f_e = self.encoder_proj(f_e)
        if f_e.shape[-2:] != f_g.shape[-2:]:
            f_e = F.interpolate(f_e, size=f_g.shape[-2:], mode="bilinear", align_corners=False)
        fused = torch.cat([self.spade(f_e, f_g), f_g], dim=1).mean(dim=(2, 3))
        return torch.sigmoid(self.head(fused)).squeeze(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N,3,S,S) in [-1,1] -> (N,) MOS."""
        codes, f_e = self.encode(x)
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
