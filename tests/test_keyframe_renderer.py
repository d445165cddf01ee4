"""The keyframe renderer: the model's reference slots and masking, story batches with
keyframes (data/keyframes.py), the keyframe task under the trainer (1 device == 8 devices,
the loss falls), rolling-context sampling (sample/keyframes.py) and its input errors."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from test_train_tasks import CONFIGS, _compare_and_learn

from auteur_jax.config import ConfigError, load_config
from auteur_jax.data import examples, tfrecord
from auteur_jax.data.schema import Clip, Story
from auteur_jax.data.tokenizer import train_bpe
from auteur_jax.models import vae as V
from auteur_jax.models.keyframe_renderer import (
  KeyframeRenderer,
  KeyframeRendererConfig,
  rolling_references,
)
from auteur_jax.parallel.mesh import make_mesh
from auteur_jax.sample import keyframes as K
from auteur_jax.sample.story import build_jitted, item_seed
from auteur_jax.train import run_config, tasks

WORDS = "chop the onion boil water in the pot serve soup on a plate carrot pepper".split()


def tiny_config(**kw) -> KeyframeRendererConfig:
  c = 4  # Latent channels.
  base = dict(
    in_channels=2 * c + 4,
    out_channels=c,
    num_heads=2,
    head_dim=8,
    ffn_dim=32,
    num_layers=1,
    text_dim=16,
    freq_dim=16,
    remat="none",
    visual_condition="keyframe",
    max_references=3,
    vocab_size=300,
  )
  return KeyframeRendererConfig(**{**base, **kw})


def tiny_renderer(seed=0, **kw) -> KeyframeRenderer:
  cfg = tiny_config(**kw)
  return build_jitted(lambda: KeyframeRenderer(cfg, rngs=nnx.Rngs(seed)))


# --- the model ---------------------------------------------------------------------------


def test_config_checks_name_the_key():
  for kw, match in (
    (dict(max_references=0), r"max_references: expected 1\.\.3, got 0"),
    (dict(max_references=4), r"max_references: expected 1\.\.3, got 4"),
    (dict(visual_condition="embedding", in_channels=4), r"visual_condition: .*'keyframe'"),
    (dict(visual_dim=8), r"visual_dim: the renderer has no visual tokens"),
    (dict(in_channels=8), r"in_channels: .* needs .* = 12, got 8"),
  ):
    with pytest.raises(ValueError, match=match):
      tiny_config(**kw).validate()


def test_rolling_references_puts_step_t_minus_j_in_slot_r_minus_j():
  b, s, r = 2, 4, 3
  kf = jnp.arange(1, b * s + 1, dtype=jnp.float32).reshape(b, s, 1, 1, 1)
  step_mask = jnp.array([[True] * 4, [True, True, False, False]])
  refs, mask = rolling_references(kf, step_mask, r)
  assert refs.shape == (b, s, r, 1, 1, 1) and mask.shape == (b, s, r)
  # Story 0, step 3: steps 0, 1, 2 (oldest first); step 1: only step 0, in the last slot.
  np.testing.assert_array_equal(refs[0, 3, :, 0, 0, 0], [1, 2, 3])
  np.testing.assert_array_equal(mask[0, 3], [True, True, True])
  np.testing.assert_array_equal(mask[0, 1], [False, False, True])
  np.testing.assert_array_equal(refs[0, 1, :, 0, 0, 0], [0, 0, 1])
  np.testing.assert_array_equal(mask[0, 0], [False] * 3)  # A story's first step: none.
  # Story 1 has 2 steps: (padded) step 3 sees its real steps 0 and 1, not padded step 2.
  np.testing.assert_array_equal(mask[1, 3], [True, True, False])


def test_shapes_masking_and_references_used():
  model = tiny_renderer()
  call = jax.jit(lambda *a: model(*a))  # One compile for the calls below (same shapes).
  ks = jax.random.split(jax.random.key(0), 5)
  b, (h, w, c) = 3, (4, 4, 4)
  x = jax.random.normal(ks[0], (b, h, w, c))
  t = jnp.array([0.2, 0.5, 0.9])
  text = jax.random.normal(ks[1], (b, 5, 16))
  refs = jax.random.normal(ks[2], (b, 3, h, w, c))
  mask = jnp.array([[True, True, True], [False, True, True], [False, False, False]])
  v = call(x, t, text, refs, mask)
  assert v.shape == (b, h, w, c)
  # A missing reference's content changes nothing: new content in every masked slot.
  other = jax.random.normal(ks[3], refs.shape)
  np.testing.assert_array_equal(
    call(x, t, text, jnp.where(mask[..., None, None, None], refs, other), mask), v
  )
  # A reference that is there is used: changing slot 2 changes rows 0 and 1, not row 2.
  changed = refs.at[:, 2].set(other[:, 2])
  diff = np.abs(np.asarray(call(x, t, text, changed, mask) - v)).max(axis=(1, 2, 3))
  assert diff[0] > 1e-3 and diff[1] > 1e-3 and diff[2] == 0.0, diff
  # So is its mask: the same content unmasked changes the output.
  assert np.abs(np.asarray(call(x, t, text, refs, jnp.ones_like(mask)) - v)).max() > 1e-3
  with pytest.raises(ValueError, match=r"references: expected shape \(3, 3, 4, 4, 4\)"):
    model(x, t, text, refs[:, :2], mask)
  with pytest.raises(ValueError, match=r"keyframe latents: expected \[B, h, w, 4\]"):
    model(x[..., :3], t, text, refs, mask)


# --- data: stories with keyframes ----------------------------------------------------------


def _data(tmp_path, latent=(4, 4, 16), stories=16, latents=True) -> tuple[str, str, list]:
  """`stories` stories of 2-4 steps in 2 story shards, their clips in 2 clip shards, a
  BPE tokenizer of their texts, and each story's keyframes. Clip j of story i has latents
  [2, *latent]: noise, then keyframe j = the story's look + a little noise of its own
  (its references say much about it, as in a story whose objects keep their look)."""
  rng = np.random.default_rng(0)
  texts, all_stories, clips, keyframes = [], [], [], []
  for i in range(stories):
    steps, look = [], rng.normal(size=latent)
    keyframes.append([])
    for j in range(2 + i % 3):
      a, cap = " ".join(rng.choice(WORDS, 3)), " ".join(rng.choice(WORDS, 7))
      texts += [a, cap]
      steps.append(Clip(f"c{i}_{j}", j, j + 1.0, a, cap))
      keyframes[-1].append((look + 0.3 * rng.normal(size=latent)).astype(np.float32))
      arr = np.stack([rng.normal(size=latent).astype(np.float32), keyframes[-1][-1]])
      clips.append((f"v{i}", steps[-1], {"latents": arr} if latents else {}))
    all_stories.append(
      Story(f"v{i}", "toy_kitchen", "train", "soup", 10.0, 8.0, None, tuple(steps))
    )
  tok_dir = str(tmp_path / "tok")
  train_bpe(texts * 3, vocab_size=300, out_dir=tok_dir)
  frame = b"\xff\xd8\xff\xd9"  # Frames are not read.
  with tfrecord.ShardedWriter(tmp_path / "tfr" / "train", "stories", 2) as w:
    for s in all_stories:
      w.write(examples.encode_story(s))
  with tfrecord.ShardedWriter(tmp_path / "tfr" / "train", "clips", 2) as w:
    for vid, clip, arrays in clips:
      w.write(examples.encode_clip(vid, clip, [frame], 8.0, arrays))
  return str(tmp_path / "tfr"), tok_dir, keyframes


def _config(data_dir, tok_dir, *overrides):
  return load_config(
    os.path.join(CONFIGS, "keyframe.py"),
    [
      f"--config.data.dir={data_dir}",
      f"--config.data.tokenizer={tok_dir}",
      "--config.data.keyframe_shape=(4, 4, 16)",
      "--config.data.batch_size=4",
      "--config.data.max_steps=4",
      "--config.data.max_action_tokens=6",
      "--config.data.max_caption_tokens=12",
      "--config.data.num_workers=0",
      "--config.model.vocab_size=320",
      "--config.model.num_layers=2",
      "--config.train.log_every=1",
      "--config.train.warmup_steps=1",
      "--config.train.async_checkpoints=false",
      *overrides,
    ],
  )


def test_story_batches_carry_each_steps_last_latent_frame(tmp_path):
  data_dir, tok_dir, keyframes = _data(tmp_path)
  config = _config(data_dir, tok_dir)
  run_config.check_train(config)
  batch = next(iter(tasks.get("keyframe").dataset(config, 0, 1)))
  kf, step_mask = batch["keyframes"], batch["step_mask"]
  assert kf.shape == (4, 4, 4, 4, 16) and kf.dtype == np.float32
  for b in range(4):
    (story,) = [k for k in keyframes if np.array_equal(k[0], kf[b, 0])]
    assert int(step_mask[b].sum()) == len(story)
    for t in range(4):
      np.testing.assert_array_equal(kf[b, t], story[t] if t < len(story) else 0.0)
  assert batch["caption_ids"].shape == (4, 4, 12) and batch["action_ids"].shape == (4, 4, 6)


def test_story_keyframe_errors_name_the_clip_and_key(tmp_path):
  config = _config(*_data(tmp_path, latents=False)[:2])
  with pytest.raises(
    KeyError, match=r"clip v\d+/c\d+_0 has no array 'latents'; run `auteur encode"
  ):
    next(iter(tasks.get("keyframe").dataset(config, 0, 1)))
  config = _config(*_data(tmp_path / "b")[:2], "--config.data.keyframe_shape=(8, 8, 16)")
  with pytest.raises(
    ValueError, match=r"latents of shape \(2, 4, 4, 16\); expected \[T', 8, 8, 16\]"
  ):
    next(iter(tasks.get("keyframe").dataset(config, 0, 1)))
  with pytest.raises(
    ConfigError, match=r"keyframe_shape \(4, 4, 8\): C must be model.out_channels"
  ):
    run_config.check_train(_config("d", "t", "--config.data.keyframe_shape=(4, 4, 8)"))
  with pytest.raises(ConfigError, match=r"config.data: .*expected kind 'stories'"):
    run_config.check_train(_config("d", "t", "--config.data.keyframe_shape=()"))


# --- training -------------------------------------------------------------------------------


@pytest.mark.integration
def test_keyframe_task_mesh_equivalence_and_learning(tmp_path):
  """toy/keyframe (2 blocks) on 16 stories: 3 steps on the 8-device mesh (2 data x 2 fsdp
  x 2 tensor) == the first 3 of 20 on one device (losses to 2e-5), and the loss falls
  (about 3.6 -> 2.2)."""
  config = _config(*_data(tmp_path)[:2], "--config.train.lr=1e-3")
  losses = _compare_and_learn(config, tmp_path, steps=20)
  assert np.mean(losses[-3:]) < 0.7 * np.mean(losses[:3]), losses


# --- sampling -------------------------------------------------------------------------------

TINY_VAE = V.VAEConfig(
  base_dim=4,
  z_dim=4,
  dim_mult=(1, 2, 2, 2),
  num_res_blocks=1,
  latents_mean=(0.1, -0.2, 0.3, 0.0),
  latents_std=(1.5, 0.5, 1.0, 2.0),
)
LATENT = (4, 4, 4)  # 32 x 32 images through TINY_VAE.


@pytest.fixture(scope="module")
def sampler(tmp_path_factory):
  from auteur_jax.data.tokenizer import Tokenizer

  tok_dir = str(tmp_path_factory.mktemp("tok"))
  train_bpe([" ".join(WORDS[i:] + WORDS[:i]) for i in range(len(WORDS))] * 3, 300, out_dir=tok_dir)

  made: dict[bool, K.KeyframeSampler] = {}

  def make(rolling=True):  # One sampler (one compiled draw) per setting.
    if rolling in made:
      return made[rolling]
    settings = K.KeyframeSettings(
      latent_shape=LATENT,
      rows_per_device=2,
      rolling=rolling,
      sampler_steps=2,
      text_scale=2.0,
      reference_scale=1.5,
      max_action_tokens=4,
      max_caption_tokens=6,
    )
    mesh = make_mesh({"data": 1}, jax.devices()[:1])
    made[rolling] = K.KeyframeSampler(tiny_renderer(), Tokenizer.load(tok_dir), settings, mesh)
    return made[rolling]

  return make


STORY = K.KeyframeRequest(
  "s1",
  captions=("chop the onion", "boil water in the pot", "serve soup on a plate"),
  actions=("chop", "boil", "serve"),
  seed=7,
)


@pytest.mark.integration
def test_rolling_context_sampling(sampler):
  """Each drawn keyframe is the next one's reference: a story continued from its first
  keyframe (given as the reference, same seed) draws the keyframes the whole story drew;
  without rolling context only the first keyframe (no references either way) is the same.
  An item draws the same alone or beside others (fixed rows, padded)."""
  s = sampler()
  other = K.KeyframeRequest("s2", captions=("carrot",))
  whole, alone = s.render([STORY, other]), s.render([STORY])[0]
  assert whole[0].latents.shape == (3, *LATENT) and whole[1].latents.shape == (1, *LATENT)
  assert whole[0].frames is None and np.all(np.isfinite(whole[0].latents))
  np.testing.assert_array_equal(alone.latents, whole[0].latents)
  assert whole[1].seed == item_seed("s2") and whole[0].seed == 7

  rest = K.KeyframeRequest(
    "s1", STORY.captions[1:], STORY.actions[1:], references=whole[0].latents[:1], seed=7
  )
  np.testing.assert_allclose(s.render([rest])[0].latents, whole[0].latents[1:], atol=1e-6)

  flat = sampler(rolling=False).render([STORY])[0]
  np.testing.assert_array_equal(flat.latents[0], whole[0].latents[0])
  assert np.abs(flat.latents[1:] - whole[0].latents[1:]).max() > 1e-4


def test_sampling_bad_input_names_the_item(sampler):
  s = sampler()
  bad_ref = K.KeyframeRequest("s3", ("chop",), references=[np.zeros(LATENT), np.zeros((8, 8, 4))])
  with pytest.raises(
    ValueError,
    match=r"story 's3': reference keyframe 1 has shape \(8, 8, 4\); expected \(4, 4, 4\)",
  ):
    s.render([STORY, bad_ref])
  with pytest.raises(ValueError, match=r"story 'e': 0 steps; expected at least one caption"):
    s.render([K.KeyframeRequest("e", ())])
  with pytest.raises(ValueError, match=r"story 'a': 1 actions for 2 captions"):
    s.render([K.KeyframeRequest("a", ("chop", "boil"), actions=("chop",))])


@pytest.mark.integration
def test_keyframes_decode_to_images_and_back(sampler):
  """render(vae=) decodes each keyframe (held two latent frames, the last frame kept);
  encode_keyframes gives latents of the right shape for images of the VAE's size."""
  vae = build_jitted(lambda: V.VideoVAE(TINY_VAE, rngs=nnx.Rngs(0)))
  res = sampler().render([STORY], vae=vae)[0]
  assert res.frames is not None and res.frames.shape == (3, 32, 32, 3)
  assert res.frames.dtype == np.uint8
  z = K.encode_keyframes(vae, res.frames)
  assert z.shape == (3, *LATENT) and z.dtype == np.float32
  with pytest.raises(ValueError, match=r"keyframe latents: expected \[N, h, w, 4\]"):
    K.decode_keyframes(vae, np.zeros((2, 4, 4, 3)))
