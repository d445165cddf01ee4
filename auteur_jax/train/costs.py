"""Analytic costs of one train step: parameters, model FLOPs and collective traffic.

FLOPs count 2 per multiply-add of every matmul and attention einsum the model runs
(attention over all keys: the director's causal mask and padding do not skip work). A
train step is 3 forwards (forward + backward); rematerialisation re-runs part of the
scanned layers' forward on top: REMAT_RECOMPUTE gives, per policy, the recomputed
fraction of the layers' dense matmuls and of their attention einsums. `collective_bytes`
estimates what each device sends per step, for the roofline step time of dry_run.py.
"""

from __future__ import annotations

import dataclasses
import math

import ml_collections

from auteur_jax.models.director import DirectorConfig, step_layout
from auteur_jax.train.batch_specs import VAE_SPATIAL, VAE_TEMPORAL, frame_hw

# policy -> (dense matmul fraction, attention einsum fraction) of the layers' forward
# that the backward recomputes. "dots_no_batch" keeps weight matmuls (no batch dims) but
# not the attention einsums (batched over batch and heads); "names" (DiT) keeps the
# tagged projections and the attention outputs, so only the score matmuls re-run.
REMAT_RECOMPUTE = {
  "none": (0.0, 0.0),
  "full": (1.0, 1.0),
  "dots": (0.0, 0.0),
  "dots_no_batch": (0.0, 1.0),
  "names": (0.0, 0.5),
}


@dataclasses.dataclass(frozen=True)
class Costs:
  """Per global batch. FLOPs are forward only; `tokens` run through every layer."""

  params: int
  layers: int
  width: int
  tokens: int  # Sequence positions per step over the whole batch.
  sublayers: int  # Residual branches per layer (tensor-parallel all-reduces per forward).
  fwd_layer_dense: float  # Matmuls inside the scanned layers.
  fwd_layer_attn: float  # Attention einsums inside the scanned layers.
  fwd_other: float  # Everything outside the layer scan (embeddings, heads, context K/V).
  bwd_extra: float = 0.0  # What the backward adds beyond two forwards (blockwise scores).

  @property
  def model_flops(self) -> float:
    """Forward + backward: 3 forwards."""
    return 3.0 * (self.fwd_layer_dense + self.fwd_layer_attn + self.fwd_other)

  def executed_flops(self, remat: str) -> float:
    """model_flops plus what `remat` recomputes."""
    dense, attn = REMAT_RECOMPUTE[remat]
    return (
      self.model_flops + dense * self.fwd_layer_dense + attn * self.fwd_layer_attn + self.bwd_extra
    )


def remat_key(config: ml_collections.ConfigDict) -> tuple[ml_collections.ConfigDict, str] | None:
  """(section, key) of the config's remat policy, or None when the task has none."""
  if config.task == "director":
    return config.model.llm, "remat"
  if config.task == "dit":
    return config.model, "remat"
  return None


def remat_policies(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The remat policies the task's model accepts."""
  if config.task == "director":
    from auteur_jax.models.llm import REMAT_POLICIES
  elif config.task == "dit":
    from auteur_jax.models.dit import REMAT_POLICIES
  else:
    return ()
  return tuple(REMAT_POLICIES)


def director_costs(config: ml_collections.ConfigDict) -> Costs:
  cfg = DirectorConfig.from_config(config.model.to_dict())
  m, d = cfg.llm, config.data
  w, hd, h, kv, f, v = m.width, m.head_dim, m.num_heads, m.num_kv_heads, m.mlp_dim, m.vocab_size
  k, dv = cfg.num_queries, cfg.visual_dim
  per_layer = 2 * w + w * h * hd + 2 * w * kv * hd + h * hd * w + 3 * w * f
  per_layer += (h + 2 * kv) * hd if m.qkv_bias else 0
  params = v * w * (1 if m.tie_embeddings else 2) + w + m.num_layers * per_layer
  params += k * w + dv * w + w + w * dv + dv
  lay = step_layout(
    cfg.segments, {"action": d.max_action_tokens, "caption": d.max_caption_tokens}, k
  )
  seq = 1 + d.max_action_tokens + d.max_steps * lay.length
  b, s = d.batch_size, d.max_steps
  dense = 2.0 * (w * h * hd + 2 * w * kv * hd + h * hd * w + 3 * w * f)
  attn = 2.0 * 2 * seq * h * hd
  other = 2.0 * w * v * s * len(lay.text_slots) + 2 * 2.0 * dv * w * s * k
  return Costs(
    params,
    m.num_layers,
    w,
    b * seq,
    2,
    b * seq * m.num_layers * dense,
    b * seq * m.num_layers * attn,
    b * other,
  )


def dit_costs(config: ml_collections.ConfigDict) -> Costs:
  from auteur_jax.models.dit import DiTConfig
  from auteur_jax.train.batch_specs import clip_batch

  cfg = DiTConfig.from_dict(config.model.to_dict())
  d, ff, dt, dv, fq, nl = (
    cfg.width,
    cfg.ffn_dim,
    cfg.text_dim,
    cfg.visual_dim,
    cfg.freq_dim,
    cfg.num_layers,
  )
  patch = math.prod(cfg.patch_size)
  pin, pout = patch * cfg.in_channels, patch * cfg.out_channels
  params = (pin * d + d) + (fq * d + d) + (d * d + d) + (6 * d * d + 6 * d)  # patch, time
  params += (dt * d + d) + (d * d + d) + 2 * d + (d * pout + pout)  # text, head
  layer = 6 * d + (3 * d * d + 3 * d) + 2 * d + (d * d + d)  # modulation, self-attention
  layer += (d * d + d) + (2 * d * d + 2 * d) + 2 * d + (d * d + d)  # cross-attention
  layer += 2 * d if cfg.cross_attn_norm else 0
  layer += (d * ff + ff) + (ff * d + d)
  if dv:
    params += 2 * dv + (dv * dv + dv) + (dv * d + d) + 2 * d + cfg.visual_pos_len * dv
    layer += 2 * d * d + 2 * d + d
  params += nl * layer
  text = config.get("text")
  if text is not None and text.source == "ids":  # The caption embedding table.
    params += text.vocab_size * dt

  data = config.data
  batch = clip_batch(config)
  b = data.batch_size
  if "latents" not in batch:
    t_lat = 1 + (data.num_frames - 1) // VAE_TEMPORAL
    h, w = frame_hw(data)
    grid = (t_lat, h // VAE_SPATIAL, w // VAE_SPATIAL)
  else:
    grid = batch["latents"].shape[1:4]
  n = math.prod(g // p for g, p in zip(grid, cfg.patch_size))
  lt = data.max_text_len
  kv = batch["visual_embedding"].shape[1] if dv and "visual_embedding" in batch else 0
  dense = n * 2.0 * (6 * d * d + 2 * d * ff)  # qkv, self out, cross q, cross out, FFN.
  attn = 2.0 * 2 * n * (n + lt + kv) * d
  other = 2.0 * n * (pin + pout) * d + 2.0 * lt * (dt * d + d * d)
  other += 2.0 * kv * (dv * dv + dv * d) + nl * 2.0 * (lt + kv) * 2 * d * d
  other += 2.0 * (fq * d + d * d + 6 * d * d)
  # Blockwise self-attention recomputes its scores (q k^T) in the backward.
  extra = 2.0 * n * n * d if cfg.attention == "blockwise" else 0.0
  return Costs(params, nl, d, b * n, 3, b * nl * dense, b * nl * attn, b * other, b * nl * extra)


def model_costs(config: ml_collections.ConfigDict) -> Costs | None:
  """Analytic costs of `config.task`, or None for a task without a formula here."""
  if config.task == "director":
    return director_costs(config)
  if config.task == "dit":
    return dit_costs(config)
  return None


def collective_bytes(
  costs: Costs,
  sizes: dict[str, int],
  param_bytes: int,
  act_bytes: int,
  remat: str,
  context_parallel: str = "xla",
) -> dict[str, float]:
  """Bytes each device sends per step, per mesh axis, for the trainer's layout.

  fsdp: params all-gathered for the forward and again for the backward, gradients
  reduce-scattered, over fsdp x context (the weights' split); data: the gradient shards
  all-reduced; tensor: each residual branch's activations all-reduced once forward, once
  backward, again when fully rematerialised. A ring moves (n - 1) / n of the data per
  device (twice for an all-reduce).
  context (self-attention over a sequence split c ways, per layer, in units of a device's
  own [tokens, width / tensor] block): "xla" gathers every other device's keys and values
  forward and sends their gradients back, 2 (c - 1) blocks per pass; "ring" passes the
  keys and values round forward (2 (c - 1)), and backward them with their gradient sums
  plus one hop home (4 (c - 1) + 2); "all_to_all" moves (c - 1) / c of q, k, v and the
  output, 4 (c - 1) / c blocks per pass.
  """
  f, t, dp = sizes.get("fsdp", 1), sizes.get("tensor", 1), sizes.get("data", 1)
  ctx = sizes.get("context", 1)
  p = costs.params * param_bytes
  w = f * ctx  # The weights' split.
  out = {"fsdp": 3.0 * p / t * (w - 1) / w, "data": 2.0 * p / (w * t) * (dp - 1) / dp}
  passes = 2 + (1 if REMAT_RECOMPUTE.get(remat, (0, 0))[0] else 0)
  tokens = costs.tokens / (dp * f * ctx)
  out["tensor"] = (
    costs.layers * costs.sublayers * passes * 2.0 * (t - 1) / t * tokens * costs.width * act_bytes
  )
  if ctx > 1:
    if context_parallel == "all_to_all":
      blocks = passes * 4.0 * (ctx - 1) / ctx
    elif context_parallel == "ring":
      blocks = (passes - 1) * 2.0 * (ctx - 1) + 4.0 * (ctx - 1) + 2.0
    else:
      blocks = passes * 2.0 * (ctx - 1)
    out["context"] = costs.layers * blocks * tokens * costs.width / t * act_bytes
  return out
