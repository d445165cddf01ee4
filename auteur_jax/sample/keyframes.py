"""A story's keyframes drawn one after another with rolling context (the keyframe renderer).

  sampler = KeyframeSampler.from_config(load_config("toy/keyframe"))  # init.checkpoint: the run
  results = sampler.render([KeyframeRequest("v1", captions=(...), actions=(...))], vae=vae)

Per story (an item) and step t, the renderer (models/keyframe_renderer.py) draws keyframe
t's normalised VAE latent [h, w, C] from the step's action and caption, with the previous
`max_references` keyframes as references: the request's given `references` (keyframes
before step 0, e.g. a story continued from a known state), then the keyframes drawn so
far. Each drawn keyframe becomes a reference for the next (rolling context); with
`rolling=False` every keyframe is drawn with no references (the paper's Table 4 "without
rolling context"). Each keyframe integrates the flow ODE from noise (euler or heun,
config.sample) under classifier-free guidance with separate text and reference scales
(flow.combine_guidance, the references as its "visual" condition: three passes, none /
references / text + references; the null text is zeros and the null references all
masked, as the task drops them in training).

The latents are what the keyframe-conditioned DiT is conditioned on (a clip's last latent
frame); `decode_keyframes` turns them into images and `encode_keyframes` turns images
into them.

Determinism: an item's keyframes depend only on the item (text, references, seed) and
the settings. Its seed is the request's or `common.item_seed` of its id; step t's noise is
drawn from fold_in(key(seed), n + t), n the number of given references, so a story
continued from its first n drawn keyframes (same seed, the rest of its text) draws the
keyframes the whole story drew. Every model call has exactly `rows` rows (padded with
copies of a real row) and rows never mix, so an item draws the same keyframes whatever
else shares its batch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import cast

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from auteur_jax.config_sections import from_section
from auteur_jax.data.pipeline import data_config
from auteur_jax.data.tokenizer import Tokenizer
from auteur_jax.diffusion import flow
from auteur_jax.models import vae as vae_lib
from auteur_jax.models.keyframe_renderer import KeyframeRenderer
from auteur_jax.parallel import rules as rules_lib
from auteur_jax.parallel.mesh import make_mesh
from auteur_jax.sample.common import RULES, item_seed, load_model
from auteur_jax.sample.common import fixed_rows as _fixed_rows


@dataclasses.dataclass(frozen=True)
class KeyframeRequest:
  """One story: a caption per step, optionally an action per step (else empty actions),
  optionally `references`: normalised keyframe latents [n, h, w, C] (or n arrays
  [h, w, C]) of the steps before step 0, oldest first. seed None: from the id."""

  id: str
  captions: tuple[str, ...]
  actions: tuple[str, ...] | None = None
  references: np.ndarray | Sequence[np.ndarray] | None = None
  seed: int | None = None


@dataclasses.dataclass
class KeyframeResult:
  """A story's keyframes: `latents` float32 [S, h, w, C] (normalised VAE latents) and,
  when a VAE was given, `frames` uint8 [S, H, W, 3]."""

  request: KeyframeRequest
  seed: int
  latents: np.ndarray
  frames: np.ndarray | None = None


@dataclasses.dataclass(frozen=True)
class KeyframeSettings:
  """What drawing needs besides the model (config.sample and config.data of a keyframe
  config). latent_shape: (h, w, C) of one keyframe latent (config.data.keyframe_shape)."""

  latent_shape: tuple[int, int, int]
  seed: int = 0  # Mixed into every item's seed (item_seed) when the request gives none.
  rows_per_device: int = 1
  rolling: bool = True  # False: no references at all (given ones are ignored too).
  solver: str = "euler"
  sampler_steps: int = 30
  shift: float = 3.0
  text_scale: float = 5.0
  reference_scale: float = 1.0  # Guidance on the references (config.sample.visual_scale).
  max_action_tokens: int = 16
  max_caption_tokens: int = 80

  def validate(self) -> None:
    if len(self.latent_shape) != 3 or min(self.latent_shape) < 1:
      raise ValueError(f"latent_shape: expected (h, w, C), got {self.latent_shape}")
    if self.solver not in flow.SAMPLERS:
      raise ValueError(f"solver: expected one of {sorted(flow.SAMPLERS)}, got {self.solver!r}")
    for name in ("rows_per_device", "sampler_steps", "max_action_tokens", "max_caption_tokens"):
      if getattr(self, name) < 1:
        raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


class KeyframeSampler:
  """The renderer on a mesh plus its jitted drawing step (see the module docstring)."""

  def __init__(
    self,
    renderer: KeyframeRenderer,
    tokenizer: Tokenizer,
    settings: KeyframeSettings,
    mesh: jax.sharding.Mesh | None = None,
    rules: rules_lib.Rules = RULES,
  ):
    settings.validate()
    self.settings, self.tokenizer = settings, tokenizer
    self.cfg = renderer.cfg
    if settings.latent_shape[-1] != self.cfg.out_channels:
      raise ValueError(
        f"latent_shape {settings.latent_shape}: the renderer draws "
        f"{self.cfg.out_channels} channels (config.model.out_channels)"
      )
    self.mesh = mesh or make_mesh({"data": -1}, jax.local_devices())
    self.rules = tuple(rules)
    self.rows = settings.rows_per_device * dict(self.mesh.shape).get("data", 1)
    state = nnx.state(renderer)
    nnx.update(
      renderer, jax.device_put(state, rules_lib.state_shardings(state, self.mesh, self.rules))
    )
    self._graph, self._params = nnx.split(renderer)
    self._rows_sharding = NamedSharding(self.mesh, PartitionSpec("data"))
    self._draw = jax.jit(self._draw_fn)

  @classmethod
  def from_config(
    cls,
    config: ml_collections.ConfigDict,
    *,
    rolling: bool = True,
    seed: int = 0,
    allow_random: bool = False,
    devices: Sequence[jax.Device] | None = None,
    tokenizer: Tokenizer | None = None,
    where: str = "config",
  ) -> KeyframeSampler:
    """From a keyframe training config (toy/keyframe): the renderer restored from the run
    in config.init.checkpoint onto the mesh of config.mesh (local devices, or `devices`),
    the tokenizer of config.data.tokenizer, settings from config.sample and config.data
    (rolling and seed: KeyframeSettings'; allow_random: random weights without a run;
    tokenizer: instead of config.data.tokenizer's; where: the section's name in errors)."""
    mesh = make_mesh(dict(config.mesh.shape), devices or jax.local_devices())
    rules = rules_lib.mesh_rules(config)
    renderer = cast(
      KeyframeRenderer, load_model(config, where, allow_random, mesh=mesh, rules=rules)
    )
    s = from_section(flow.SamplerConfig, config.sample, f"{where}.sample")
    data = data_config(config.data)
    if len(data.keyframe_shape) != 3:
      raise ValueError(
        f"{where}.data.keyframe_shape: expected (h, w, C), got {data.keyframe_shape}"
      )
    h, w, c = data.keyframe_shape
    settings = KeyframeSettings(
      latent_shape=(h, w, c),
      seed=seed,
      rolling=rolling,
      solver=s.solver,
      sampler_steps=s.num_steps,
      shift=s.shift,
      text_scale=s.text_scale,
      reference_scale=s.visual_scale,
      max_action_tokens=data.max_action_tokens,
      max_caption_tokens=data.max_caption_tokens,
    )
    return cls(renderer, tokenizer or Tokenizer.load(data.tokenizer), settings, mesh, rules)

  # -- the jitted step (a pure function of params and row arrays) -------------------------

  def _draw_fn(self, params, keys, action_ids, action_mask, caption_ids, caption_mask, refs, mask):
    """Rows [R]: noise keys, token ids [R, L] + masks, references [R, M, h, w, C] + mask
    [R, M] -> keyframe latents [R, h, w, C]."""
    s = self.settings
    model = nnx.merge(self._graph, params)
    text = model.embed_text(action_ids, action_mask, caption_ids, caption_mask)
    none = jnp.zeros_like(mask)

    def velocity(x, t):
      three = lambda a: jnp.concatenate([a, a, a])  # noqa: E731
      v = model(
        three(x),
        three(t),
        jnp.concatenate([jnp.zeros_like(text), jnp.zeros_like(text), text]),
        three(refs),
        jnp.concatenate([none, mask, mask]),
      )
      v_none, v_refs, v_full = jnp.split(v, 3)
      return flow.combine_guidance(v_none, v_refs, v_full, s.text_scale, s.reference_scale)

    noise = jax.vmap(lambda k: jax.random.normal(k, s.latent_shape))(keys)
    return flow.SAMPLERS[s.solver](velocity, noise, s.sampler_steps, s.shift)

  # -- drawing ---------------------------------------------------------------------------

  def _check(self, r: KeyframeRequest) -> np.ndarray:
    """The request's given references [n, h, w, C] float32, after checking the request."""
    shape = self.settings.latent_shape
    if not r.captions:
      raise ValueError(f"story {r.id!r}: 0 steps; expected at least one caption (one per step)")
    if r.actions is not None and len(r.actions) != len(r.captions):
      raise ValueError(
        f"story {r.id!r}: {len(r.actions)} actions for {len(r.captions)} captions; "
        "expected one action per step (or none)"
      )
    refs = [] if r.references is None else list(r.references)
    for i, ref in enumerate(refs):
      if np.shape(ref) != shape:
        raise ValueError(
          f"story {r.id!r}: reference keyframe {i} has shape {np.shape(ref)}; expected "
          f"{shape} (h, w, C: a keyframe's normalised VAE latent)"
        )
    return np.asarray(refs, np.float32).reshape(-1, *shape)

  def render(
    self, requests: Sequence[KeyframeRequest], vae: vae_lib.VideoVAE | None = None
  ) -> list[KeyframeResult]:
    """Draws every request's keyframes (see the module docstring), decoded to frames by
    `vae` if given; results in request order."""
    reqs = list(requests)
    given = [self._check(r) for r in reqs]  # Every request checked before any drawing.
    s, m = self.settings, self.cfg.max_references
    seeds = [r.seed if r.seed is not None else item_seed(r.id, s.seed) for r in reqs]
    out = [
      KeyframeResult(r, seed, np.zeros((len(r.captions), *s.latent_shape), np.float32))
      for r, seed in zip(reqs, seeds)
    ]
    for rows in _fixed_rows(len(reqs), self.rows):
      refs = np.zeros((len(rows), m, *s.latent_shape), np.float32)
      mask = np.zeros((len(rows), m), bool)
      if s.rolling:
        for j, i in enumerate(rows):  # Given references, newest in the last slot.
          n = min(len(given[i]), m)
          if n:
            refs[j, m - n :], mask[j, m - n :] = given[i][-n:], True
      for t in range(max(len(reqs[i].captions) for i in rows)):
        keys = jnp.stack(
          [jax.random.fold_in(jax.random.key(seeds[i]), len(given[i]) + t) for i in rows]
        )
        acts, caps = [], []
        for i in rows:  # A row past its story's end draws from empty text (discarded).
          r = reqs[i]
          caps.append(r.captions[t] if t < len(r.captions) else "")
          acts.append(r.actions[t] if r.actions is not None and t < len(r.actions) else "")
        a_ids, a_mask = self.tokenizer.encode_batch(acts, s.max_action_tokens)
        c_ids, c_mask = self.tokenizer.encode_batch(caps, s.max_caption_tokens)
        arrays = (keys, a_ids, a_mask, c_ids, c_mask, refs, mask)
        with rules_lib.use_mesh(self.mesh, self.rules):
          x = np.asarray(self._draw(self._params, *jax.device_put(arrays, self._rows_sharding)))
        for j, i in enumerate(rows[: len(set(rows))]):  # The real rows, not the padding.
          if t < len(reqs[i].captions):
            out[i].latents[t] = x[j]
        if s.rolling:  # The new keyframe joins the context; the oldest leaves it.
          refs = np.concatenate([refs[:, 1:], x[:, None]], axis=1)
          mask = np.concatenate([mask[:, 1:], np.ones((len(rows), 1), bool)], axis=1)
    if vae is not None:
      for res in out:
        res.frames = decode_keyframes(vae, res.latents)
    return out


def decode_keyframes(vae: vae_lib.VideoVAE, latents: np.ndarray | jax.Array) -> np.ndarray:
  """Keyframe latents [N, h, w, C] (normalised) -> uint8 images [N, H, W, 3].

  A keyframe latent is a clip's last latent frame: the code of its last 4 frames in
  context, not a still's. Each is held for two latent frames (a scene at rest), decoded,
  and the last frame kept: on the toy VAE that is within 0.3 dB PSNR of decoding the
  whole clip, 1 dB better than decoding the latent alone as a first frame.
  """
  z = jnp.asarray(latents, jnp.float32)
  if z.ndim != 4 or z.shape[-1] != vae.cfg.z_dim:
    raise ValueError(f"keyframe latents: expected [N, h, w, {vae.cfg.z_dim}], got {tuple(z.shape)}")
  video = vae_lib.decode(vae, vae.denormalize(jnp.stack([z, z], axis=1)))
  return vae_lib.to_uint8(video[:, -1])


def encode_keyframes(vae: vae_lib.VideoVAE, images: np.ndarray) -> np.ndarray:
  """uint8 images [N, H, W, 3] -> keyframe latents [N, h, w, C] float32 (normalised), the
  inverse of `decode_keyframes`: each image held for 1 + temporal_factor frames (a scene
  at rest), encoded, the last latent frame kept (what a clip ending at rest on the image
  stores as its last latent frame), e.g. a user's image as a story's first reference."""
  x = np.asarray(images)
  if x.ndim != 4 or x.shape[-1] != 3 or x.dtype != np.uint8:
    raise ValueError(f"images: expected uint8 [N, H, W, 3], got {x.dtype} {x.shape}")
  f = vae.cfg.temporal_factor
  video = jnp.repeat(jnp.asarray(x, jnp.float32)[:, None] / 127.5 - 1.0, 1 + f, axis=1)
  mean, _ = vae_lib.encode(vae, video)
  return np.asarray(vae.normalize(mean[:, -1]), np.float32)
