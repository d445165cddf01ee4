"""The DiT as the toy kitchen trains and samples it: VideoDiT plus its caption embedding."""

from __future__ import annotations

import dataclasses

from flax import nnx

from auteur_jax.models.dit import DiTConfig, VideoDiT

TEXT_SOURCES = ("ids", "embedding")


@dataclasses.dataclass(frozen=True)
class DiTTextConfig:
  """`config.text` of a DiT config: the caption condition. "ids": caption ids through a
  table of vocab_size rows trained with the DiT; "embedding": stored text embeddings of
  a frozen encoder (vocab_size 0: no table)."""

  source: str
  vocab_size: int

  def validate(self) -> None:
    if self.source not in TEXT_SOURCES:
      raise ValueError(f"source must be 'ids' or 'embedding', got {self.source!r}")
    if (self.source == "ids") != (self.vocab_size > 0):
      raise ValueError(
        f"vocab_size: source {self.source!r} needs "
        f"{'>= 1 rows' if self.source == 'ids' else '0 (no table)'}, "
        f"got {self.vocab_size}"
      )


class TextConditionedDiT(nnx.Module):
  """VideoDiT plus, for `text.source = "ids"`, a token embedding table (vocab, text_dim)."""

  def __init__(self, cfg: DiTConfig, vocab_size: int, *, rngs: nnx.Rngs):
    self.dit = VideoDiT(cfg, rngs=rngs)
    self.text_embed = nnx.data(
      None
      if not vocab_size
      else nnx.Embed(
        vocab_size,
        cfg.text_dim,
        rngs=rngs,
        embedding_init=nnx.with_partitioning(nnx.initializers.normal(0.02), ("vocab", "embed")),
      )
    )
