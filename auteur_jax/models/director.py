"""The narrative director: an LLM over interleaved text and visual-state tokens.

Sequence for a story (task prompt first, then S steps), chain action->caption->visual:

  [<bos>] task  | <action> a_t </action> <caption> c_t </caption> <img> Q_1..Q_K z_t </img> | ...

Q_1..Q_K are learnable query tokens whose outputs (through `visual_out`, width -> D)
regress z_t; z_t (K vectors of dimension D, through `visual_in`, D -> width) follows as
input, so later steps see the true visual state. All steps train in one pass: query
slots of step t are visible only to the queries of step t, and share z_t's RoPE
positions, so each step's outputs equal a pass over "history + step t up to its
queries" (the paper's last-step-only formulation). The other chains drop the caption
(`action_visual`) or the action (`caption_visual`) segment.

Steps are laid out in fixed-size blocks (padding inside a block is masked out and does
not advance positions), so the layout is static and shapes depend only on the batch's
array shapes: `action_ids` [B, S, La], `caption_ids` [B, S, Lc], `task_ids` [B, Lt],
their masks (right-padded), `step_mask` [B, S] and `visual_embedding` [B, S, K, D].
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from auteur_jax.config_sections import from_section
from auteur_jax.models.layers import param
from auteur_jax.models.llm import LLM, LLMConfig
from auteur_jax.parallel.rules import constrain

CHAINS = {
  "action_caption_visual": ("action", "caption"),
  "caption_visual": ("caption",),
  "action_visual": ("action",),
}
TEXT, QUERY, VISUAL = 0, 1, 2  # Slot kinds of the layout.
BATCH_KEYS = (
  "task_ids",
  "task_mask",
  "action_ids",
  "action_mask",
  "caption_ids",
  "caption_mask",
  "step_mask",
  "visual_embedding",
)


@dataclasses.dataclass(frozen=True)
class MarkupIds:
  """Token ids of the markup (`data.tokenizer.SPECIAL_TOKENS`) and the optional bos."""

  action: int
  action_end: int
  caption: int
  caption_end: int
  img: int
  img_end: int
  bos: int | None = None

  @classmethod
  def from_tokenizer(cls, tok: Any) -> MarkupIds:
    """From a `data.tokenizer.Tokenizer` (anything with special_id(name) and bos_id)."""
    names = ("<action>", "</action>", "<caption>", "</caption>", "<img>", "</img>")
    action, action_end, caption, caption_end, img, img_end = (tok.special_id(n) for n in names)
    return cls(action, action_end, caption, caption_end, img, img_end, bos=tok.bos_id)

  def segment(self, name: str) -> tuple[int, int]:
    """(open, close) ids of segment "action" | "caption"."""
    return (self.action, self.action_end) if name == "action" else (self.caption, self.caption_end)


@dataclasses.dataclass(frozen=True)
class DirectorConfig:
  """`config.model`: the LLM plus the visual head and the loss."""

  llm: LLMConfig
  markup: MarkupIds
  num_queries: int  # K: visual tokens per step.
  visual_dim: int  # D: dimension of each visual token.
  chain: str = "action_caption_visual"
  alpha: float = 1.0  # Weight of (1 - cos(z_hat, z)).
  beta: float = 1.0  # Weight of the mean squared error.
  text_weight: float = 1.0  # Weight of the text cross-entropy.

  def __post_init__(self):
    if self.chain not in CHAINS:
      raise ValueError(f"config.model.chain: expected one of {sorted(CHAINS)}, got {self.chain!r}")
    if self.num_queries < 1 or self.visual_dim < 1:
      raise ValueError(
        f"config.model: num_queries and visual_dim must be >= 1, got "
        f"{self.num_queries}, {self.visual_dim}"
      )
    ids = dataclasses.asdict(self.markup).values()
    bad = [i for i in ids if i is not None and not 0 <= i < self.llm.vocab_size]
    if bad:
      raise ValueError(
        f"config.model.markup: ids {bad} outside the vocabulary (vocab_size {self.llm.vocab_size})"
      )

  @property
  def segments(self) -> tuple[str, ...]:
    return CHAINS[self.chain]

  @classmethod
  def from_config(cls, c: Mapping[str, Any], path: str = "config.model") -> DirectorConfig:
    """From the section `c` at `path` (keys: llm, markup, num_queries, visual_dim, chain,
    alpha, beta, text_weight); unknown keys and bad values raise ConfigError."""
    return from_section(cls, c, path)


@dataclasses.dataclass(frozen=True)
class Layout:
  """Static slot layout of one step block (numpy, identical for every row)."""

  kind: np.ndarray  # int [Lb]: TEXT, QUERY or VISUAL.
  text_slots: np.ndarray  # int [Nt]: block offsets of the slots that predict text.
  query_slots: np.ndarray  # int [K]
  visual_slots: np.ndarray  # int [K]

  @property
  def length(self) -> int:
    return len(self.kind)


def step_layout(segments: tuple[str, ...], lengths: Mapping[str, int], k: int) -> Layout:
  """Layout of `<seg> ids </seg>` per segment, then `<img> Q*k z*k </img>`."""
  kind: list[int] = []
  text: list[int] = []
  for name in segments:
    text.extend(range(len(kind), len(kind) + lengths[name] + 1))  # Opener + content.
    kind += [TEXT] * (lengths[name] + 2)
  kind.append(TEXT)  # <img>
  query = np.arange(len(kind), len(kind) + k)
  kind += [QUERY] * k + [VISUAL] * k + [TEXT]
  return Layout(np.array(kind), np.array(text, np.int64), query, query + k)


class StorySequence(NamedTuple):
  """A batch of stories as the LLM reads them (N = prefix + S * layout length)."""

  ids: jax.Array  # int32 [B, N]: token ids, 0 at the query and visual slots.
  embeddings: jax.Array  # [B, N, width]: token, query and visual-state embeddings.
  positions: jax.Array  # int32 [B, N]: RoPE positions.
  mask: jax.Array  # bool [B, N, N]: True where query i may attend key j.
  prefix: int  # P: [<bos>] + task prompt slots before the first step.


class DirectorOutput(NamedTuple):
  text_logits: jax.Array  # float32 [B, S, Nt, vocab]: predictions at the text slots.
  text_targets: jax.Array  # int32 [B, S, Nt]
  text_mask: jax.Array  # bool [B, S, Nt]: slots that carry a loss.
  visual: jax.Array  # float32 [B, S, K, D]: z_hat from the query slots.
  # The loss reads these (models/cross_entropy.py), so that a jitted training step never
  # builds text_logits (unused outputs are dropped).
  text_nll: jax.Array  # float32 [B, S, Nt]: -log p(target) at the text slots.
  text_top: jax.Array  # bool [B, S, Nt]: whether the target is the top logit.


def check_batch(batch: Mapping[str, jax.Array], cfg: DirectorConfig) -> None:
  """Raises with the key named when a batch lacks an array or has a wrong shape."""
  missing = [k for k in BATCH_KEYS if k not in batch]
  if missing:
    hint = (
      " (set config.data.embedding_shape to load visual embeddings)"
      if "visual_embedding" in missing
      else ""
    )
    raise KeyError(f"director batch lacks {missing}{hint}")
  b, s = batch["step_mask"].shape
  want = {
    "task_ids": (b, None),
    "action_ids": (b, s, None),
    "caption_ids": (b, s, None),
    "visual_embedding": (b, s, cfg.num_queries, cfg.visual_dim),
  }
  for key, shape in want.items():
    got = tuple(batch[key].shape)
    if len(got) != len(shape) or any(w is not None and w != g for w, g in zip(shape, got)):
      raise ValueError(
        f"director batch[{key!r}] has shape {got}, expected "
        f"{tuple('*' if w is None else w for w in shape)}"
      )
    mask = key.replace("_ids", "_mask")
    if key != "visual_embedding" and tuple(batch[mask].shape) != got:
      raise ValueError(
        f"director batch[{mask!r}] has shape {tuple(batch[mask].shape)}, expected {got} (as {key})"
      )


def segment_targets(ids: jax.Array, mask: jax.Array, close: int) -> tuple[jax.Array, jax.Array]:
  """Next-token targets of the slots (opener, ids...) of one right-padded segment.

  ids, mask: [..., n]. Returns (targets [..., n + 1], loss mask [..., n + 1]): the opener
  predicts ids[0], content i predicts ids[i + 1], the last real token predicts `close`.
  """
  full = jnp.concatenate([ids, jnp.full_like(ids[..., :1], close)], axis=-1)
  has_next = jnp.concatenate([mask, jnp.zeros_like(mask[..., :1])], axis=-1)
  targets = jnp.where(has_next, full, close)
  source = jnp.concatenate([jnp.ones_like(mask[..., :1]), mask], axis=-1)
  return targets.astype(jnp.int32), source


class Director(nnx.Module):
  """LLM + K learnable queries + visual projections in (D -> width) and out (width -> D)."""

  def __init__(self, cfg: DirectorConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    w, d, k = cfg.llm.width, cfg.visual_dim, cfg.num_queries
    init = nnx.initializers.normal(cfg.llm.init_std)
    pd = cfg.llm.param_dtype
    self.llm = LLM(cfg.llm, rngs=rngs)
    self.queries = param(rngs, init, (k, w), (None, "embed"), pd)
    self.visual_in = param(rngs, nnx.initializers.lecun_normal(), (d, w), (None, "embed"), pd)
    self.visual_in_bias = param(rngs, nnx.initializers.zeros, (w,), (None,), pd)
    self.visual_out = param(rngs, nnx.initializers.lecun_normal(), (w, d), ("embed", None), pd)
    self.visual_out_bias = param(rngs, nnx.initializers.zeros, (d,), (None,), pd)

  def encode_visual(self, z: jax.Array) -> jax.Array:
    """z [..., K, D] -> input embeddings [..., K, width] (compute dtype)."""
    dt = self.cfg.llm.dtype
    return (z.astype(dt) @ self.visual_in[...].astype(dt)) + self.visual_in_bias[...].astype(dt)

  def decode_visual(self, h: jax.Array) -> jax.Array:
    """Hidden states at query slots [..., K, width] -> z_hat float32 [..., K, D]."""
    out = jnp.einsum(
      "...w,wd->...d", h, self.visual_out[...].astype(h.dtype), preferred_element_type=jnp.float32
    )
    return out + self.visual_out_bias[...].astype(jnp.float32)

  def query_embeddings(self) -> jax.Array:
    """[K, width] in the compute dtype."""
    return self.queries[...].astype(self.cfg.llm.dtype)

  def prefix_tokens(self, task_ids: jax.Array, task_mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """[<bos>] + task prompt: (ids int32 [B, P], valid bool [B, P])."""
    bos = self.cfg.markup.bos
    if bos is None:
      return task_ids.astype(jnp.int32), task_mask.astype(bool)
    b = task_ids.shape[0]
    ids = jnp.concatenate([jnp.full((b, 1), bos, jnp.int32), task_ids.astype(jnp.int32)], 1)
    return ids, jnp.concatenate([jnp.ones((b, 1), bool), task_mask.astype(bool)], 1)

  def layout(self, batch: Mapping[str, jax.Array]) -> Layout:
    lengths = {"action": batch["action_ids"].shape[2], "caption": batch["caption_ids"].shape[2]}
    return step_layout(self.cfg.segments, lengths, self.cfg.num_queries)

  def _step_tokens(self, batch: Mapping[str, jax.Array]):
    """Per-step ids and validity [B, S, Lb] (0 at query / visual slots), and the text
    targets and loss mask [B, S, Nt]."""
    cfg, k = self.cfg, self.cfg.num_queries
    step = batch["step_mask"].astype(bool)[..., None]
    b, s = step.shape[:2]
    full = lambda i: jnp.full((b, s, 1), i, jnp.int32)  # noqa: E731
    ids, valid, targets, tmask = [], [], [], []
    for name in cfg.segments:
      seg_ids = batch[f"{name}_ids"].astype(jnp.int32)
      seg_mask = batch[f"{name}_mask"].astype(bool) & step
      open_, close = cfg.markup.segment(name)
      ids += [full(open_), seg_ids, full(close)]
      valid += [step, seg_mask, step]
      t, m = segment_targets(seg_ids, seg_mask, close)
      targets.append(t)
      tmask.append(m & step)
    ids += [full(cfg.markup.img), jnp.zeros((b, s, 2 * k), jnp.int32), full(cfg.markup.img_end)]
    valid.append(jnp.broadcast_to(step, (b, s, 2 * k + 2)))
    cat = lambda xs: jnp.concatenate(xs, -1)  # noqa: E731
    return cat(ids), cat(valid), cat(targets), cat(tmask)

  def sequence(self, batch: Mapping[str, jax.Array]) -> StorySequence:
    """The whole stories of `batch` as one sequence each: ids, embeddings, RoPE positions
    and the attention mask (see the module docstring)."""
    lay, k = self.layout(batch), self.cfg.num_queries
    q0, v0 = int(lay.query_slots[0]), int(lay.visual_slots[0])
    ids, valid, _, _ = self._step_tokens(batch)
    b, s = ids.shape[:2]
    prefix_ids, prefix_valid = self.prefix_tokens(batch["task_ids"], batch["task_mask"])
    p = prefix_ids.shape[1]

    # Embeddings: tokens, with the query and visual slots replaced.
    x = self.llm.embed_tokens(ids.reshape(b, -1)).reshape(b, s, lay.length, -1)
    queries = jnp.broadcast_to(self.query_embeddings(), (b, s, k, x.shape[-1]))
    z_in = self.encode_visual(batch["visual_embedding"])
    x = jnp.concatenate([x[:, :, :q0], queries, z_in, x[:, :, v0 + k :]], axis=2)
    x = jnp.concatenate([self.llm.embed_tokens(prefix_ids), x.reshape(b, -1, x.shape[-1])], 1)

    # Positions: queries do not advance them and take the positions of z_t.
    is_query = jnp.asarray(lay.kind == QUERY)
    counted = jnp.concatenate([prefix_valid, (valid & ~is_query).reshape(b, -1)], 1)
    pos = jnp.maximum(jnp.cumsum(counted.astype(jnp.int32), 1) - 1, 0)
    blocks = pos[:, p:].reshape(b, s, lay.length)
    blocks = blocks.at[:, :, q0 : q0 + k].set(blocks[:, :, v0 : v0 + k])
    pos = jnp.concatenate([pos[:, :p], blocks.reshape(b, -1)], 1)

    # Mask: causal, valid keys, and query slots hidden from all but their own block.
    qblock_np = np.concatenate(
      [np.zeros(p, np.int32), ((np.arange(s)[:, None] + 1) * (lay.kind == QUERY)).reshape(-1)]
    )
    qblock, n = jnp.asarray(qblock_np), len(qblock_np)
    causal = jnp.arange(n)[:, None] >= jnp.arange(n)[None, :]
    visible = causal & ((qblock[None, :] == 0) | (qblock[None, :] == qblock[:, None]))
    keys = jnp.concatenate([prefix_valid, valid.reshape(b, -1)], 1)
    mask = constrain(visible[None] & keys[:, None, :], ("batch", "length", None))
    all_ids = jnp.concatenate([prefix_ids, ids.reshape(b, -1)], 1)
    return StorySequence(all_ids, x, pos, mask, p)

  def __call__(self, batch: Mapping[str, jax.Array]) -> DirectorOutput:
    """One pass over every step of the stories in `batch` (see the module docstring)."""
    check_batch(batch, self.cfg)
    lay, k = self.layout(batch), self.cfg.num_queries
    q0 = int(lay.query_slots[0])
    _, _, targets, tmask = self._step_tokens(batch)
    b, s = targets.shape[:2]
    seq = self.sequence(batch)
    h, _ = self.llm(seq.embeddings, seq.positions, seq.mask)
    h = h[:, seq.prefix :].reshape(b, s, lay.length, -1)
    text = h[:, :, lay.text_slots]
    nll, top = self.llm.token_nll(text, targets)
    return DirectorOutput(
      self.llm.logits(text), targets, tmask, self.decode_visual(h[:, :, q0 : q0 + k]), nll, top
    )

  def loss(self, batch: Mapping[str, jax.Array]) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Scalar loss and its parts for `batch` (see `director_loss`)."""
    return director_loss(self(batch), batch, self.cfg)


def director_loss(
  out: DirectorOutput, batch: Mapping[str, jax.Array], cfg: DirectorConfig
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """text_weight * CE(text) + alpha * (1 - cos) + beta * MSE, each a masked mean.

  CE is averaged over the text tokens that carry a loss, (1 - cos) over the K tokens of
  valid steps, MSE over their K * D elements.
  """
  tm = out.text_mask.astype(jnp.float32)
  n_text = jnp.maximum(tm.sum(), 1.0)
  ce = (out.text_nll * tm).sum() / n_text
  acc = (out.text_top * tm).sum() / n_text
  z = batch["visual_embedding"].astype(jnp.float32)
  zh = out.visual
  step = batch["step_mask"].astype(jnp.float32)[..., None]  # [B, S, 1]
  n_tok = jnp.maximum(step.sum() * cfg.num_queries, 1.0)
  eps = 1e-8
  cos = (zh * z).sum(-1) / (jnp.linalg.norm(zh, axis=-1) * jnp.linalg.norm(z, axis=-1) + eps)
  cos_loss = ((1.0 - cos) * step).sum() / n_tok
  mse = (jnp.square(zh - z).mean(-1) * step).sum() / n_tok
  loss = cfg.text_weight * ce + cfg.alpha * cos_loss + cfg.beta * mse
  return loss, {
    "loss": loss,
    "text_ce": ce,
    "text_acc": acc,
    "visual_cos": cos_loss,
    "visual_mse": mse,
    "text_tokens": tm.sum(),
  }
