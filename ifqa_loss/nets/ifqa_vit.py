"""IFQA++: MAE ViT-H/14 encoder + MAE decoder with a per-patch realness head.

Re-implementation of ``model_huge.py::MaskedAutoencoderViT`` of the official IFQA
repository as used by its ``test.py`` (``decoder_pred`` replaced by
``Linear(512, 14*14)``, sigmoid, unpatchify; no masking at inference). Parameter
names and shapes match ``IFQA++_Metric.pth`` (``{'D': state_dict}``, 494 tensors,
656,873,412 parameters). No timm: attention is ``F.scaled_dot_product_attention``.

Input: (N,3,224,224) RGB in [-1,1]. Output: (N,1,224,224) realness map in [0,1].
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


class PatchEmbed(nn.Module):
    """Non-overlapping patch projection: (N,C,H,W) -> (N,H/p*W/p,D)."""

    def __init__(self, patch_size: int, in_channels: int, embed_dim: int):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, embed_dim, patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rearrange(self.proj(x), "n d h w -> n (h w) d")


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection: (N,L,D) -> (N,L,D)."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = rearrange(self.qkv(x), "n l (three h d) -> three n h l d", three=3, h=self.num_heads)
        x = F.scaled_dot_product_attention(q, k, v)  # default scale 1/sqrt(head_dim), as in the reference
        return self.proj(rearrange(x, "n h l d -> n l (h d)"))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block (LayerNorm eps 1e-6): (N,L,D) -> (N,L,D)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class IFQAViT(nn.Module):
    """IFQA++ network. All dimensions are arguments so tests can build tiny variants.

    Defaults are the published model: ViT-H/14 at 224 (embed 1280, depth 32, 16 heads)
    and an 8-block, 512-wide decoder whose head predicts ``patch_size**2`` logits per patch.

    ``forward``: (N,3,S,S) in [-1,1] with ``S = img_size`` -> (N,1,S,S) map in [0,1];
    ``logits`` gives the pre-sigmoid map.
    """

    def __init__(
        self,
        img_size: int = 224,
        patch_size: int = 14,
        in_channels: int = 3,
        embed_dim: int = 1280,
        depth: int = 32,
        num_heads: int = 16,
        decoder_embed_dim: int = 512,
        decoder_depth: int = 8,
        decoder_num_heads: int = 16,
        mlp_ratio: float = 4.0,
    ):
        super().__init__()
        if img_size % patch_size:
            raise ValueError(f"img_size {img_size} is not a multiple of patch_size {patch_size}")
        self.input_size = img_size
        self.patch_size = patch_size
        self.grid = img_size // patch_size
        num_tokens = self.grid**2 + 1  # patches + cls

        self.patch_embed = PatchEmbed(patch_size, in_channels, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        # Fixed sin-cos tables in the original; loaded from the checkpoint, never recomputed.
        self.pos_embed = nn.Parameter(torch.zeros(1, num_tokens, embed_dim), requires_grad=False)
        self.blocks = nn.ModuleList([Block(embed_dim, num_heads, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)

        self.decoder_embed = nn.Linear(embed_dim, decoder_embed_dim)
        # Unused without masking, but part of the published state dict.
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_embed_dim))
        self.decoder_pos_embed = nn.Parameter(torch.zeros(1, num_tokens, decoder_embed_dim), requires_grad=False)
        self.decoder_blocks = nn.ModuleList(
            [Block(decoder_embed_dim, decoder_num_heads, mlp_ratio) for _ in range(decoder_depth)]
        )
        self.decoder_norm = nn.LayerNorm(decoder_embed_dim, eps=1e-6)
        self.decoder_pred = nn.Linear(decoder_embed_dim, patch_size**2)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """(N,3,S,S) in [-1,1] -> (N,1,S,S) pre-sigmoid realness."""
        if x.shape[-2:] != (self.input_size, self.input_size):
            raise ValueError(f"IFQAViT expects {self.input_size}x{self.input_size} input, got {tuple(x.shape[-2:])}")
        tokens = self.patch_embed(x) + self.pos_embed[:, 1:]
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(x.shape[0], -1, -1)
        h = torch.cat([cls, tokens], dim=1)
        for block in self.blocks:
            h = block(h)
        h = self.decoder_embed(self.norm(h)) + self.decoder_pos_embed
        for block in self.decoder_blocks:
            h = block(h)
        patches = self.decoder_pred(self.decoder_norm(h))[:, 1:]  # drop cls
        return rearrange(
            patches, "n (gh gw) (p q) -> n 1 (gh p) (gw q)", gh=self.grid, p=self.patch_size
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N,3,S,S) in [-1,1] -> (N,1,S,S) realness map in [0,1]."""
        return torch.sigmoid(self.logits(x))
