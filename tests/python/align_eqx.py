"""A small Equinox DINOv3 with module names and layouts of its own (not the jax2onnx example that
`capture eqx` knows), run eagerly and recorded in execution order, for the alignment tests.

    Backbone: stem (conv, unbatched [D, h, w]) -> tokens -> rotary tables [h, w, hd]
      layers[i]: pre_norm -> mixer (fused qkv [N, 3D]; q [N, H, hd], kᵀ [H, hd, N], v [N, H, hd];
                 logits, probs, ctx [N, D], out) -> gain_a -> mid -> post_norm
                 -> ffn (up, act, down) -> gain_b -> out
      final_norm -> cls [D], registers [R, D], patch grid [h, w, D], mean patch [D]

Every array the model computes on the way is recorded under the model's own name (LayerNorm
statistics, pre-RoPE q/k, attention logits and probabilities, the MLP's pre-activation: values
with no canonical stage), by the model code itself, in the order they are computed: this is
"their own hooks". `CANONICAL` says which recorded array is which canonical stage and how it
reads in the canonical layout: the truth by construction."""

import math

import numpy as np

EPS = 1e-5


def build(sd):
    """The Backbone (an eqx.Module) with a Meta-format state dict's weights (numpy arrays)."""
    import equinox as eqx
    import jax.numpy as jnp

    class Linear(eqx.Module):
        weight: jnp.ndarray
        bias: jnp.ndarray

        def __call__(self, x):
            return x @ self.weight.T + self.bias

    class Norm(eqx.Module):
        weight: jnp.ndarray
        bias: jnp.ndarray

        def __call__(self, x, rec, name):
            mean = rec(f"{name}.mean", x.mean(-1, keepdims=True))
            var = rec(f"{name}.var", ((x - mean) ** 2).mean(-1, keepdims=True))
            return rec(name, (x - mean) / jnp.sqrt(var + EPS) * self.weight + self.bias)

    class Mixer(eqx.Module):
        qkv: Linear
        out: Linear
        heads: int = eqx.field(static=True)

        def __call__(self, x, sin, cos, prefix, rec, name):
            import jax

            n, d = x.shape
            hd = d // self.heads
            qkv = rec(f"{name}.qkv", self.qkv(x))
            q, k, v = (qkv[:, j * d:(j + 1) * d].reshape(n, self.heads, hd) for j in range(3))
            rec(f"{name}.q_lin", q)

            def rope(t):
                p = t[prefix:]
                rotated = jnp.concatenate([-p[..., hd // 2:], p[..., :hd // 2]], axis=-1)
                return jnp.concatenate([t[:prefix], p * cos[:, None] + rotated * sin[:, None]])

            q = rec(f"{name}.q", rope(q))  # [N, H, hd]
            k_t = rec(f"{name}.k_t", jnp.transpose(rope(k), (1, 2, 0)))  # [H, hd, N]
            v = rec(f"{name}.v", v)  # [N, H, hd]
            logits = rec(f"{name}.logits", jnp.einsum("nhd,hdm->hnm", q / math.sqrt(hd), k_t))
            probs = rec(f"{name}.probs", jax.nn.softmax(logits, axis=-1))
            ctx = rec(f"{name}.ctx", jnp.einsum("hnm,mhd->nhd", probs, v).reshape(n, d))
            return rec(f"{name}.out", self.out(ctx))

    class Layer(eqx.Module):
        pre_norm: Norm
        mixer: Mixer
        gain_a: jnp.ndarray
        post_norm: Norm
        up: Linear
        down: Linear
        gain_b: jnp.ndarray

        def __call__(self, x, sin, cos, prefix, rec, name):
            import jax

            h = self.mixer(self.pre_norm(x, rec, f"{name}.pre_norm"), sin, cos, prefix, rec,
                           f"{name}.mixer")
            x = rec(f"{name}.mid", x + rec(f"{name}.gain_a", h * self.gain_a))
            up = rec(f"{name}.ffn.up", self.up(self.post_norm(x, rec, f"{name}.post_norm")))
            act = rec(f"{name}.ffn.act", jax.nn.gelu(up, approximate=False))
            down = rec(f"{name}.ffn.down", self.down(act))
            return rec(f"{name}.out", x + rec(f"{name}.gain_b", down * self.gain_b))

    class Backbone(eqx.Module):
        stem_w: jnp.ndarray
        stem_b: jnp.ndarray
        cls: jnp.ndarray
        regs: jnp.ndarray
        periods: jnp.ndarray
        layers: list
        final_norm: Norm

        def __call__(self, image, rec):
            import jax

            d = self.cls.shape[-1]
            grid = jax.lax.conv_general_dilated(image[None], self.stem_w, (16, 16), "VALID")[0]
            grid = rec("backbone.stem", grid + self.stem_b[:, None, None])  # [D, h, w]
            _, h, w = grid.shape
            patches = jnp.transpose(grid, (1, 2, 0)).reshape(h * w, d)
            x = rec("backbone.tokens", jnp.concatenate([self.cls, self.regs, patches]))
            ch = (jnp.arange(h, dtype=jnp.float32) + 0.5) / h
            cw = (jnp.arange(w, dtype=jnp.float32) + 0.5) / w
            coords = jnp.stack(jnp.meshgrid(ch, cw, indexing="ij"), -1).reshape(h * w, 2)
            angles = 2 * math.pi * (2.0 * coords - 1.0)[:, :, None] / self.periods[None, None]
            angles = jnp.tile(angles.reshape(h * w, -1), 2)
            sin = rec("backbone.rotary.sin", jnp.sin(angles).reshape(h, w, -1)).reshape(h * w, -1)
            cos = rec("backbone.rotary.cos", jnp.cos(angles).reshape(h, w, -1)).reshape(h * w, -1)
            prefix = 1 + self.regs.shape[0]
            for i, layer in enumerate(self.layers):
                x = layer(x, sin, cos, prefix, rec, f"backbone.layers[{i}]")
            x = self.final_norm(x, rec, "backbone.final_norm")
            rec("backbone.cls_embedding", x[0])
            rec("backbone.register_outputs", x[1:prefix])
            grid = rec("backbone.patch_grid", x[prefix:].reshape(h, w, d))
            return rec("backbone.mean_patch", grid.reshape(h * w, d).mean(0))

    j = {k: jnp.asarray(v) for k, v in sd.items()}
    d = sd["cls_token"].shape[-1]
    heads = d // (4 * sd["rope_embed.periods"].shape[0])
    depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))

    def lin(p, mask=None):
        bias = j[f"{p}.bias"] * (j[mask] if mask else 1)
        return Linear(j[f"{p}.weight"], bias)

    def norm(p):
        return Norm(j[f"{p}.weight"], j[f"{p}.bias"])

    layers = [Layer(norm(f"blocks.{i}.norm1"),
                    Mixer(lin(f"blocks.{i}.attn.qkv", f"blocks.{i}.attn.qkv.bias_mask"),
                          lin(f"blocks.{i}.attn.proj"), heads),
                    j[f"blocks.{i}.ls1.gamma"], norm(f"blocks.{i}.norm2"),
                    lin(f"blocks.{i}.mlp.fc1"), lin(f"blocks.{i}.mlp.fc2"),
                    j[f"blocks.{i}.ls2.gamma"]) for i in range(depth)]
    return Backbone(j["patch_embed.proj.weight"], j["patch_embed.proj.bias"],
                    j["cls_token"][0] + 0 * j["mask_token"], j["storage_tokens"][0],
                    j["rope_embed.periods"], layers, norm("norm"))


def record(model, image):
    """Runs the model eagerly on image [3, H, W]; returns [(name, numpy array)] in the order the
    model computed them."""
    recorded = []

    def rec(name, x):
        recorded.append((name, np.asarray(x)))
        return x

    model(image, rec)
    return recorded


def canonical_map(depth, h, w):
    """{stage: (recorded name, numpy function giving the canonical layout, batch added)}."""

    def batch(x):
        return x[None]

    table = {
        "patch_embed": ("backbone.stem", lambda x: np.transpose(x, (1, 2, 0)).reshape(1, h * w, -1)),
        "tokens": ("backbone.tokens", batch),
        "rope.sin": ("backbone.rotary.sin", lambda x: x.reshape(h * w, -1)),
        "rope.cos": ("backbone.rotary.cos", lambda x: x.reshape(h * w, -1)),
        "norm": ("backbone.final_norm", batch),
        "cls": ("backbone.cls_embedding", batch),
        "storage": ("backbone.register_outputs", batch),
        "patches": ("backbone.patch_grid", lambda x: x.reshape(1, h * w, -1)),
        "pooled": ("backbone.mean_patch", batch),
    }
    for i in range(depth):
        p, s = f"backbone.layers[{i}]", f"blocks.{i}"
        table.update({
            f"{s}.norm1": (f"{p}.pre_norm", batch),
            f"{s}.attn.qkv": (f"{p}.mixer.qkv", batch),
            f"{s}.attn.q": (f"{p}.mixer.q", lambda x: np.transpose(x, (1, 0, 2))[None]),
            f"{s}.attn.k": (f"{p}.mixer.k_t", lambda x: np.transpose(x, (0, 2, 1))[None]),
            f"{s}.attn.v": (f"{p}.mixer.v", lambda x: np.transpose(x, (1, 0, 2))[None]),
            f"{s}.attn.sdpa": (f"{p}.mixer.ctx", batch),
            f"{s}.attn": (f"{p}.mixer.out", batch),
            f"{s}.ls1": (f"{p}.gain_a", batch),
            f"{s}.residual1": (f"{p}.mid", batch),
            f"{s}.norm2": (f"{p}.post_norm", batch),
            f"{s}.mlp.hidden": (f"{p}.ffn.act", batch),
            f"{s}.mlp": (f"{p}.ffn.down", batch),
            f"{s}.ls2": (f"{p}.gain_b", batch),
            f"{s}.output": (f"{p}.out", batch),
        })
    return table
