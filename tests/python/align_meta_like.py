"""A DINOv3 written the way Meta's own code is laid out, with names and layouts of its own, for the
alignment tests (tests/python/test_align*.py): Meta's facebookresearch/dinov3 package is not on the
registries, and timm's port is what the stage rules already know.

What differs from timm's port (and from dinodiff's canonical layouts), on purpose:
- names: `embeddings.patch_embeddings.projection`, `encoder.layer.3.attention.value`,
  `encoder.layer.3.layernorm_before`, `layernorm`, ... (transformers-like, not `blocks.3.attn`);
- the patch embedding returns [B, h, w, D] (Meta's PatchEmbed with flatten_embedding=False);
- q, k, v are three Linear modules (no fused qkv: `attn.qkv` has no single partner);
- q, k, v stay [B, N, H, hd]; RoPE is applied in that layout; attention is written out with
  matmuls on q·scale [B, H, N, hd], kᵀ [B, H, hd, N] and vᵀ [B, H, hd, N]
  (outᵀ = vᵀ · softmaxᵀ), so the only values equal to Meta's q / k / v ([B, H, N, hd]) are
  permutations of them;
- the head returns (CLS, storage, patches, pooled) as Meta's `forward_features` dict does.

The weights are a Meta-format checkpoint's (tools/make_meta_checkpoint.py), renamed
(`from_meta_state_dict`), the qkv weight split in three, the K bias masked as Meta does.

`STAGES` says, for every canonical stage this module computes, which module's output (or input)
holds it and how that tensor becomes the canonical layout (`canonical`): the truth of the tests
comes from forward hooks on these modules, not from dinodiff."""

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

EPS = 1e-5


class PatchEmbeddings(nn.Module):
    def __init__(self, dim, patch):
        super().__init__()
        self.projection = nn.Conv2d(3, dim, patch, patch)

    def forward(self, pixels):
        return self.projection(pixels).permute(0, 2, 3, 1)  # [B, h, w, D]


class Embeddings(nn.Module):
    def __init__(self, dim, patch, storage):
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.mask_token = nn.Parameter(torch.zeros(1, dim))
        self.register_tokens = nn.Parameter(torch.zeros(1, storage, dim))
        self.patch_embeddings = PatchEmbeddings(dim, patch)

    def forward(self, pixels):
        patches = self.patch_embeddings(pixels)
        b, h, w, d = patches.shape
        cls = self.cls_token + 0 * self.mask_token
        return torch.cat([cls.expand(b, -1, -1), self.register_tokens.expand(b, -1, -1),
                          patches.reshape(b, h * w, d)], dim=1), (h, w)


class RopeTables(nn.Module):
    """Meta's RoPE: coords at patch centres in [-1, 1], angles 2π·c/period, tiled ×2."""

    def __init__(self, head_dim):
        super().__init__()
        self.register_buffer("periods", torch.zeros(head_dim // 4))

    def forward(self, h, w):
        ch = torch.arange(0.5, h, dtype=torch.float32) / h
        cw = torch.arange(0.5, w, dtype=torch.float32) / w
        coords = torch.stack(torch.meshgrid(ch, cw, indexing="ij"), dim=-1).flatten(0, 1)
        coords = 2.0 * coords - 1.0
        angles = 2 * math.pi * coords[:, :, None] / self.periods[None, None, :]
        angles = angles.flatten(1, 2).tile(2)
        return torch.sin(angles), torch.cos(angles)


class Heads(nn.Module):
    """[B, N, D] -> [B, N, H, hd]."""

    def __init__(self, heads):
        super().__init__()
        self.heads = heads

    def forward(self, x):
        b, n, d = x.shape
        return x.reshape(b, n, self.heads, d // self.heads)


class Rotary(nn.Module):
    """RoPE on the patch tokens of [B, N, H, hd]; the prefix tokens pass unchanged."""

    def __init__(self, prefix):
        super().__init__()
        self.prefix = prefix

    def forward(self, x, sin, cos):
        prefix, patches = x[:, :self.prefix], x[:, self.prefix:]
        x1, x2 = patches.chunk(2, dim=-1)
        rotated = torch.cat([-x2, x1], dim=-1)
        sin, cos = sin[None, :, None, :], cos[None, :, None, :]
        return torch.cat([prefix, patches * cos + rotated * sin], dim=1)


class MergeHeads(nn.Module):
    """outᵀ [B, H, hd, N] -> [B, N, D]."""

    def forward(self, out_t):
        b, h, hd, n = out_t.shape
        return out_t.permute(0, 3, 1, 2).reshape(b, n, h * hd)


class SelfAttention(nn.Module):
    def __init__(self, dim, heads, prefix):
        super().__init__()
        self.head_dim = dim // heads
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)
        self.query_heads, self.key_heads, self.value_heads = Heads(heads), Heads(heads), Heads(heads)
        self.rotary_query, self.rotary_key = Rotary(prefix), Rotary(prefix)
        self.merge_heads = MergeHeads()
        self.dense = nn.Linear(dim, dim)

    def forward(self, x, sin, cos):
        q = self.rotary_query(self.query_heads(self.query(x)), sin, cos)  # [B, N, H, hd]
        k = self.rotary_key(self.key_heads(self.key(x)), sin, cos)
        v = self.value_heads(self.value(x))
        scaled_q = (q * self.head_dim ** -0.5).permute(0, 2, 1, 3)  # [B, H, N, hd], scaled
        k_t = k.permute(0, 2, 3, 1)  # [B, H, hd, N]
        weights = torch.softmax(scaled_q @ k_t, dim=-1)  # [B, H, N, N]
        out_t = v.permute(0, 2, 3, 1) @ weights.transpose(-1, -2)  # [B, H, hd, N]
        return self.dense(self.merge_heads(out_t))


class LayerScale(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.lambda1 = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * self.lambda1


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.activation = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.activation(self.fc1(x)))


class Layer(nn.Module):
    def __init__(self, dim, heads, hidden, prefix):
        super().__init__()
        self.layernorm_before = nn.LayerNorm(dim, eps=EPS)
        self.attention = SelfAttention(dim, heads, prefix)
        self.layer_scale1 = LayerScale(dim)
        self.layernorm_after = nn.LayerNorm(dim, eps=EPS)
        self.mlp = Mlp(dim, hidden)
        self.layer_scale2 = LayerScale(dim)

    def forward(self, x, sin, cos):
        x = x + self.layer_scale1(self.attention(self.layernorm_before(x), sin, cos))
        return x + self.layer_scale2(self.mlp(self.layernorm_after(x)))


class Encoder(nn.Module):
    def __init__(self, dim, depth, heads, hidden, prefix):
        super().__init__()
        self.layer = nn.ModuleList(Layer(dim, heads, hidden, prefix) for _ in range(depth))

    def forward(self, x, sin, cos):
        for layer in self.layer:
            x = layer(x, sin, cos)
        return x


class MetaLikeDinoV3(nn.Module):
    def __init__(self, dim, depth, heads, hidden, patch=16, storage=4):
        super().__init__()
        self.storage = storage
        self.embeddings = Embeddings(dim, patch, storage)
        self.rope_embeddings = RopeTables(dim // heads)
        self.encoder = Encoder(dim, depth, heads, hidden, 1 + storage)
        self.layernorm = nn.LayerNorm(dim, eps=EPS)

    def forward(self, pixels):
        x, (h, w) = self.embeddings(pixels)
        sin, cos = self.rope_embeddings(h, w)
        x = self.layernorm(self.encoder(x, sin, cos))
        patches = x[:, 1 + self.storage:]
        return x[:, 0], x[:, 1:1 + self.storage], patches, patches.mean(dim=1)


def from_meta_state_dict(sd):
    """A MetaLikeDinoV3 with a Meta-format state dict's weights (strict: every weight used)."""
    d = sd["cls_token"].shape[-1]
    hd = 4 * sd["rope_embed.periods"].shape[0]
    depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    hidden = sd["blocks.0.mlp.fc1.weight"].shape[0]
    model = MetaLikeDinoV3(d, depth, d // hd, hidden, storage=sd["storage_tokens"].shape[1])
    ours = {
        "embeddings.cls_token": sd["cls_token"],
        "embeddings.mask_token": sd["mask_token"],
        "embeddings.register_tokens": sd["storage_tokens"],
        "embeddings.patch_embeddings.projection.weight": sd["patch_embed.proj.weight"],
        "embeddings.patch_embeddings.projection.bias": sd["patch_embed.proj.bias"],
        "rope_embeddings.periods": sd["rope_embed.periods"],
        "layernorm.weight": sd["norm.weight"],
        "layernorm.bias": sd["norm.bias"],
    }
    for i in range(depth):
        m, o = f"blocks.{i}", f"encoder.layer.{i}"
        w = sd[f"{m}.attn.qkv.weight"]
        bias = sd[f"{m}.attn.qkv.bias"] * sd[f"{m}.attn.qkv.bias_mask"]
        for j, name in enumerate(["query", "key", "value"]):
            ours[f"{o}.attention.{name}.weight"] = w[j * d:(j + 1) * d]
            ours[f"{o}.attention.{name}.bias"] = bias[j * d:(j + 1) * d]
        for src, dst in [("norm1", "layernorm_before"), ("norm2", "layernorm_after"),
                         ("attn.proj", "attention.dense"), ("mlp.fc1", "mlp.fc1"),
                         ("mlp.fc2", "mlp.fc2")]:
            ours[f"{o}.{dst}.weight"] = sd[f"{m}.{src}.weight"]
            ours[f"{o}.{dst}.bias"] = sd[f"{m}.{src}.bias"]
        ours[f"{o}.layer_scale1.lambda1"] = sd[f"{m}.ls1.gamma"]
        ours[f"{o}.layer_scale2.lambda1"] = sd[f"{m}.ls2.gamma"]
    model.load_state_dict({k: v.clone() for k, v in ours.items()}, strict=True)
    return model.eval()


def _bnhd(x):
    return np.transpose(x, (0, 2, 1, 3))


def _flat_tokens(x):
    return x.reshape(x.shape[0], -1, x.shape[-1])


# stage -> (module path, "output" | "input" | output index, to canonical layout)
def stages(depth):
    table = {
        "patch_embed": ("embeddings.patch_embeddings", "output", _flat_tokens),
        "tokens": ("embeddings", 0, None),
        "rope.sin": ("rope_embeddings", 0, None),
        "rope.cos": ("rope_embeddings", 1, None),
    }
    for i in range(depth):
        o, s = f"encoder.layer.{i}", f"blocks.{i}"
        table.update({
            f"{s}.norm1": (f"{o}.layernorm_before", "output", None),
            f"{s}.attn.q": (f"{o}.attention.rotary_query", "output", _bnhd),
            f"{s}.attn.k": (f"{o}.attention.rotary_key", "output", _bnhd),
            f"{s}.attn.v": (f"{o}.attention.value_heads", "output", _bnhd),
            f"{s}.attn.sdpa": (f"{o}.attention.merge_heads", "output", None),
            f"{s}.attn": (f"{o}.attention", "output", None),
            f"{s}.ls1": (f"{o}.layer_scale1", "output", None),
            f"{s}.residual1": (f"{o}.layernorm_after", "input", None),
            f"{s}.norm2": (f"{o}.layernorm_after", "output", None),
            f"{s}.mlp.hidden": (f"{o}.mlp.fc2", "input", None),
            f"{s}.mlp": (f"{o}.mlp", "output", None),
            f"{s}.ls2": (f"{o}.layer_scale2", "output", None),
            f"{s}.output": (f"{o}", "output", None),
        })
    table["norm"] = ("layernorm", "output", None)
    table["cls"] = ("", 0, None)
    table["storage"] = ("", 1, None)
    table["patches"] = ("", 2, None)
    table["pooled"] = ("", 3, None)
    return table


def hooked_run(model, x):
    """Runs the model on x (numpy); returns {stage: (tensor as the module holds it, canonical)}."""
    depth = len(model.encoder.layer)
    table = stages(depth)
    modules = dict(model.named_modules())
    seen = {}
    handles = []
    for stage, (path, which, _) in table.items():
        module = modules[path]
        if which == "input":
            handles.append(module.register_forward_pre_hook(
                lambda m, args, stage=stage: seen.__setitem__(stage, args[0].detach().clone())))
        else:
            def hook(m, args, out, stage=stage, which=which):
                value = out if which == "output" else out[which]
                seen[stage] = value.detach().clone()
            handles.append(module.register_forward_hook(hook))
    with torch.no_grad():
        model(torch.from_numpy(x))
    for h in handles:
        h.remove()
    result = {}
    for stage, (_, _, canonical) in table.items():
        native = seen[stage].numpy()
        result[stage] = (native, native if canonical is None else canonical(native))
    return result
