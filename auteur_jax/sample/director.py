"""Decoding with a fixed-size KV cache: plain LM generation and director stories.

`LMSampler` continues prompts token by token (the decode benchmark uses it);
`DirectorSampler` writes stories: after the task prompt, for each step it decodes the
action text, then the caption text (greedy or temperature + top-p), then runs the K
query tokens once to regress z_t, feeds z_t back in the queries' slots and positions,
and goes on. Both share `_text_loop`: one decode step (embed a token, write its keys
at the next cache slot, attend over the whole fixed-size cache, sample) whose shapes
never change, run either as a `lax.while_loop` inside one jitted call (loop="device")
or as a jitted step called once per token from Python (loop="host"). Measured here: on
the toy director the device loop writes a story in half the host loop's time (per-token
dispatch dominates a 1M-parameter model); on a 60M-parameter Llama the two are within
noise of each other (benchmarks/director_decode.py prints both). "device" is the default.

The cache has one buffer per layer and `T` slots, sized for the longest possible
output. All rows advance in lockstep: a row that finished its segment feeds masked
tokens (invalid slots that do not advance its positions) until the others finish.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from auteur_jax.config_sections import from_section
from auteur_jax.models.director import Director
from auteur_jax.models.layers import KVCache
from auteur_jax.models.llm import LLM

LOOPS = ("device", "host")


@dataclasses.dataclass(frozen=True)
class Sampling:
  """Text sampling: temperature 0 is greedy; top_p < 1 keeps the smallest set of tokens
  whose probability reaches top_p. Lengths are the most text tokens per segment."""

  temperature: float = 0.0
  top_p: float = 1.0
  max_action_tokens: int = 32
  max_caption_tokens: int = 128

  def __post_init__(self):
    if self.temperature < 0 or not 0 < self.top_p <= 1:
      raise ValueError(
        f"sampling: temperature must be >= 0 and 0 < top_p <= 1, got "
        f"{self.temperature}, {self.top_p}"
      )

  @classmethod
  def from_config(cls, c, path: str = "config.sample") -> Sampling:
    """From a director config's `sample` section at `path` (see DirectorSampleConfig)."""
    return from_section(DirectorSampleConfig, c, path).sampling


@dataclasses.dataclass(frozen=True)
class DirectorSampleConfig:
  """`config.sample` of a director config: story steps when a request gives none, and
  the text sampling (Sampling's fields)."""

  num_steps: int
  temperature: float
  top_p: float
  max_action_tokens: int
  max_caption_tokens: int

  def validate(self) -> None:
    if self.num_steps < 1:
      raise ValueError(f"num_steps must be >= 1, got {self.num_steps}")
    _ = self.sampling  # Runs Sampling's checks (temperature, top_p).

  @property
  def sampling(self) -> Sampling:
    return Sampling(self.temperature, self.top_p, self.max_action_tokens, self.max_caption_tokens)


class DecodeState(NamedTuple):
  caches: tuple[KVCache, ...]  # Per layer, T slots each.
  valid: jax.Array  # bool [B, T]: slots holding a token of the row.
  pos: jax.Array  # int32 [B]: RoPE position of the row's next token.
  slot: jax.Array  # int32 []: next free slot (shared by the rows).


class TextCarry(NamedTuple):
  i: jax.Array  # Tokens sampled so far in this segment.
  state: DecodeState
  logits: jax.Array  # float32 [B, vocab] for the next token.
  done: jax.Array  # bool [B]
  ids: jax.Array  # int32 [B, N + 1]: sampled tokens (close excluded).
  mask: jax.Array  # bool [B, N + 1]


class StoryOutput(NamedTuple):
  action_ids: jax.Array  # int32 [B, S, La] (+ action_mask), empty for caption_visual.
  action_mask: jax.Array
  caption_ids: jax.Array  # int32 [B, S, Lc] (+ caption_mask), empty for action_visual.
  caption_mask: jax.Array
  visual_embedding: jax.Array  # float32 [B, S, K, D]


def init_state(llm: LLM, batch: int, length: int, cache_dtype: str | None = None) -> DecodeState:
  return DecodeState(
    llm.init_caches(batch, length, cache_dtype),
    jnp.zeros((batch, length), bool),
    jnp.zeros((batch,), jnp.int32),
    jnp.zeros((), jnp.int32),
  )


def feed(
  llm: LLM, layers, state: DecodeState, x: jax.Array, valid: jax.Array, commit: bool = True
) -> tuple[DecodeState, jax.Array]:
  """Writes a chunk x [B, L, width] at the next L slots; returns (state, hidden [B, L, W]).

  Invalid chunk tokens (valid [B, L] False) are hidden from every later token and take
  no position. With commit=False the slots stay free (the next chunk overwrites them)
  and positions do not advance: how the query tokens run.
  """
  length = x.shape[1]
  t = state.valid.shape[1]
  positions = state.pos[:, None] + jnp.cumsum(valid.astype(jnp.int32), 1) - 1
  slot_valid = jax.lax.dynamic_update_slice(state.valid, valid, (0, state.slot))
  here = state.slot + jnp.arange(length)
  mask = slot_valid[:, None, :] & (jnp.arange(t)[None, None, :] <= here[None, :, None])
  h, caches = llm.decode(x, jnp.maximum(positions, 0), mask, state.caches, state.slot, layers)
  if not commit:
    return state._replace(caches=caches), h
  return DecodeState(
    caches, slot_valid, state.pos + valid.sum(1, dtype=jnp.int32), state.slot + length
  ), h


def sample_token(
  logits: jax.Array, key: jax.Array, sampling: Sampling, banned: tuple[int, ...] = ()
) -> jax.Array:
  """logits [B, vocab] -> int32 [B]."""
  if banned:
    logits = logits.at[:, jnp.asarray(banned)].set(-jnp.inf)
  if sampling.temperature == 0:
    return jnp.argmax(logits, -1).astype(jnp.int32)
  logits = logits / sampling.temperature
  if sampling.top_p < 1:
    ordered = jnp.sort(logits, -1)[:, ::-1]
    probs = jax.nn.softmax(ordered, -1)
    before = jnp.cumsum(probs, -1) - probs  # Mass of the tokens ranked above.
    keep = before < sampling.top_p
    threshold = jnp.min(jnp.where(keep, ordered, jnp.inf), -1, keepdims=True)
    logits = jnp.where(logits >= threshold, logits, -jnp.inf)
  return jax.random.categorical(key, logits, -1).astype(jnp.int32)


def text_step(
  llm: LLM,
  layers,
  carry: TextCarry,
  key: jax.Array,
  sampling: Sampling,
  close: int | None,
  max_len: int,
  banned: tuple[int, ...],
) -> TextCarry:
  """Samples one token per row, feeds it, returns the carry with the next logits.

  With `close`, token max_len is forced to close; close ends the row's segment (it is
  fed, not recorded). Without, every token is recorded and nothing ends early.
  """
  tok = sample_token(carry.logits, jax.random.fold_in(key, carry.i), sampling, banned)
  active = ~carry.done
  if close is not None:
    tok = jnp.where(carry.i >= max_len, close, tok)
    record = active & (tok != close)
  else:
    record = active
  at = (jnp.zeros((), jnp.int32), carry.i)
  ids = jax.lax.dynamic_update_slice(carry.ids, jnp.where(record, tok, 0)[:, None], at)
  mask = jax.lax.dynamic_update_slice(carry.mask, record[:, None], at)
  state, h = feed(llm, layers, carry.state, llm.embed_tokens(tok[:, None]), active[:, None])
  done = carry.done | (tok == close) if close is not None else carry.done
  return TextCarry(carry.i + 1, state, llm.logits(h[:, 0]), done, ids, mask)


def text_start(state: DecodeState, logits: jax.Array, max_len: int) -> TextCarry:
  b = logits.shape[0]
  return TextCarry(
    jnp.zeros((), jnp.int32),
    state,
    logits,
    jnp.zeros((b,), bool),
    jnp.zeros((b, max_len + 1), jnp.int32),
    jnp.zeros((b, max_len + 1), bool),
  )


def text_steps(close: int | None, max_len: int) -> int:
  """Iterations of a segment: up to max_len tokens, plus the close token if any."""
  return max_len + (close is not None)


def _text_loop(
  llm: LLM,
  layers,
  carry: TextCarry,
  key: jax.Array,
  sampling: Sampling,
  close: int | None,
  max_len: int,
  banned: tuple[int, ...],
) -> TextCarry:
  """The device loop: text_step until every row is done or the length runs out."""
  steps = text_steps(close, max_len)

  def cond(c: TextCarry):
    return (c.i < steps) & ~jnp.all(c.done)

  return jax.lax.while_loop(
    cond, lambda c: text_step(llm, layers, c, key, sampling, close, max_len, banned), carry
  )


class _Compiled:
  """The split model, its per-layer weights and jitted pure functions of them.

  A sampler snapshots the model's weights when it is made: later updates to the module
  are not seen. The per-layer copies of the stacked layer weights (`LLM.unstack_layers`)
  are made once, on the first generation, and kept. cache_dtype: the KV cache's (None:
  the compute dtype); "bfloat16" halves the bytes a decode step reads from the cache.
  """

  def __init__(self, model: Director | LLM, loop: str, cache_dtype: str | None):
    if loop not in LOOPS:
      raise ValueError(f"loop must be one of {LOOPS}, got {loop!r}")
    if cache_dtype not in (None, "float32", "bfloat16"):
      raise ValueError(
        f"cache_dtype must be None (the compute dtype), 'float32' or "
        f"'bfloat16', got {cache_dtype!r}"
      )
    self.loop, self.cache_dtype = loop, cache_dtype
    self.graphdef, self.params = nnx.split(model)
    # A stacked module's graph is a single block's: the leading axis is only in values.
    self.layer_graphdef = nnx.graphdef(self._llm(model).layers)
    self._unstack = jax.jit(
      lambda p: [nnx.state(b) for b in self._llm(nnx.merge(self.graphdef, p)).unstack_layers()]
    )
    self._layer_states: list[nnx.State] | None = None

  @staticmethod
  def _llm(model: Director | LLM) -> LLM:
    return model.llm if isinstance(model, Director) else model

  def layer_states(self) -> list[nnx.State]:
    """Per-layer weight states, sliced from the stacked ones once and kept."""
    if self._layer_states is None:
      self._layer_states = self._unstack(self.params)
    return self._layer_states

  def merge(self, params, layer_states):
    """(model, its LLM, per-layer Blocks) inside a traced function."""
    model = nnx.merge(self.graphdef, params)
    return model, self._llm(model), [nnx.merge(self.layer_graphdef, s) for s in layer_states]


class LMSampler(_Compiled):
  """Generation from an LLM: prompt [B, P] (right-padded) -> max_new tokens per row.

  `generate` = `prefill` (one jitted pass over the prompt) + `decode` (the token loop:
  one jitted while loop, or a jitted step per token with loop="host").
  """

  def __init__(
    self,
    llm: LLM,
    sampling: Sampling = Sampling(),
    loop: str = "device",
    stop_id: int | None = None,
    cache_dtype: str | None = None,
  ):
    super().__init__(llm, loop, cache_dtype)
    self.sampling, self.stop_id = sampling, stop_id
    self._prefill = jax.jit(self._prefill_fn, static_argnums=(4,))
    self._loop = jax.jit(self._loop_fn, static_argnums=(4,), donate_argnums=(2,))
    self._step = jax.jit(self._step_fn, static_argnums=(4,), donate_argnums=(2,))

  def _prefill_fn(self, params, layer_states, ids, mask, max_new):
    _, llm, layers = self.merge(params, layer_states)
    state = init_state(
      llm, ids.shape[0], ids.shape[1] + text_steps(self.stop_id, max_new), self.cache_dtype
    )
    state, h = feed(llm, layers, state, llm.embed_tokens(ids), mask.astype(bool))
    last = jnp.maximum(mask.sum(1) - 1, 0)
    logits = llm.logits(jnp.take_along_axis(h, last[:, None, None], 1)[:, 0])
    return text_start(state, logits, max_new)

  def _step_fn(self, params, layer_states, carry, key, max_new):
    _, llm, layers = self.merge(params, layer_states)
    return text_step(llm, layers, carry, key, self.sampling, self.stop_id, max_new, ())

  def _loop_fn(self, params, layer_states, carry, key, max_new):
    _, llm, layers = self.merge(params, layer_states)
    return _text_loop(llm, layers, carry, key, self.sampling, self.stop_id, max_new, ())

  def prefill(self, ids: jax.Array, mask: jax.Array, max_new: int) -> TextCarry:
    """The prompt pass: a cache of P + max_new (+1 with a stop id) slots, first logits."""
    ids, mask = jnp.asarray(ids, jnp.int32), jnp.asarray(mask, bool)
    return self._prefill(self.params, self.layer_states(), ids, mask, max_new)

  def decode(
    self, carry: TextCarry, max_new: int, key: jax.Array | None = None
  ) -> tuple[jax.Array, jax.Array]:
    """Token loop from `prefill`'s carry (consumed) -> (ids [B, max_new], mask)."""
    key = jax.random.key(0) if key is None else key
    if self.loop == "device":
      carry = self._loop(self.params, self.layer_states(), carry, key, max_new)
    else:
      for i in range(text_steps(self.stop_id, max_new)):
        carry = self._step(self.params, self.layer_states(), carry, key, max_new)
        if self.stop_id is not None and i % 4 == 3 and bool(jnp.all(carry.done)):
          break
    return carry.ids[:, :max_new], carry.mask[:, :max_new]

  def generate(
    self, ids: jax.Array, mask: jax.Array, max_new: int, key: jax.Array | None = None
  ) -> tuple[jax.Array, jax.Array]:
    """(ids int32 [B, max_new], mask bool [B, max_new]: False after the stop token)."""
    return self.decode(self.prefill(ids, mask, max_new), max_new, key)


class DirectorSampler(_Compiled):
  """Story generation with a Director (see the module docstring)."""

  def __init__(
    self,
    director: Director,
    sampling: Sampling = Sampling(),
    loop: str = "device",
    cache_dtype: str | None = None,
  ):
    super().__init__(director, loop, cache_dtype)
    self.cfg, self.sampling = director.cfg, sampling
    m = self.cfg.markup
    markup = (m.action, m.action_end, m.caption, m.caption_end, m.img, m.img_end)
    # Text never contains markup other than its own close (nor bos).
    self._banned = {
      name: tuple(i for i in markup + (m.bos,) if i is not None and i != m.segment(name)[1])
      for name in ("action", "caption")
    }
    self._generate = jax.jit(self._device, static_argnums=(4,))
    self._prefill = jax.jit(self._prefill_fn, static_argnums=(4,))
    self._open = jax.jit(self._open_fn, static_argnums=(3,), donate_argnums=(2,))
    self._token = jax.jit(self._token_fn, static_argnums=(4,), donate_argnums=(2,))
    self._visual = jax.jit(self._visual_fn, donate_argnums=(2,))

  def max_len(self, name: str) -> int:
    s = self.sampling
    return s.max_action_tokens if name == "action" else s.max_caption_tokens

  def cache_length(self, prefix: int, num_steps: int) -> int:
    """Slots for the prompt and num_steps steps of the longest possible text."""
    per_step = sum(self.max_len(n) + 2 for n in self.cfg.segments) + self.cfg.num_queries + 2
    return prefix + num_steps * per_step

  # Pieces, each a pure function of (params, unstacked layer states, ...).
  def _prefill_fn(self, params, layer_states, task_ids, task_mask, num_steps):
    model, llm, layers = self.merge(params, layer_states)
    ids, valid = model.prefix_tokens(task_ids, task_mask)
    state = init_state(
      llm, ids.shape[0], self.cache_length(ids.shape[1], num_steps), self.cache_dtype
    )
    return feed(llm, layers, state, llm.embed_tokens(ids), valid)[0]

  def _open_fn(self, params, layer_states, state, name):
    _, llm, layers = self.merge(params, layer_states)
    tok = jnp.full((state.pos.shape[0], 1), self.cfg.markup.segment(name)[0], jnp.int32)
    state, h = feed(llm, layers, state, llm.embed_tokens(tok), jnp.ones(tok.shape, bool))
    return text_start(state, llm.logits(h[:, 0]), self.max_len(name))

  def _token_fn(self, params, layer_states, carry, key, name):
    _, llm, layers = self.merge(params, layer_states)
    return text_step(
      llm,
      layers,
      carry,
      key,
      self.sampling,
      self.cfg.markup.segment(name)[1],
      self.max_len(name),
      self._banned[name],
    )

  def _visual_fn(self, params, layer_states, state):
    """<img>, one pass of the K queries -> z_t, z_t written in their slots, </img>."""
    model, llm, layers = self.merge(params, layer_states)
    b, k, m = state.pos.shape[0], self.cfg.num_queries, self.cfg.markup
    ones = lambda n: jnp.ones((b, n), bool)  # noqa: E731
    token = lambda i: llm.embed_tokens(jnp.full((b, 1), i, jnp.int32))  # noqa: E731
    state, _ = feed(llm, layers, state, token(m.img), ones(1))
    queries = jnp.broadcast_to(model.query_embeddings(), (b, k, llm.cfg.width))
    state, h = feed(llm, layers, state, queries, ones(k), commit=False)
    z = model.decode_visual(h)
    state, _ = feed(llm, layers, state, model.encode_visual(z), ones(k))
    state, _ = feed(llm, layers, state, token(m.img_end), ones(1))
    return state, z

  def _empty(self, b: int, num_steps: int) -> dict[str, tuple[jax.Array, jax.Array]]:
    out = {}
    for name in ("action", "caption"):
      n = self.max_len(name) if name in self.cfg.segments else 0
      out[name] = (jnp.zeros((b, num_steps, n), jnp.int32), jnp.zeros((b, num_steps, n), bool))
    return out

  def _device(self, params, layer_states, task_ids, task_mask, num_steps, key):
    _, llm, layers = self.merge(params, layer_states)
    b, k, d = task_ids.shape[0], self.cfg.num_queries, self.cfg.visual_dim
    state = self._prefill_fn(params, layer_states, task_ids, task_mask, num_steps)

    def step(t, c):
      state, text, z_all = c
      text = dict(text)
      for s, name in enumerate(self.cfg.segments):
        carry = self._open_fn(params, layer_states, state, name)
        carry = _text_loop(
          llm,
          layers,
          carry,
          jax.random.fold_in(key, 2 * t + s),
          self.sampling,
          self.cfg.markup.segment(name)[1],
          self.max_len(name),
          self._banned[name],
        )
        state = carry.state
        n = self.max_len(name)
        text[name] = tuple(
          jax.lax.dynamic_update_slice(buf, new[:, None, :n], (0, t, 0))
          for buf, new in zip(text[name], (carry.ids, carry.mask))
        )
      state, z = self._visual_fn(params, layer_states, state)
      return state, text, jax.lax.dynamic_update_slice(z_all, z[:, None], (0, t, 0, 0))

    z0 = jnp.zeros((b, num_steps, k, d), jnp.float32)
    text: dict[str, tuple[jax.Array, jax.Array]]  # fori_loop returns init_val's structure.
    _, text, z = jax.lax.fori_loop(0, num_steps, step, (state, self._empty(b, num_steps), z0))
    return StoryOutput(*text["action"], *text["caption"], z)

  def generate(
    self, task_ids: jax.Array, task_mask: jax.Array, num_steps: int, key: jax.Array | None = None
  ) -> StoryOutput:
    """Stories of num_steps steps for task prompts ids int [B, Lt] + mask (right-padded)."""
    key = jax.random.key(0) if key is None else key
    task_ids, task_mask = jnp.asarray(task_ids, jnp.int32), jnp.asarray(task_mask, bool)
    if task_ids.ndim != 2 or task_mask.shape != task_ids.shape:
      raise ValueError(
        f"task_ids / task_mask: expected equal shapes [B, Lt], got "
        f"{task_ids.shape} and {task_mask.shape}"
      )
    layer_states = self.layer_states()
    if self.loop == "device":
      return self._generate(self.params, layer_states, task_ids, task_mask, num_steps, key)
    state = self._prefill(self.params, layer_states, task_ids, task_mask, num_steps)
    text = self._empty(task_ids.shape[0], num_steps)
    rows: dict[str, list] = {name: [] for name in self.cfg.segments}
    zs = []
    for t in range(num_steps):
      for s, name in enumerate(self.cfg.segments):
        carry = self._open(self.params, layer_states, state, name)
        seg_key = jax.random.fold_in(key, 2 * t + s)
        n = self.max_len(name)
        for i in range(n + 1):
          carry = self._token(self.params, layer_states, carry, seg_key, name)
          if i % 4 == 3 and bool(jnp.all(carry.done)):  # Sync only every 4th token.
            break
        state = carry.state
        rows[name].append((carry.ids[:, :n], carry.mask[:, :n]))
      state, z = self._visual(self.params, layer_states, state)
      zs.append(z)
    for name, steps in rows.items():
      text[name] = (jnp.stack([r[0] for r in steps], 1), jnp.stack([r[1] for r in steps], 1))
    return StoryOutput(*text["action"], *text["caption"], jnp.stack(zs, 1))
