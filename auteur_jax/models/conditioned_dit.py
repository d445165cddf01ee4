"""The DiT as the toy kitchen trains and samples it: VideoDiT plus its caption embedding."""

from __future__ import annotations

from flax import nnx

from auteur_jax.models.dit import DiTConfig, VideoDiT


class TextConditionedDiT(nnx.Module):
  """VideoDiT plus, for `text.source = "ids"`, a token embedding table (vocab, text_dim)."""

  def __init__(self, cfg: DiTConfig, vocab_size: int, *, rngs: nnx.Rngs):
    self.dit = VideoDiT(cfg, rngs=rngs)
    self.text_embed = nnx.data(None if not vocab_size else nnx.Embed(
        vocab_size, cfg.text_dim, rngs=rngs,
        embedding_init=nnx.with_partitioning(nnx.initializers.normal(0.02), ("vocab", "embed"))))
