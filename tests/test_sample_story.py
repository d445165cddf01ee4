"""Story -> video: teacher-forced regression, per-item determinism, the CFG clip path,
written files, model loading. Tiny random models, no training."""

import functools
import hashlib
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import nnx
from jax.sharding import PartitionSpec

from auteur_jax.config import ConfigError
from auteur_jax.data import video_io
from auteur_jax.data.tokenizer import train_bpe
from auteur_jax.diffusion import flow
from auteur_jax.models import director as D
from auteur_jax.models import llm as L
from auteur_jax.models import registry
from auteur_jax.models import vae as V
from auteur_jax.models.conditioned_dit import TextConditionedDiT
from auteur_jax.models.dit import DiTConfig
from auteur_jax.parallel.mesh import make_mesh
from auteur_jax.sample import director as S
from auteur_jax.sample import story

pytestmark = pytest.mark.integration

TEXTS = [
  "chop the tomato",
  "slice the bread",
  "make a salad",
  "boil water in a pot",
  "stir the soup",
  "add salt",
] * 4
K, DIM, VOCAB = 3, 8, 300
VAE_CFG = V.VAEConfig(
  base_dim=4,
  z_dim=4,
  dim_mult=(1, 2, 2, 2),
  num_res_blocks=1,
  latents_mean=(0.1, -0.2, 0.3, 0.0),
  latents_std=(1.5, 0.5, 1.0, 2.0),
)
DIT_CFG = DiTConfig(
  in_channels=4,
  out_channels=4,
  num_heads=2,
  head_dim=8,
  ffn_dim=32,
  num_layers=1,
  text_dim=16,
  freq_dim=16,
  visual_dim=DIM,
  remat="none",
)
SETTINGS = story.Settings(
  num_steps=2,
  max_steps=4,
  num_frames=5,
  size=16,
  sampler_steps=2,
  max_task_tokens=6,
  max_text_len=8,
)


def make_models(seed=0, build=story.build_jitted):
  """Director, DiT, VAE; build=abstract for shapes only (checks that fail first)."""
  llm = L.LLMConfig(
    vocab_size=VOCAB, width=32, num_layers=1, num_heads=4, num_kv_heads=2, head_dim=8, mlp_dim=48
  )
  markup = D.MarkupIds(4, 5, 6, 7, 8, 9, bos=1)
  return (
    build(lambda: D.Director(D.DirectorConfig(llm, markup, K, DIM), rngs=nnx.Rngs(seed))),
    build(lambda: TextConditionedDiT(DIT_CFG, VOCAB, rngs=nnx.Rngs(seed + 1))),
    build(lambda: V.VideoVAE(VAE_CFG, rngs=nnx.Rngs(seed + 2))),
  )


@functools.lru_cache(maxsize=1)
def _initialised():
  return tuple(nnx.split(m) for m in make_models())


def fresh_models():
  """make_models() initialised once; new modules over the same arrays on every call."""
  return [
    nnx.merge(graphdef, jax.tree.map(lambda a: a, state))  # New Variables.
    for graphdef, state in _initialised()
  ]


def abstract(make):
  with nnx.use_eager_sharding(False):
    return nnx.eval_shape(make)


@pytest.fixture(scope="module")
def sampler():
  tok = train_bpe(TEXTS, VOCAB)
  mesh = make_mesh({"data": 2}, jax.local_devices()[:2])
  return story.StorySampler(
    *fresh_models(), tok, SETTINGS, S.Sampling(max_action_tokens=3, max_caption_tokens=4), mesh
  )


def test_regression_of_given_text_equals_generation(sampler):
  """The teacher-forced path on the director's own greedy text regresses the same z."""
  d = sampler.director
  ids, mask = sampler._rows(sampler.tokenizer.encode_batch(["make a salad", "boil"], 6))
  keys = sampler._rows(jnp.stack([jax.random.key(0), jax.random.key(1)]))
  out = sampler._generate(d.params, d.layer_states(), ids, mask, 2, keys)
  text = {
    "action": (out.action_ids, out.action_mask),
    "caption": (out.caption_ids, out.caption_mask),
  }
  z = sampler._regress(d.params, d.layer_states(), ids, mask, text, 2)
  assert z.shape == (2, 2, K, DIM)
  np.testing.assert_allclose(z, out.visual_embedding, rtol=1e-4, atol=1e-5)


def test_same_item_same_output_in_any_batch(sampler):
  a = story.StoryRequest("a", "make a salad", num_steps=2)
  others = [
    story.StoryRequest("b", "add salt", num_steps=3),
    story.StoryRequest(
      "c", "stir", actions=("stir", "add salt"), captions=("stir the soup", "add salt")
    ),
    story.StoryRequest("d", "boil water", num_steps=2),
  ]
  alone = sampler.render([a])[0]
  mixed = sampler.render([others[0], others[1], a, others[2]])
  assert mixed[2].request == a
  assert alone.clips.shape == (2, 5, 16, 16, 3) and alone.clips.dtype == np.uint8
  np.testing.assert_array_equal(mixed[2].clips, alone.clips)
  np.testing.assert_array_equal(mixed[2].embeddings, alone.embeddings)
  assert mixed[2].captions == alone.captions and mixed[2].seed == alone.seed
  assert [len(r.clips) for r in mixed] == [3, 2, 2, 2]
  assert mixed[1].actions == ["stir", "add salt"]  # Given text is kept, only z regressed.
  # Another seed: same greedy text and z, other noise, other video.
  reseeded = sampler.render([story.StoryRequest("a", "make a salad", 2, seed=123)])[0]
  assert reseeded.captions == alone.captions and reseeded.seed == 123
  np.testing.assert_array_equal(reseeded.embeddings, alone.embeddings)
  assert not np.array_equal(reseeded.clips, alone.clips)
  assert story.item_seed("a") == alone.seed != story.item_seed("b")


def test_clip_equals_reference_sampling(sampler):
  """Clip t = VAE(denormalize(euler ODE of the 3-way guided DiT from clip t's noise))."""
  r = story.StoryRequest(
    "x",
    "boil water",
    actions=("boil", "pour"),
    captions=("boil water in a pot", "add salt"),
    seed=7,
  )
  res = sampler.render([r])[0]
  dit = nnx.merge(sampler._dit_graph, sampler._dit_params)
  s = SETTINGS
  for t in range(2):
    ids, mask = sampler.tokenizer.encode_batch([r.captions[t]], s.max_text_len)
    text = dit.text_embed(jnp.asarray(ids)) * mask[..., None]
    z = jnp.asarray(res.embeddings[t : t + 1])
    v_fn = flow.guided_velocity(
      dit.dit, text, z, jnp.zeros_like(text), jnp.zeros_like(z), s.text_scale, s.visual_scale
    )
    key = jax.random.fold_in(jax.random.split(jax.random.key(7))[1], t)
    noise = jax.random.normal(key, sampler.latent_shape())[None]
    latents = flow.euler_sample(v_fn, noise, s.sampler_steps, s.shift)
    video = V.decode(sampler.vae, sampler.vae.denormalize(latents))  # Whole clip at once.
    want = np.asarray(jnp.round((video[0] + 1.0) * 127.5)).astype(np.int32)
    assert np.abs(want - res.clips[t].astype(np.int32)).max() <= 1


def test_weights_split_over_fsdp_and_tensor(sampler):
  """The same stories from a sampler whose weights are split over fsdp x tensor."""
  mesh = make_mesh({"data": 1, "fsdp": 2, "tensor": 2}, jax.local_devices()[:4])
  split = story.StorySampler(
    *fresh_models(),
    sampler.tokenizer,
    SETTINGS,
    S.Sampling(max_action_tokens=3, max_caption_tokens=4),
    mesh,
  )
  kernel = split._dit_params["dit"]["blocks"]["ffn_up"][...]
  assert kernel.sharding.spec == PartitionSpec(None, "fsdp", "tensor")
  reqs = [story.StoryRequest("a", "make a salad", num_steps=2)]
  for want, got in zip(sampler.render(reqs), split.render(reqs)):
    assert got.captions == want.captions
    np.testing.assert_allclose(got.embeddings, want.embeddings, rtol=1e-4, atol=1e-5)
    assert np.abs(got.clips.astype(int) - want.clips.astype(int)).max() <= 2


def test_write_story(sampler, tmp_path):
  res = sampler.render([story.StoryRequest("w", "make a salad", num_steps=3)])[0]
  meta = story.write_story(res, str(tmp_path / "w"), fps=8.0)
  names = sorted(os.listdir(tmp_path / "w"))
  assert names == [
    "clip_0.mp4",
    "clip_1.mp4",
    "clip_2.mp4",
    "embeddings.npy",
    "story.json",
    "story.mp4",
  ]
  assert json.load(open(tmp_path / "w" / "story.json")) == meta
  assert meta["actions"] == res.actions and len(meta["captions"]) == 3
  assert meta["frames_sha256"][1] == hashlib.sha256(res.clips[1].tobytes()).hexdigest()
  np.testing.assert_array_equal(np.load(tmp_path / "w" / "embeddings.npy"), res.embeddings)
  assert video_io.probe(str(tmp_path / "w" / "story.mp4")).num_frames == 3 * 5
  frames = video_io.read_frames(str(tmp_path / "w" / "clip_1.mp4"), 0.0, 5 / 8.0, 8.0)
  assert frames.shape == (5, 16, 16, 3)
  # H.264 (4:2:0) blurs the random models' pixel noise; frame means survive it.
  err = np.abs(frames.mean((1, 2)) - res.clips[1].mean((1, 2)))
  assert err.max() < 4, err
  story.write_story(res, str(tmp_path / "lossless"), fps=8.0, crf=0)
  sizes = [os.path.getsize(tmp_path / d / "clip_1.mp4") for d in ("w", "lossless")]
  assert sizes[1] > 1.2 * sizes[0], sizes  # Lossless keeps all the noise.


def test_bad_requests_and_configs(sampler):
  with pytest.raises(ValueError, match="5 steps; expected 1..4"):
    sampler.render([story.StoryRequest("long", "t", num_steps=5)])
  with pytest.raises(ValueError, match=r"needs the given \['actions'\]"):
    sampler.render([story.StoryRequest("c", "t", captions=("add salt",))])
  director, dit, vae = make_models(build=abstract)
  tok = sampler.tokenizer
  text_only = abstract(lambda: TextConditionedDiT(DIT_CFG, 0, rngs=nnx.Rngs(0)))
  with pytest.raises(ConfigError, match="caption ids"):
    story.StorySampler(director, text_only, vae, tok, SETTINGS)
  with pytest.raises(ConfigError, match="num_frames=6"):
    story.StorySampler(director, dit, vae, tok, story.Settings(num_frames=6, size=16))


def test_load_model_from_a_run(tmp_path):
  from auteur_jax.config import load_module_config

  cfg = load_module_config("toy/vae")
  cfg.model.base_dim, cfg.model.dim_mult = 4, (1, 2, 2, 2)
  with pytest.raises(ConfigError, match="config.vae.init.checkpoint is empty"):
    story.load_model(cfg, "config.vae")
  cfg.init.checkpoint = str(tmp_path / "nowhere")
  with pytest.raises(FileNotFoundError, match="does not exist"):
    story.load_model(cfg, "config.vae")
  with nnx.use_eager_sharding(False):
    model = registry.build(cfg, nnx.Rngs(3))
  state_dir = tmp_path / "run" / "checkpoints" / "7" / "state"
  ckpt = ocp.StandardCheckpointer()
  ckpt.save(state_dir, {"model": nnx.state(model, nnx.Param)})
  ckpt.wait_until_finished()
  cfg.init.checkpoint = str(tmp_path / "run")
  loaded = story.load_model(cfg, "config.vae")
  want = jax.tree.leaves(nnx.state(model, nnx.Param))
  got = jax.tree.leaves(nnx.state(loaded, nnx.Param))
  assert len(want) == len(got) and all(np.array_equal(a, b) for a, b in zip(want, got))
