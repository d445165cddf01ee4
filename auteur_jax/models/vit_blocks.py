"""Pre-LayerNorm transformer encoder blocks of the CLIP / SigLIP family, stacked.

One block: x + attn(LN1(x)), then x + fc2(act(fc1(LN2(x)))); multi-head attention with
biases on q, k, v and the output. The blocks' weights are stacked on a leading `layers`
axis and run with `lax.scan` (one compiled block whatever the depth; optionally
rematerialised). Used by the vision tower (models/vision.py) and the CLIP text tower
(models/clip_text.py).

Weights (leading [L]): ln{1,2}_{scale,bias} [D]; q, k, v [D, H, Dh] with biases [H, Dh];
o [H, Dh, D] + bias [D]; fc1 [D, M] + [M]; fc2 [M, D] + [D]. Torch Linear [out, in] maps
by a transpose and a head reshape (convert/hf_vision.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from auteur_jax.models.layers import param
from auteur_jax.parallel.rules import constrain

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
  "quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x),  # OpenAI CLIP.
  "gelu": lambda x: jax.nn.gelu(x, approximate=False),
  "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),  # SigLIP.
  "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),  # T5 1.1 / umT5.
  "relu": jax.nn.relu,  # T5 1.0.
  "silu": jax.nn.silu,
}


def activation(name: str) -> Callable[[jax.Array], jax.Array]:
  if name not in ACTIVATIONS:
    raise ValueError(f"activation {name!r} is unknown; expected one of {sorted(ACTIVATIONS)}")
  return ACTIVATIONS[name]


def layer_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, eps: float) -> jax.Array:
  """LayerNorm over the last axis in float32, cast back to x's dtype."""
  h = x.astype(jnp.float32)
  mean = jnp.mean(h, axis=-1, keepdims=True)
  var = jnp.mean(jnp.square(h - mean), axis=-1, keepdims=True)
  h = (h - mean) * jax.lax.rsqrt(var + eps)
  return (h * scale.astype(jnp.float32) + bias.astype(jnp.float32)).astype(x.dtype)


def normal_init(n_in: int, skip: int = 0):
  """Normal init, variance 1 / fan-in; fan-in = prod(shape[skip:skip + n_in])."""

  def init(key, shape, dtype):
    return jax.random.normal(key, shape, dtype) / math.sqrt(math.prod(shape[skip : skip + n_in]))

  return init


def attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None) -> jax.Array:
  """q [B, Lq, H, Dh], k / v [B, Lk, H, Dh], mask bool [B, Lq, Lk] or None -> [B, Lq, H, Dh].

  Two einsums around a float32 softmax (faster than dot_product_attention on CPU).
  Fully masked rows get uniform weights, never NaN.
  """
  q = q * jnp.asarray(1.0 / math.sqrt(q.shape[-1]), q.dtype)
  s = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32)
  if mask is not None:
    s = jnp.where(mask[:, None], s, jnp.finfo(jnp.float32).min)
  p = jax.nn.softmax(s, axis=-1).astype(v.dtype)
  return jnp.einsum("bhqk,bkhd->bqhd", p, v)


class EncoderStack(nnx.Module):
  """`depth` pre-LN blocks of width D, `heads` heads, MLP width `mlp_dim`, stacked."""

  def __init__(
    self,
    width: int,
    depth: int,
    heads: int,
    mlp_dim: int,
    act: str,
    eps: float,
    *,
    remat: bool = False,
    param_dtype="float32",
    rngs: nnx.Rngs,
  ):
    if width % heads:
      raise ValueError(f"width {width} is not divisible by num_heads {heads}")
    activation(act)
    self.act, self.eps, self.remat, self.depth = act, eps, remat, depth
    hd = width // heads
    L, D, H, M = depth, width, heads, mlp_dim
    zeros, ones = nnx.initializers.zeros, nnx.initializers.ones
    p = lambda init, shape, axes: param(rngs, init, (L, *shape), ("layers", *axes), param_dtype)
    self.ln1_scale = p(ones, (D,), ("norm",))
    self.ln1_bias = p(zeros, (D,), ("norm",))
    for n in ("q", "k", "v"):
      setattr(self, n, p(normal_init(1, 1), (D, H, hd), ("embed", "heads", "head_dim")))
      setattr(self, f"{n}_bias", p(zeros, (H, hd), ("heads", "head_dim")))
    self.o = p(normal_init(2, 1), (H, hd, D), ("heads", "head_dim", "embed"))
    self.o_bias = p(zeros, (D,), ("embed",))
    self.ln2_scale = p(ones, (D,), ("norm",))
    self.ln2_bias = p(zeros, (D,), ("norm",))
    self.fc1 = p(normal_init(1, 1), (D, M), ("embed", "mlp"))
    self.fc1_bias = p(zeros, (M,), ("mlp",))
    self.fc2 = p(normal_init(1, 1), (M, D), ("mlp", "embed"))
    self.fc2_bias = p(zeros, (D,), ("embed",))

  _NAMES = (
    "ln1_scale",
    "ln1_bias",
    "q",
    "q_bias",
    "k",
    "k_bias",
    "v",
    "v_bias",
    "o",
    "o_bias",
    "ln2_scale",
    "ln2_bias",
    "fc1",
    "fc1_bias",
    "fc2",
    "fc2_bias",
  )

  def _block(self, x: jax.Array, p: dict[str, jax.Array], mask: jax.Array | None) -> jax.Array:
    dt = x.dtype
    p = {k: v.astype(dt) for k, v in p.items()}
    h = layer_norm(x, p["ln1_scale"], p["ln1_bias"], self.eps)
    q, k, v = (jnp.einsum("bld,dhk->blhk", h, p[n]) + p[f"{n}_bias"] for n in "qkv")
    q = constrain(q, ("batch", "length", "heads", "head_dim"))
    a = attention(q, k, v, mask)
    x = x + jnp.einsum("blhk,hkd->bld", a, p["o"]) + p["o_bias"]
    h = layer_norm(x, p["ln2_scale"], p["ln2_bias"], self.eps)
    h = activation(self.act)(h @ p["fc1"] + p["fc1_bias"])
    h = constrain(h, ("batch", "length", "mlp"))
    return x + h @ p["fc2"] + p["fc2_bias"]

  def __call__(
    self, x: jax.Array, mask: jax.Array | None = None, num_layers: int | None = None
  ) -> jax.Array:
    """x [B, L, D] -> [B, L, D] after the first `num_layers` blocks (default all).

    mask: bool [B, L, L] (True = may attend) or None for full attention.
    """
    n = self.depth if num_layers is None else num_layers
    if not 0 <= n <= self.depth:
      raise ValueError(f"num_layers must be in [0, {self.depth}], got {num_layers}")
    params = {k: getattr(self, k)[...][:n] for k in self._NAMES}
    step = lambda h, p: (self._block(h, p, mask), None)
    if self.remat:
      step = jax.checkpoint(step)
    return jax.lax.scan(step, x, params)[0] if n else x
