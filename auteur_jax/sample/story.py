"""Story -> video: the director writes the steps, the DiT renders each clip, the VAE decodes.

  sampler = StorySampler.from_config(load_config("toy/sample"))
  results = sampler.render([StoryRequest("v1", "make a tomato salad", num_steps=4)])
  write_story(results[0], "out/v1", fps=8.0)

Per story (an item): the director (models/director.py) writes an action, a caption and a
visual state z_t [K, D] for each of N steps from the task prompt; or, given the actions
and captions, it reads them teacher-forced and only regresses the z_t. Each clip t is
rendered by the DiT from its caption (token ids through the DiT's own embedding table,
as `train/task_dit.py` trains it) and z_t, integrating the flow ODE from noise (euler or
heun, config.dit.sample) under classifier-free guidance with separate text and visual
scales (three condition sets: none / visual / text + visual, zeros as null conditions,
as in training). The VAE decodes each clip's latents chunk by chunk in time.

The language-centric director (Settings.director "language", the paper's Sec. 4): the
director writes only the actions and captions (its visual states unused; given text is
taken as it is), the keyframe renderer (sample/keyframes.py) draws each step's keyframe
from its action and caption with the previous keyframes as rolling context, the VAE
decodes each keyframe and the vision tower reads its image tokens, and a
keyframe-conditioned DiT (diffusion/keyframe.py, the keyframe as the clip's last frame)
renders each clip from its keyframe, the image tokens and the caption. The result then
holds the keyframes, and its `embeddings` are the keyframes' image tokens.

Settings.director "latent" (the paper's Table 13, regressing VAE latents): a director
trained to regress each step's keyframe VAE latent (toy/director:vae_latent: z_t is the
h x w x C latent as h * w tokens of C) writes the text and z_t as in "interleaved"; each
z_t is the keyframe latent of the language path (decoded, read by the vision tower, and
rendered with the keyframe-conditioned DiT). No keyframe renderer is used.

Determinism: an item's output depends only on the item (task, steps, text, seed) and the
config. Every model call has a fixed number of rows (config.sample.rows_per_device x the
mesh's `data` size, padded with copies of a real row), rows never mix, and every row
draws its randomness from its own key: the director from split(key(seed))[0], clip t's
noise from fold_in(split(key(seed))[1], t), the language path's keyframes from the
keyframe seed item_seed("keyframes", seed). So an item renders bit for bit the same
whatever else shares its batch, the job's batch size, the process count or a restart.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Callable, Sequence
from typing import cast

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from auteur_jax.config import ConfigError
from auteur_jax.config_sections import from_section
from auteur_jax.data import video_io
from auteur_jax.data.tokenizer import Tokenizer
from auteur_jax.diffusion import flow
from auteur_jax.diffusion.keyframe import keyframe_condition
from auteur_jax.models import vae as vae_lib
from auteur_jax.models.conditioned_dit import TextConditionedDiT
from auteur_jax.models.director import Director
from auteur_jax.parallel import rules as rules_lib
from auteur_jax.parallel.mesh import make_mesh
from auteur_jax.sample import director as director_lib

# build_jitted, item_seed, load_model: also this module's API (from before common.py).
from auteur_jax.sample.common import RULES, build_jitted, item_seed, load_model  # noqa: F401
from auteur_jax.sample.common import fixed_rows as _fixed_rows
from auteur_jax.sample.keyframes import KeyframeRequest, KeyframeSampler, decode_keyframes

# Settings.director / config.sample.director (module docstring).
DIRECTORS = ("interleaved", "language", "latent")
KEYFRAME_DIRECTORS = ("language", "latent")  # Clips from keyframes: the keyframe DiT.


@dataclasses.dataclass(frozen=True)
class StoryRequest:
  """One story to render. With `actions` / `captions` (one per step) the director does
  not write text; it only regresses the visual states. seed None: derived from the id."""

  id: str
  task: str
  num_steps: int | None = None
  actions: tuple[str, ...] | None = None
  captions: tuple[str, ...] | None = None
  seed: int | None = None

  @property
  def given_text(self) -> bool:
    return self.actions is not None or self.captions is not None


@dataclasses.dataclass
class StoryResult:
  """A rendered story: texts per step, z [S, K, D] float32, clips uint8 [S, T, H, W, 3].

  Language director: `embeddings` are the keyframes' image tokens [S, K, D] (what the DiT
  saw), `keyframes` the keyframes uint8 [S, H, W, 3] and `keyframe_latents` their
  normalised VAE latents float32 [S, h, w, C]; None for the interleaved director."""

  request: StoryRequest
  seed: int
  actions: list[str]
  captions: list[str]
  embeddings: np.ndarray
  clips: np.ndarray
  keyframes: np.ndarray | None = None
  keyframe_latents: np.ndarray | None = None


@dataclasses.dataclass(frozen=True)
class Settings:
  """What the render needs besides the models (config.sample + config.dit.sample)."""

  num_steps: int = 6  # Story steps when a request gives none.
  max_steps: int = 16
  seed: int = 0  # Mixed into every item's seed.
  rows_per_device: int = 1
  num_frames: int = 9  # Frames per clip (1 + 4k).
  size: int = 64  # Frame side (pixels).
  vae_chunk_frames: int = 1  # Latent frames per VAE decoding chunk (0: the whole clip).
  solver: str = "euler"
  sampler_steps: int = 30
  shift: float = 3.0
  text_scale: float = 5.0
  visual_scale: float = 3.0
  max_task_tokens: int = 32  # Task prompt tokens (the director's data.max_action_tokens).
  max_text_len: int = 64  # Caption tokens for the DiT (its data.max_text_len).
  director: str = "interleaved"  # DIRECTORS: how clips are conditioned (module docstring).


@dataclasses.dataclass(frozen=True)
class StorySampleConfig:
  """`config.sample` of a sampling config (read here and by sample/batch.py)."""

  seed: int  # Mixed with each item's id into its seed.
  batch_size: int  # Items per job batch.
  rows_per_device: int  # Stories / clips per device per model call.
  max_steps: int  # Longest story accepted.
  num_frames: int  # Frames per clip (1 + 4k).
  size: int  # Frame side in pixels.
  fps: float  # Of the written videos.
  crf: int  # x264 quality: 0 lossless .. 51 worst.
  vae_chunk_frames: int  # Latent frames per VAE decoding chunk (0 = the whole clip).
  director: str = "interleaved"  # DIRECTORS (module docstring).

  def validate(self) -> None:
    if self.director not in DIRECTORS:
      raise ValueError(f"director: expected one of {DIRECTORS}, got {self.director!r}")
    if self.batch_size < 1:
      raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
    if not 0 <= self.crf <= 51:
      raise ValueError(f"crf must be in 0..51 (x264 quality), got {self.crf}")
    for name in ("rows_per_device", "max_steps", "num_frames", "size"):
      if getattr(self, name) < 1:
        raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
    if self.fps <= 0 or self.vae_chunk_frames < 0:
      raise ValueError(
        f"fps must be > 0 and vae_chunk_frames >= 0, got {self.fps}, {self.vae_chunk_frames}"
      )


class StorySampler:
  """The three models on a mesh plus the jitted pieces of story rendering."""

  def __init__(
    self,
    director: Director,
    dit: TextConditionedDiT,
    vae: vae_lib.VideoVAE,
    tokenizer: Tokenizer,
    settings: Settings,
    sampling: director_lib.Sampling = director_lib.Sampling(),
    mesh: jax.sharding.Mesh | None = None,
    rules: rules_lib.Rules = RULES,
    *,
    keyframes: KeyframeSampler | None = None,
    image_tokens: Callable[[np.ndarray], np.ndarray] | None = None,
  ):
    """`dit`: the DiT of settings.director (a keyframe-conditioned one for "language").
    keyframes, image_tokens: the language director's keyframe renderer and the map of
    keyframe images uint8 [N, H, W, 3] -> the DiT's image tokens [N, K, visual_dim]
    (sample/encoders.clip_encoder's run; None: a DiT with visual_dim 0)."""
    self.settings, self.tokenizer = settings, tokenizer
    self.mesh = mesh or make_mesh({"data": -1}, jax.local_devices())
    self.rules = tuple(rules)
    self.rows = settings.rows_per_device * dict(self.mesh.shape).get("data", 1)
    self._check(director, dit, vae, settings)
    side = settings.size // vae.cfg.spatial_factor
    self.keyframe_shape = (side, side, vae.cfg.z_dim)  # One latent frame of the clips.
    if settings.director == "language":
      if keyframes is None:
        raise ConfigError("director 'language' needs the keyframe renderer (config.keyframe)")
      if keyframes.settings.latent_shape != self.keyframe_shape:
        raise ConfigError(
          f"config.keyframe.data.keyframe_shape {keyframes.settings.latent_shape}: expected "
          f"{self.keyframe_shape} (one latent frame of the clips)"
        )
    if settings.director == "latent":
      want = (side * side, vae.cfg.z_dim)
      if (director.cfg.num_queries, director.cfg.visual_dim) != want:
        raise ConfigError(
          f"config.director.model num_queries, visual_dim "
          f"({director.cfg.num_queries}, {director.cfg.visual_dim}): director 'latent' "
          f"regresses one keyframe latent {self.keyframe_shape}, expected {want}"
        )
    if settings.director in KEYFRAME_DIRECTORS and dit.dit.cfg.visual_dim and image_tokens is None:
      raise ConfigError(
        f"director {settings.director!r}: config.dit_keyframe.model.visual_dim > 0 needs the "
        "keyframes' image tokens (config.clip)"
      )
    self.keyframes, self.image_tokens = keyframes, image_tokens
    # Weights on the mesh by their logical axes (the DiT may be split over fsdp / tensor).
    for model in (director, dit, vae):
      state = nnx.state(model)
      nnx.update(
        model, jax.device_put(state, rules_lib.state_shardings(state, self.mesh, self.rules))
      )
    self.director = director_lib.DirectorSampler(director, sampling)
    self.dit_cfg, self.vae_cfg = dit.dit.cfg, vae.cfg
    self._dit_graph, self._dit_params = nnx.split(dit)
    self.vae = vae  # Also for callers that decode stored latents.
    self._rows_sharding = NamedSharding(self.mesh, PartitionSpec("data"))
    self._generate = jax.jit(self._generate_fn, static_argnums=(4,))
    self._regress = jax.jit(self._regress_fn, static_argnums=(5,))
    self._denoise = jax.jit(self._denoise_fn)

  # -- set-up ---------------------------------------------------------------------------

  @staticmethod
  def _check(
    director: Director, dit: TextConditionedDiT, vae: vae_lib.VideoVAE, s: Settings
  ) -> None:
    dc, vc = dit.dit.cfg, vae.cfg
    section = "config.dit_keyframe" if s.director in KEYFRAME_DIRECTORS else "config.dit"
    if s.director not in DIRECTORS:
      raise ConfigError(f"config.sample.director: expected one of {DIRECTORS}, got {s.director!r}")
    if s.director in KEYFRAME_DIRECTORS and dc.visual_condition != "keyframe":
      raise ConfigError(
        f"{section}.model.visual_condition: director {s.director!r} renders clips from "
        f"keyframes (expected 'keyframe'), got {dc.visual_condition!r}"
      )
    if s.director == "interleaved" and dc.visual_condition != "embedding":
      raise ConfigError(
        f"{section}.model.visual_condition: director 'interleaved' renders clips from its "
        f"visual states (expected 'embedding'), got {dc.visual_condition!r}"
      )
    if dit.text_embed is None:
      raise ConfigError(
        "config.dit.text.source: `auteur sample` renders with caption ids "
        "(source 'ids'); a DiT on stored text embeddings needs its text "
        "encoder, which sampling does not run"
      )
    # A keyframe DiT's input also holds the condition (mask + keyframe latent channels).
    want = (vc.z_dim + dc.condition_channels, vc.z_dim)
    if (dc.in_channels, dc.out_channels) != want:
      raise ConfigError(
        f"{section}.model in/out_channels ({dc.in_channels}, {dc.out_channels}): expected "
        f"{want} (config.vae.model.z_dim {vc.z_dim}"
        + (f" + {dc.condition_channels} keyframe condition channels in)" if dc.keyframe else ")")
      )
    if dc.keyframe and dc.condition_channels - dc.out_channels != vc.temporal_factor:
      raise ConfigError(
        f"{section}.model: {dc.condition_channels - dc.out_channels} keyframe mask channels; "
        f"expected config.vae.model.temporal_factor ({vc.temporal_factor})"
      )
    if s.director == "interleaved" and dc.visual_dim and dc.visual_dim != director.cfg.visual_dim:
      raise ConfigError(
        f"{section}.model.visual_dim={dc.visual_dim} != "
        f"config.director.model.visual_dim={director.cfg.visual_dim}"
      )
    if (s.num_frames - 1) % vc.temporal_factor or s.size % (vc.spatial_factor * dc.patch_size[1]):
      raise ConfigError(
        f"config.sample: num_frames={s.num_frames} must be 1 + "
        f"{vc.temporal_factor}k and size={s.size} a multiple of "
        f"{vc.spatial_factor * dc.patch_size[1]}"
      )
    if s.solver not in flow.SAMPLERS:
      raise ConfigError(
        f"config.dit.sample.solver: expected one of {sorted(flow.SAMPLERS)}, got {s.solver!r}"
      )

  @classmethod
  def from_config(
    cls, config: ml_collections.ConfigDict, devices: Sequence[jax.Device] | None = None
  ) -> StorySampler:
    """From a sampling config (toy/sample): restores each model's params from
    the training run in its init.checkpoint straight onto the mesh of config.mesh (local
    devices, or `devices`) under its rules."""
    mesh = make_mesh(dict(config.mesh.shape), devices or jax.local_devices())
    rules = rules_lib.mesh_rules(config)

    def load(name: str) -> nnx.Module:
      return load_model(
        config[name], f"config.{name}", config.allow_random_init, mesh=mesh, rules=rules
      )

    s = from_section(StorySampleConfig, config.sample, "config.sample")
    language = s.director in KEYFRAME_DIRECTORS
    dit_name = "dit_keyframe" if language else "dit"
    if language:
      need = (
        ("keyframe", "dit_keyframe", "clip")
        if s.director == "language"
        else ("dit_keyframe", "clip")
      )
      missing = [n for n in need if n not in config]
      if missing:
        raise ConfigError(
          f"config.sample.director {s.director!r} needs the sections {missing} "
          "(toy/sample has them)"
        )
    # registry.build makes each section's model; load_model types them all as nnx.Module.
    director = cast(Director, load("director"))
    dit = cast(TextConditionedDiT, load(dit_name))
    vae = cast(vae_lib.VideoVAE, load("vae"))
    d = from_section(
      director_lib.DirectorSampleConfig, config.director.sample, "config.director.sample"
    )
    t = from_section(flow.SamplerConfig, config[dit_name].sample, f"config.{dit_name}.sample")
    settings = Settings(
      num_steps=d.num_steps,
      max_steps=s.max_steps,
      seed=s.seed,
      rows_per_device=s.rows_per_device,
      num_frames=s.num_frames,
      size=s.size,
      vae_chunk_frames=s.vae_chunk_frames,
      solver=t.solver,
      sampler_steps=t.num_steps,
      shift=t.shift,
      text_scale=t.text_scale,
      visual_scale=t.visual_scale,
      max_task_tokens=config.director.data.max_action_tokens,
      max_text_len=config[dit_name].data.max_text_len,
      director=s.director,
    )
    sampling = d.sampling
    tokenizer = Tokenizer.load(config.tokenizer)
    keyframes, image_tokens = None, None
    if s.director == "language":
      keyframes = KeyframeSampler.from_config(
        config.keyframe,
        seed=s.seed,
        allow_random=config.allow_random_init,
        devices=devices,
        tokenizer=tokenizer,
        where="config.keyframe",
      )
    if language and dit.dit.cfg.visual_dim:
      from auteur_jax.sample.encoders import clip_encoder

      clip = config.clip.copy_and_resolve_references()
      if not clip.init.checkpoint and not config.allow_random_init:
        raise ConfigError(
          "config.clip.init.checkpoint is empty: set it to the CLIP run whose image "
          "tokens config.dit_keyframe was trained on"
        )
      image_tokens = clip_encoder(clip, mesh).run
    return cls(
      director,
      dit,
      vae,
      tokenizer,
      settings,
      sampling,
      mesh,
      rules,
      keyframes=keyframes,
      image_tokens=image_tokens,
    )

  # -- jitted pieces (pure functions of params and row arrays) --------------------------

  def _generate_fn(self, params, layer_states, task_ids, task_mask, num_steps, keys):
    """Rows [R] of task prompts -> StoryOutput; each row with its own key."""

    def one(ids, mask, key):
      out = self.director._device(params, layer_states, ids[None], mask[None], num_steps, key)
      return jax.tree.map(lambda a: a[0], out)

    return jax.vmap(one)(task_ids, task_mask, keys)

  def _regress_fn(self, params, layer_states, task_ids, task_mask, text, num_steps):
    """Teacher-forced text (name -> (ids, mask) [R, S, L]) -> z [R, S, K, D]."""
    d = self.director
    model, llm, layers = d.merge(params, layer_states)
    state = d._prefill_fn(params, layer_states, task_ids, task_mask, num_steps)
    b = task_ids.shape[0]
    cfg = model.cfg

    def step(t, c):
      state, z_all = c
      for name in cfg.segments:
        open_, close = cfg.markup.segment(name)
        ids, mask = (jax.lax.dynamic_index_in_dim(a, t, 1, keepdims=False) for a in text[name])
        full = lambda i, like: jnp.full((b, 1), i, like.dtype)  # noqa: E731
        toks = jnp.concatenate([full(open_, ids), ids, full(close, ids)], 1)
        valid = jnp.concatenate([jnp.ones((b, 1), bool), mask, jnp.ones((b, 1), bool)], 1)
        state, _ = director_lib.feed(llm, layers, state, llm.embed_tokens(toks), valid)
      state, z = d._visual_fn(params, layer_states, state)
      return state, jax.lax.dynamic_update_slice(z_all, z[:, None], (0, t, 0, 0))

    z0 = jnp.zeros((b, num_steps, cfg.num_queries, cfg.visual_dim), jnp.float32)
    return jax.lax.fori_loop(0, num_steps, step, (state, z0))[1]

  def latent_shape(self) -> tuple[int, int, int, int]:
    s, v = self.settings, self.vae_cfg
    side = s.size // v.spatial_factor
    return (v.latent_frames(s.num_frames), side, side, v.z_dim)

  def _denoise_fn(self, params, keys, ids, mask, z, keyframe):
    """Rows [R]: caption ids [R, L] + mask, z [R, K, D] (visual states or image tokens),
    keyframe latents [R, h, w, C] (a keyframe DiT's; else unused) -> latents
    [R, T', h, w, C]."""
    s = self.settings
    model = nnx.merge(self._dit_graph, params)
    assert model.text_embed is not None  # _check: the DiT embeds caption ids.
    text = model.text_embed(ids) * mask[..., None].astype(jnp.float32)
    visual = z if self.dit_cfg.visual_dim else None
    null_visual = None if visual is None else jnp.zeros_like(visual)
    shape = (keys.shape[0], *self.latent_shape())
    # The keyframe condition is never dropped (train/task_dit.py): every CFG pass has it.
    cond = None
    if self.dit_cfg.keyframe:
      cond = keyframe_condition(
        keyframe, shape, "last", temporal_factor=self.vae_cfg.temporal_factor
      )

    def fn(x, t, c, v):
      reps = x.shape[0] // shape[0]
      return model.dit(x, t, c, v, None if cond is None else jnp.concatenate([cond] * reps))

    velocity = flow.guided_velocity(
      fn,
      text,
      visual,
      jnp.zeros_like(text),
      null_visual,
      s.text_scale,
      s.visual_scale,
    )
    noise = jax.vmap(lambda k: jax.random.normal(k, self.latent_shape()))(keys)
    return flow.SAMPLERS[s.solver](velocity, noise, s.sampler_steps, s.shift)

  # -- rendering ------------------------------------------------------------------------

  def _rows(self, arrays):
    return jax.device_put(arrays, self._rows_sharding)

  def _keys(self, seeds: Sequence[int]) -> list[tuple[jax.Array, jax.Array]]:
    return [tuple(jax.random.split(jax.random.key(s))) for s in seeds]

  def _steps(self, r: StoryRequest) -> int:
    """The request's number of steps, after checking its given text fits the chain."""
    if r.given_text:
      missing = [
        f"{name}s" for name in self.director.cfg.segments if getattr(r, f"{name}s") is None
      ]
      if missing:
        raise ValueError(
          f"story {r.id!r}: the director's chain "
          f"{self.director.cfg.chain!r} needs the given {missing} too"
        )
    given = r.actions if r.actions is not None else r.captions  # None unless r.given_text.
    n = len(given) if given is not None else (r.num_steps or self.settings.num_steps)
    if not 1 <= n <= self.settings.max_steps:
      raise ValueError(
        f"story {r.id!r}: {n} steps; expected 1..{self.settings.max_steps} "
        "(config.sample.max_steps)"
      )
    return n

  def _text_ids(self, texts: Sequence[Sequence[str]], n: int, length: int):
    """Per row, n texts -> (ids [R, n, length], mask): tokenized, padded, cut at length."""
    flat = [t for row in texts for t in row]
    ids, mask = self.tokenizer.encode_batch(flat, length)
    return ids.reshape(len(texts), n, length), mask.reshape(len(texts), n, length)

  def _direct(self, reqs: list[StoryRequest], keys) -> list[tuple[list, list, np.ndarray]]:
    """Director pass: (actions, captions, z [S, K, D]) per request, in groups by mode and
    number of steps (static shapes), each group in calls of exactly `self.rows` rows."""
    out: list = [None] * len(reqs)
    groups: dict[tuple[bool, int], list[int]] = {}
    for i, r in enumerate(reqs):
      groups.setdefault((r.given_text, self._steps(r)), []).append(i)
    d, segs = self.director, self.director.cfg.segments
    for (given, n), members in groups.items():
      for rows in _fixed_rows(len(members), self.rows):
        idx = [members[j] for j in rows]
        task_ids, task_mask = self._rows(
          self.tokenizer.encode_batch([reqs[i].task for i in idx], self.settings.max_task_tokens)
        )
        if given:
          text = {}
          for name in segs:
            text[name] = self._rows(
              self._text_ids([getattr(reqs[i], f"{name}s") for i in idx], n, d.max_len(name))
            )
          z = self._regress(d.params, d.layer_states(), task_ids, task_mask, text, n)
          z = np.asarray(z)
        else:
          keys_ = self._rows(jnp.stack([keys[i][0] for i in idx]))
          res = jax.device_get(
            self._generate(d.params, d.layer_states(), task_ids, task_mask, n, keys_)
          )
          z = res.visual_embedding
        for j, i in enumerate(idx[: len(set(idx))]):  # The real rows (not the padding).
          r = reqs[i]
          if given:
            acts, caps = list(r.actions or ()), list(r.captions or ())
          else:
            acts = self._decode(res.action_ids[j], res.action_mask[j], "action" in segs)
            caps = self._decode(res.caption_ids[j], res.caption_mask[j], "caption" in segs)
          out[i] = (acts, caps, np.asarray(z[j], np.float32))
    return out

  def _decode(self, ids: np.ndarray, mask: np.ndarray, used: bool) -> list[str]:
    """Per-step texts of one row: ids [S, L] and mask -> S strings ([] if not written)."""
    return [self.tokenizer.decode(a[m]) for a, m in zip(ids, mask)] if used else []

  def clip_latents(self, jobs: list[tuple]) -> list[jax.Array]:
    """(caption, z [K, D], noise key[, keyframe latent [h, w, C]]) per clip -> normalised
    latents, in groups of exactly `self.rows` rows ([rows, T', h, w, C] each; the last
    group padded). A keyframe DiT needs each job's keyframe latent."""
    out = []
    t, h, w, c = self.latent_shape()
    for rows in _fixed_rows(len(jobs), self.rows):
      ids, mask = self.tokenizer.encode_batch(
        [jobs[i][0] for i in rows], self.settings.max_text_len
      )
      z = np.stack([jobs[i][1] for i in rows])
      keys = jnp.stack([jobs[i][2] for i in rows])
      if self.dit_cfg.keyframe:
        if any(len(jobs[i]) < 4 for i in rows):
          raise ValueError("clip jobs: a keyframe-conditioned DiT needs each clip's keyframe")
        kf = np.stack([np.asarray(jobs[i][3], np.float32) for i in rows])
      else:
        kf = np.zeros((len(rows), h, w, c), np.float32)
      with rules_lib.use_mesh(self.mesh, self.rules):  # Traced under the DiT's rules.
        out.append(self._denoise(self._dit_params, *self._rows((keys, ids, mask, z, kf))))
    return out

  def _clips(self, jobs: list[tuple]) -> np.ndarray:
    """Clip jobs (see clip_latents) -> uint8 frames [N, T, H, W, 3]."""
    frames = []
    for rows, latents in zip(_fixed_rows(len(jobs), self.rows), self.clip_latents(jobs)):
      video = vae_lib.decode(
        self.vae, self.vae.denormalize(latents), self.settings.vae_chunk_frames or None
      )
      frames.append(vae_lib.to_uint8(video)[: len(set(rows))])
    return np.concatenate(frames)[: len(jobs)]

  def jobs(self, results: Sequence[StoryResult]) -> list[tuple]:
    """The clip jobs (caption, z_t, noise key[, keyframe latent]) of rendered stories, in
    order (the keyframe latent when the story has them: the language director)."""
    out = []
    for r in results:
      key = self._keys([r.seed])[0][1]
      words = r.captions or r.actions  # The caption conditions the DiT (else the action).
      for t in range(len(r.embeddings)):
        job = (words[t], r.embeddings[t], jax.random.fold_in(key, t))
        out.append(job if r.keyframe_latents is None else (*job, r.keyframe_latents[t]))
    return out

  def _language(self, reqs: list[StoryRequest], seeds: list[int]) -> list[StoryResult]:
    """The language director's text and keyframes (module docstring) -> results without
    clips: embeddings = the keyframes' image tokens [S, K, D] (zeros [S, 0, 0] for a DiT
    without visual tokens), keyframes and keyframe_latents set."""
    assert self.keyframes is not None  # __init__ checked it.
    # Given text is used as it is; otherwise the director writes it (z_t unused).
    written = [i for i, r in enumerate(reqs) if not r.given_text]
    texts: dict[int, tuple[list, list]] = {}
    if written:
      keys = self._keys([seeds[i] for i in written])
      for i, (acts, caps, _) in zip(written, self._direct([reqs[i] for i in written], keys)):
        texts[i] = (acts, caps)
    for i, r in enumerate(reqs):
      if r.given_text:
        self._steps(r)  # Checks the step count.
        texts[i] = (list(r.actions or ()), list(r.captions or ()))
    kf_reqs = []
    for i, r in enumerate(reqs):
      acts, caps = texts[i]
      if not (caps or acts):
        raise ValueError(f"story {r.id!r}: 0 steps; expected at least one caption")
      kf_reqs.append(
        KeyframeRequest(
          r.id,
          tuple(caps or acts),
          tuple(acts) if acts and caps else None,
          seed=item_seed("keyframes", seeds[i]),
        )
      )
    drawn = self.keyframes.render(kf_reqs)
    return [
      self._keyframe_result(r, seeds[i], *texts[i], kf.latents)
      for i, (r, kf) in enumerate(zip(reqs, drawn))
    ]

  def _keyframe_result(
    self, r: StoryRequest, seed: int, acts: list, caps: list, latents: np.ndarray
  ) -> StoryResult:
    """A result without clips from a story's keyframe latents [S, h, w, C] (normalised):
    the keyframes decoded, their image tokens as `embeddings` (zeros [S, 0, 0] for a DiT
    without visual tokens)."""
    images = decode_keyframes(self.vae, latents)
    if self.image_tokens is not None:
      # Fixed row counts (padded with copies at the end), as every model call here.
      groups = _fixed_rows(len(images), self.rows)
      tokens = np.concatenate([self.image_tokens(images[g])[: len(set(g))] for g in groups])
      tokens = tokens.astype(np.float32)
    else:
      tokens = np.zeros((len(images), 0, 0), np.float32)
    return StoryResult(
      r,
      seed,
      acts,
      caps,
      tokens,
      np.zeros((0,), np.uint8),
      keyframes=images,
      keyframe_latents=np.asarray(latents, np.float32),
    )

  def render(self, requests: Sequence[StoryRequest]) -> list[StoryResult]:
    """Renders every request (see the module docstring); results in request order."""
    reqs = list(requests)
    if not reqs:
      return []
    seeds = [r.seed if r.seed is not None else item_seed(r.id, self.settings.seed) for r in reqs]
    if self.settings.director == "language":
      out = self._language(reqs, seeds)
    elif self.settings.director == "latent":  # z_t: the keyframe latent, h * w tokens of C.
      texts = self._direct(reqs, self._keys(seeds))
      out = [
        self._keyframe_result(r, seed, acts, caps, z.reshape(len(z), *self.keyframe_shape))
        for r, seed, (acts, caps, z) in zip(reqs, seeds, texts)
      ]
    else:
      texts = self._direct(reqs, self._keys(seeds))
      out = [
        StoryResult(r, seed, acts, caps, z, np.zeros((0,), np.uint8))
        for r, seed, (acts, caps, z) in zip(reqs, seeds, texts)
      ]
    clips, at = self._clips(self.jobs(out)), 0
    for result in out:
      result.clips = clips[at : at + len(result.embeddings)]
      at += len(result.embeddings)
    return out


def write_story(result: StoryResult, out_dir: str, fps: float, crf: int = 18) -> dict:
  """Writes clip_<t>.mp4, story.mp4 (the clips joined), embeddings.npy (keyframes.npy
  with the language director's keyframes) and story.json
  (written last; with each clip's uint8 frames' SHA-256) into out_dir; returns the
  story.json content. `crf`: x264 quality of the mp4s (0 = lossless)."""
  os.makedirs(out_dir, exist_ok=True)
  names = []
  for t, clip in enumerate(result.clips):
    names.append(f"clip_{t}.mp4")
    video_io.write_video(os.path.join(out_dir, names[-1]), clip, fps, crf=crf)
  video_io.write_video(
    os.path.join(out_dir, "story.mp4"), np.concatenate(list(result.clips)), fps, crf=crf
  )
  np.save(os.path.join(out_dir, "embeddings.npy"), result.embeddings)
  if result.keyframes is not None:  # The language director's keyframes.
    np.save(os.path.join(out_dir, "keyframes.npy"), result.keyframes)
  r = result.request
  meta = {
    "id": r.id,
    "task": r.task,
    "seed": result.seed,
    "num_steps": len(result.clips),
    "given_text": r.given_text,
    "actions": result.actions,
    "captions": result.captions,
    "clips": names,
    "story": "story.mp4",
    "embeddings": "embeddings.npy",
    # The rendered frames as computed. x264's bytes are not always reproducible in a
    # process that also runs XLA (about 1 in 500 encodes of the same YUV frames
    # differ, single-threaded too); the frames are, and so is a lossless mp4's decode.
    "frames_sha256": [hashlib.sha256(c.tobytes()).hexdigest() for c in result.clips],
    "embeddings_shape": list(result.embeddings.shape),
    "fps": fps,
    "frames_per_clip": int(result.clips.shape[1]),
  }
  if result.keyframes is not None:
    meta["keyframes"] = "keyframes.npy"  # uint8 [S, H, W, 3]: each step's keyframe.
    meta["keyframes_sha256"] = [hashlib.sha256(k.tobytes()).hexdigest() for k in result.keyframes]
  with open(os.path.join(out_dir, "story.json"), "w") as f:
    json.dump(meta, f, indent=1, ensure_ascii=False)
  return meta
