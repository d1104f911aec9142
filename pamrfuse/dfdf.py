"""DFDF: dual-branch feature decomposition fusion (Zhong et al. 2024, §2.4; spec §4).

The network is CDDFuse (Zhao et al., CVPR 2023), which the released PAMRFuse+ code uses verbatim:
a shared encoder (patch embedding + Restormer blocks = FE, a base block = "Lite Transformer" BE,
an invertible detail encoder = DE), fusion layers that take the element-wise SUM of the two
modalities' features (spec §7 item 21), and a Restormer decoder ending in ``sigmoid(out + residual)``
(§7 item 22). The base block is the code's channel ("transposed") attention with a full 3×3 qkv
conv, not the paper's spatial attention, which is infeasible at 300² (§7 item 19); the INN keeps
the code's 1×1 mixing conv before each coupling step (§7 item 20).

With ``dim=64, heads=8`` and 4 + 4 Restormer blocks: encoder 599,144, decoder 207,936, base fusion
363,016, detail fusion 18,176 parameters (spec §10).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LayerNorm2d", "RestormerBlock", "BaseBlock", "DetailNode", "DetailEncoder", "Encoder", "Decoder",
           "DFDF"]


class LayerNorm2d(nn.Module):
    """Per-pixel LayerNorm over channels with scale and shift (Restormer's "WithBias", eps 1e-5)."""

    def __init__(self, ch: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ch))
        self.bias = nn.Parameter(torch.zeros(ch))

    def forward(self, x):
        y = F.layer_norm(x.permute(0, 2, 3, 1), x.shape[1:2], self.weight, self.bias, 1e-5)
        return y.permute(0, 3, 1, 2)


def _channel_attention(q, k, v, heads: int, temperature: torch.Tensor) -> torch.Tensor:
    """Transposed attention (Restormer MDTA): a (C/heads)² map per head, linear in H·W."""
    b, c, h, w = q.shape
    q, k, v = (t.reshape(b, heads, c // heads, h * w) for t in (q, k, v))
    q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
    attn = (q @ k.transpose(-2, -1) * temperature).softmax(dim=-1)
    return (attn @ v).reshape(b, c, h, w)


class _MDTA(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.qkv = nn.Conv2d(dim, 3 * dim, 1, bias=False)
        self.qkv_dw = nn.Conv2d(3 * dim, 3 * dim, 3, padding=1, groups=3 * dim, bias=False)
        self.proj = nn.Conv2d(dim, dim, 1, bias=False)

    def forward(self, x):
        q, k, v = self.qkv_dw(self.qkv(x)).chunk(3, dim=1)
        return self.proj(_channel_attention(q, k, v, self.heads, self.temperature))


class _GatedFFN(nn.Module):
    """GDFN: 1×1 to 2h, grouped 3×3, GELU(a)·b, 1×1 back. ``groups=2h`` is depthwise (Restormer);
    the base block uses ``groups=h`` (two channels per group), as CDDFuse does."""

    def __init__(self, dim: int, hidden: int, groups: int):
        super().__init__()
        self.project_in = nn.Conv2d(dim, 2 * hidden, 1, bias=False)
        self.dw = nn.Conv2d(2 * hidden, 2 * hidden, 3, padding=1, groups=groups, bias=False)
        self.project_out = nn.Conv2d(hidden, dim, 1, bias=False)

    def forward(self, x):
        a, b = self.dw(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(F.gelu(a) * b)


class RestormerBlock(nn.Module):
    """x + MDTA(LN(x)), then x + GDFN(LN(x)) with expansion 2 (45,256 parameters at dim 64)."""

    def __init__(self, dim: int = 64, heads: int = 8, expansion: float = 2.0):
        super().__init__()
        hidden = int(dim * expansion)
        self.norm1, self.attn = LayerNorm2d(dim), _MDTA(dim, heads)
        self.norm2, self.ffn = LayerNorm2d(dim), _GatedFFN(dim, hidden, groups=2 * hidden)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


class _BaseAttention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.scale = nn.Parameter(torch.ones(heads, 1, 1))
        self.qkv1 = nn.Conv2d(dim, 3 * dim, 1, bias=False)
        self.qkv2 = nn.Conv2d(3 * dim, 3 * dim, 3, padding=1, bias=False)
        self.proj = nn.Conv2d(dim, dim, 1, bias=False)

    def forward(self, x):
        q, k, v = self.qkv2(self.qkv1(x)).chunk(3, dim=1)
        return self.proj(_channel_attention(q, k, v, self.heads, self.scale))


class BaseBlock(nn.Module):
    """Base (low-frequency) encoder and fusion layer: channel attention with a full 3×3 qkv conv,
    gated FFN with expansion 1 (363,016 parameters at dim 64)."""

    def __init__(self, dim: int = 64, heads: int = 8):
        super().__init__()
        self.norm1, self.attn = LayerNorm2d(dim), _BaseAttention(dim, heads)
        self.norm2, self.ffn = LayerNorm2d(dim), _GatedFFN(dim, dim, groups=dim)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


class _Bottleneck(nn.Module):
    """MobileNet-V2 inverted residual without BatchNorm or skip: 1×1, ReLU6, dw 3×3, ReLU6, 1×1."""

    def __init__(self, ch: int, expansion: int = 2):
        super().__init__()
        hidden = ch * expansion
        self.body = nn.Sequential(
            nn.Conv2d(ch, hidden, 1, bias=False), nn.ReLU6(True), nn.ReflectionPad2d(1),
            nn.Conv2d(hidden, hidden, 3, groups=hidden, bias=False), nn.ReLU6(True),
            nn.Conv2d(hidden, ch, 1, bias=False))

    def forward(self, x):
        return self.body(x)


class DetailNode(nn.Module):
    """One affine coupling step of the INN (paper Eq. 7, with the code's 1×1 mixing conv).

    ``z1, z2 = split(mix([z1, z2]))``; ``z2 += phi(z1)``; ``z1 = z1 * exp(rho(z2)) + eta(z2)``.
    Invertible given ``mix``: ``z1 = (z1' - eta(z2')) * exp(-rho(z2'))``, ``z2 = z2' - phi(z1)``.
    """

    def __init__(self, dim: int = 64):
        super().__init__()
        half = dim // 2
        self.mix = nn.Conv2d(dim, dim, 1, bias=True)
        self.phi, self.rho, self.eta = _Bottleneck(half), _Bottleneck(half), _Bottleneck(half)

    def forward(self, z1, z2):
        z1, z2 = self.mix(torch.cat([z1, z2], 1)).chunk(2, dim=1)
        z2 = z2 + self.phi(z1)
        z1 = z1 * torch.exp(self.rho(z2)) + self.eta(z2)
        return z1, z2

    def inverse(self, y1, y2):
        """Undo the coupling; returns the mixed halves (``mix`` itself is a plain 1×1 conv)."""
        z1 = (y1 - self.eta(y2)) * torch.exp(-self.rho(y2))
        z2 = y2 - self.phi(z1)
        return z1, z2


class DetailEncoder(nn.Module):
    """Detail (high-frequency) encoder / fusion layer: ``layers`` coupling steps on split channels."""

    def __init__(self, dim: int = 64, layers: int = 3):
        super().__init__()
        self.nodes = nn.ModuleList(DetailNode(dim) for _ in range(layers))

    def forward(self, x):
        z1, z2 = x.chunk(2, dim=1)
        for node in self.nodes:
            z1, z2 = node(z1, z2)
        return torch.cat([z1, z2], 1)


class Encoder(nn.Module):
    """Shared encoder: patch embedding, ``blocks`` Restormer blocks, then base and detail branches.

    Returns ``(base, detail, shallow)``.
    """

    def __init__(self, dim: int = 64, heads: int = 8, blocks: int = 4, detail_layers: int = 3):
        super().__init__()
        self.embed = nn.Conv2d(1, dim, 3, padding=1, bias=False)
        self.restormer = nn.Sequential(*(RestormerBlock(dim, heads) for _ in range(blocks)))
        self.base = BaseBlock(dim, heads)
        self.detail = DetailEncoder(dim, detail_layers)

    def forward(self, x):
        shallow = self.restormer(self.embed(x))
        return self.base(shallow), self.detail(shallow), shallow


class Decoder(nn.Module):
    """concat(base, detail) -> 1×1 -> Restormer blocks -> 3×3, LReLU, 3×3 -> (+ residual) -> sigmoid."""

    def __init__(self, dim: int = 64, heads: int = 8, blocks: int = 4):
        super().__init__()
        self.reduce = nn.Conv2d(2 * dim, dim, 1, bias=False)
        self.restormer = nn.Sequential(*(RestormerBlock(dim, heads) for _ in range(blocks)))
        self.out = nn.Sequential(nn.Conv2d(dim, dim // 2, 3, padding=1, bias=False), nn.LeakyReLU(0.01, True),
                                 nn.Conv2d(dim // 2, 1, 3, padding=1, bias=False))

    def forward(self, base, detail, residual: torch.Tensor | None = None):
        out = self.out(self.restormer(self.reduce(torch.cat([base, detail], 1))))
        if residual is not None:
            out = out + residual
        return torch.sigmoid(out)


class DFDF(nn.Module):
    """Encoder + decoder + base/detail fusion layers.

    ``reconstruct(x)`` is the stage-I auto-encoder path; ``fuse(pat, mri)`` the stage-II path
    (residual = the PAT input when ``residual=True``, as the released code; spec §4.7).
    """

    def __init__(self, dim: int = 64, heads: int = 8, enc_blocks: int = 4, dec_blocks: int = 4,
                 detail_layers: int = 3, fuse_detail_layers: int = 1, residual: bool = True):
        super().__init__()
        if dim % heads or dim % 2:
            raise ValueError(f"DFDF: dim={dim} must be even and divisible by heads={heads}")
        self.residual = residual
        self.encoder = Encoder(dim, heads, enc_blocks, detail_layers)
        self.decoder = Decoder(dim, heads, dec_blocks)
        self.base_fuse = BaseBlock(dim, heads)
        self.detail_fuse = DetailEncoder(dim, fuse_detail_layers)

    def reconstruct(self, x):
        base, detail, _ = self.encoder(x)
        return self.decoder(base, detail, x if self.residual else None), base, detail

    def fuse(self, pat, mri):
        """Return ``(fused, (base_pat, detail_pat), (base_mri, detail_mri))``."""
        b_p, d_p, _ = self.encoder(pat)
        b_m, d_m, _ = self.encoder(mri)
        fused = self.decoder(self.base_fuse(b_p + b_m), self.detail_fuse(d_p + d_m),
                             pat if self.residual else None)
        return fused, (b_p, d_p), (b_m, d_m)
