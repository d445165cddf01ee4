"""The language-centric director's story path (sample/story.py, director "language"):
director text -> keyframe renderer (rolling context) -> keyframe-conditioned DiT -> VAE.
Tiny random models, no training."""

import dataclasses
import json
import os

import jax
import numpy as np
import pytest
from flax import nnx

from auteur_jax.config import ConfigError
from auteur_jax.data.tokenizer import train_bpe
from auteur_jax.models import director as D
from auteur_jax.models import llm as L
from auteur_jax.models.conditioned_dit import TextConditionedDiT
from auteur_jax.models.keyframe_renderer import KeyframeRenderer, KeyframeRendererConfig
from auteur_jax.parallel.mesh import make_mesh
from auteur_jax.sample import director as S
from auteur_jax.sample import keyframes as K
from auteur_jax.sample import story
from tests.test_sample_story import DIM, DIT_CFG, SETTINGS, TEXTS, VOCAB, fresh_models

pytestmark = pytest.mark.integration

C = 4  # Latent channels of test_sample_story's tiny VAE.
LATENT = (2, 2, C)  # One latent frame of its 16 x 16 frames.
KF_DIT_CFG = dataclasses.replace(DIT_CFG, in_channels=3 * C, visual_condition="keyframe")
RENDERER_CFG = KeyframeRendererConfig(
  in_channels=3 * C,
  out_channels=C,
  num_heads=2,
  head_dim=8,
  ffn_dim=32,
  num_layers=1,
  text_dim=16,
  freq_dim=16,
  remat="none",
  visual_condition="keyframe",
  max_references=2,
  vocab_size=VOCAB,
)
LANGUAGE = dataclasses.replace(SETTINGS, director="language")


def image_tokens(images: np.ndarray) -> np.ndarray:
  """A stand-in vision tower: uint8 [N, H, W, 3] -> [N, 3, DIM], row by row."""
  x = images.astype(np.float32).reshape(len(images), -1) / 255.0
  return np.stack([np.resize(row[: 3 * DIM], (3, DIM)) for row in x])


def keyframe_sampler(tok, mesh) -> K.KeyframeSampler:
  renderer = story.build_jitted(lambda: KeyframeRenderer(RENDERER_CFG, rngs=nnx.Rngs(5)))
  settings = K.KeyframeSettings(
    latent_shape=LATENT, sampler_steps=2, max_action_tokens=3, max_caption_tokens=4
  )
  return K.KeyframeSampler(renderer, tok, settings, mesh)


@pytest.fixture(scope="module")
def parts():
  tok = train_bpe(TEXTS, VOCAB)
  mesh = make_mesh({"data": 2}, jax.local_devices()[:2])
  dit = story.build_jitted(lambda: TextConditionedDiT(KF_DIT_CFG, VOCAB, rngs=nnx.Rngs(3)))
  return tok, mesh, dit


def language_sampler(parts, **kw) -> story.StorySampler:
  tok, mesh, dit = parts
  director, _, vae = fresh_models()
  kw = {"keyframes": keyframe_sampler(tok, mesh), "image_tokens": image_tokens, **kw}
  sampling = S.Sampling(max_action_tokens=3, max_caption_tokens=4)
  return story.StorySampler(director, dit, vae, tok, LANGUAGE, sampling, mesh, **kw)


@pytest.fixture(scope="module")
def sampler(parts):
  return language_sampler(parts)


def test_language_story_shapes_keyframes_and_files(sampler, tmp_path):
  r = story.StoryRequest("v1", "make a salad", num_steps=3, seed=4)
  (res,) = sampler.render([r])
  assert len(res.actions) == len(res.captions) == 3
  assert res.clips.shape == (3, 5, 16, 16, 3) and res.clips.dtype == np.uint8
  assert res.keyframes is not None and res.keyframes.shape == (3, 16, 16, 3)
  assert res.keyframe_latents is not None and res.keyframe_latents.shape == (3, *LATENT)
  # The DiT saw the keyframes' image tokens: they are the result's embeddings.
  np.testing.assert_array_equal(res.embeddings, image_tokens(res.keyframes))
  meta = story.write_story(res, str(tmp_path / "v1"), fps=8.0)
  assert meta["keyframes"] == "keyframes.npy" and len(meta["keyframes_sha256"]) == 3
  np.testing.assert_array_equal(np.load(tmp_path / "v1" / "keyframes.npy"), res.keyframes)
  assert json.load(open(os.path.join(tmp_path, "v1", "story.json")))["num_steps"] == 3


def test_language_story_is_deterministic_per_item_seed(sampler):
  """An item renders the same alone or batched with others; its seed changes it."""
  a = story.StoryRequest("a", "stir the soup", num_steps=2, seed=11)
  given = story.StoryRequest(
    "g", "make a salad", actions=("chop the tomato", "add salt"), captions=("chop", "salt")
  )
  (alone,) = sampler.render([a])
  batch = sampler.render([given, a, story.StoryRequest("c", "add salt", num_steps=3)])
  np.testing.assert_array_equal(batch[1].clips, alone.clips)
  np.testing.assert_array_equal(batch[1].keyframes, alone.keyframes)
  assert batch[0].actions == ["chop the tomato", "add salt"]  # Given text used as it is.
  assert batch[0].captions == ["chop", "salt"] and batch[0].clips.shape[0] == 2
  (other,) = sampler.render([dataclasses.replace(a, seed=12)])
  assert not np.array_equal(other.keyframe_latents, alone.keyframe_latents)


def test_language_director_bad_models(parts):
  tok, mesh, dit = parts
  director, interleaved_dit, vae = fresh_models()
  sampling = S.Sampling(max_action_tokens=3, max_caption_tokens=4)
  with pytest.raises(ConfigError, match=r"config.dit_keyframe.model.visual_condition.*'keyframe'"):
    story.StorySampler(director, interleaved_dit, vae, tok, LANGUAGE, sampling, mesh)
  with pytest.raises(ConfigError, match=r"config.dit.model.visual_condition.*'embedding'"):
    story.StorySampler(director, dit, vae, tok, SETTINGS, sampling, mesh)
  with pytest.raises(ConfigError, match="needs the keyframe renderer"):
    story.StorySampler(director, dit, vae, tok, LANGUAGE, sampling, mesh)
  with pytest.raises(ConfigError, match="image tokens"):
    language_sampler(parts, image_tokens=None)
  wide = dataclasses.replace(KF_DIT_CFG, in_channels=3 * C, out_channels=C)
  narrow = dataclasses.replace(wide, in_channels=C)  # A keyframe DiT needs 3 C inputs.
  with pytest.raises(ValueError, match="in_channels"):
    TextConditionedDiT(narrow, VOCAB, rngs=nnx.Rngs(0))
  small = K.KeyframeSampler(
    story.build_jitted(lambda: KeyframeRenderer(RENDERER_CFG, rngs=nnx.Rngs(5))),
    tok,
    K.KeyframeSettings(latent_shape=(4, 4, C), sampler_steps=2),
    mesh,
  )
  with pytest.raises(ConfigError, match=r"keyframe_shape \(4, 4, 4\): expected \(2, 2, 4\)"):
    language_sampler(parts, keyframes=small)


def test_language_director_bad_requests(sampler):
  with pytest.raises(ValueError, match=r"story 'z': 0 steps; expected 1\.\.4"):
    sampler.render([story.StoryRequest("z", "make a salad", actions=(), captions=())])
  with pytest.raises(ValueError, match=r"story 'long': 9 steps; expected 1\.\.4"):
    sampler.render([story.StoryRequest("long", "make a salad", num_steps=9)])


def test_sample_config_director_key():
  from auteur_jax.config import load_config
  from auteur_jax.train import run_config

  c = load_config("toy/sample", ["--config.sample.director=language"])
  run_config.check_sample(c)
  c.sample.director = "visual"
  with pytest.raises(ConfigError, match=r"config.sample.*director.*'interleaved', 'language'"):
    run_config.check_sample(c)


def test_latent_director_renders_its_z_as_keyframes(parts):
  """Director 'latent' (Table 13): z_t [h * w, C] is step t's keyframe latent; the clips
  come from the keyframe DiT, and a director of other visual shapes is refused."""
  tok, mesh, dit = parts
  _, _, vae = fresh_models()
  llm = L.LLMConfig(
    vocab_size=VOCAB, width=32, num_layers=1, num_heads=4, num_kv_heads=2, head_dim=8, mlp_dim=48
  )
  markup = D.MarkupIds(4, 5, 6, 7, 8, 9, bos=1)
  cfg = D.DirectorConfig(llm, markup, LATENT[0] * LATENT[1], LATENT[2])
  director = story.build_jitted(lambda: D.Director(cfg, rngs=nnx.Rngs(7)))
  sampling = S.Sampling(max_action_tokens=3, max_caption_tokens=4)
  latent = dataclasses.replace(SETTINGS, director="latent")
  s = story.StorySampler(director, dit, vae, tok, latent, sampling, mesh, image_tokens=image_tokens)
  [r] = s.render([story.StoryRequest("v", "make a salad", num_steps=2)])
  z = s._direct([r.request], s._keys([r.seed]))[0][2]
  np.testing.assert_allclose(r.keyframe_latents, z.reshape(2, *LATENT))
  assert r.keyframes.shape == (2, 16, 16, 3) and r.clips.shape == (2, 5, 16, 16, 3)
  np.testing.assert_array_equal(r.embeddings, image_tokens(r.keyframes))
  wrong, _, _ = fresh_models()  # K x DIM visual states: not one latent frame.
  with pytest.raises(ConfigError, match="director 'latent' regresses one keyframe latent"):
    story.StorySampler(wrong, dit, vae, tok, latent, sampling, mesh, image_tokens=image_tokens)
