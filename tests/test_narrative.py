"""Narrative metrics (eval/narrative.py) and CLIP-T (eval/clip_score.py)."""

from __future__ import annotations

import numpy as np
import pytest
from flax import nnx

from auteur_jax.data import toy_draw as td
from auteur_jax.data.tokenizer import train_bpe
from auteur_jax.data.toy_text import INSTRUCTIONS, join_names
from auteur_jax.data.toy_world import State
from auteur_jax.eval import narrative as N
from auteur_jax.eval.clip_score import ClipScorer
from auteur_jax.models.clip_text import ClipModel, TextConfig
from auteur_jax.models.vision import VisionConfig, normalize_pixels


def test_step_top1_right_wrong_and_shapes():
  rng = np.random.default_rng(0)
  true = rng.normal(size=(5, 4, 8))
  assert N.step_top1(true + 0.05 * rng.normal(size=true.shape), true).all()
  # Steps 1 and 2 predict each other's state; the rest are right.
  pred = true[[0, 2, 1, 3, 4]]
  assert N.step_top1(pred, true).tolist() == [True, False, False, True, True]
  # Cosine ignores scale per token.
  assert N.step_top1(true * rng.uniform(0.5, 3.0, size=(5, 4, 1)), true).all()
  with pytest.raises(ValueError, match="predicted"):
    N.step_top1(true[:4], true)


def test_token_cosine_is_the_mean_over_tokens():
  rng = np.random.default_rng(1)
  a, b = rng.normal(size=(2, 3, 4)), rng.normal(size=(3, 3, 4))
  want = np.mean(
    [a[0, k] @ b[2, k] / np.linalg.norm(a[0, k]) / np.linalg.norm(b[2, k]) for k in range(3)]
  )
  np.testing.assert_allclose(N.token_cosine(a, b)[0, 2], want, rtol=1e-9)


def test_every_toy_instruction_parses_back():
  for action, templates in INSTRUCTIONS.items():
    names = ["carrot", "tofu"] if action == "stir" else ["carrot"]
    for t in templates:
      text = t.format(x=join_names(names), be="are" if len(names) > 1 else "is")
      want = (action, frozenset(names) if "{x}" in t else frozenset())
      assert N.parse_action(text) == want, text


def test_action_match_exact_and_parsed():
  m = N.action_match(
    "move the whole  carrot onto the cutting board", "Move the whole carrot onto the cutting board."
  )
  assert m == {"exact": True, "parsed": True}
  m = N.action_match(
    "Place the carrot on the board.", "Move the whole carrot onto the cutting board."
  )
  assert m == {"exact": False, "parsed": True}  # Another phrasing of the same step.
  assert N.action_match("Place the tofu on the board.", "Place the carrot on the board.") == {
    "exact": False,
    "parsed": False,
  }
  assert (
    N.action_match("Chop the carrot into small pieces.", "Place the carrot on the board.")["parsed"]
    is False
  )
  assert N.parse_action("Place the banana on the board.") is None  # Not a toy ingredient.
  assert N.parse_action("Dance.") is None


def test_state_agreement_on_rendered_frames():
  true = State({"carrot": ("board", "chopped"), "tofu": ("pot", "chopped")}, water=True)
  frame = td.scene(64, true)
  assert N.state_agreement(frame, true) == {"objects": 1.0, "exact": 1.0}
  # The frame shows the carrot still whole: 1 of 2 ingredients + 4 flags wrong -> 5/6.
  before = State({"carrot": ("board", "whole"), "tofu": ("pot", "chopped")}, water=True)
  got = N.state_agreement(td.scene(64, before), true)
  assert got["exact"] == 0.0 and got["objects"] == pytest.approx(5 / 6)
  # An empty kitchen against a full state: only the unset flags agree.
  got = N.state_agreement(td.scene(64, State({})), true)
  assert got["objects"] == pytest.approx(3 / 6)
  assert N.mean([]) is None and N.mean([1.0, 0.0]) == 0.5


@pytest.fixture(scope="module")
def scorer(tmp_path_factory):
  tok = train_bpe(
    [f"a {c} cube on a grey table number {i}" for i in range(30) for c in ("red", "green", "blue")],
    300,
    out_dir=str(tmp_path_factory.mktemp("tok")),
  )
  vision = VisionConfig.from_dict(
    dict(
      family="clip",
      image_size=32,
      patch_size=8,
      width=32,
      depth=1,
      num_heads=2,
      mlp_dim=64,
      projection_dim=16,
      num_tokens=4,
      resampler="avgpool",
      project_tokens=True,
    )
  )
  text = TextConfig.from_dict(
    dict(
      vocab_size=300,
      width=32,
      depth=1,
      num_heads=2,
      mlp_dim=64,
      max_len=16,
      projection_dim=16,
      eos_token_id=tok.eos_id,
    )
  )
  with nnx.use_eager_sharding(False):
    return ClipModel(vision, text, rngs=nnx.Rngs(0)), tok


@pytest.mark.integration
def test_clip_t_matches_the_towers(scorer):
  model, tok = scorer
  s = ClipScorer(model, tok)
  rng = np.random.default_rng(0)
  clips = [rng.integers(0, 256, (3, 48, 48, 3), dtype=np.uint8) for _ in range(2)]
  caps = ["a red cube", "a blue cube on a grey table"]
  got = s.clip_t(clips, caps)
  # By hand: resize to 32, the family's normalisation, eos after the caption.
  import jax
  import jax.numpy as jnp

  want = []
  for c, cap in zip(clips, caps):
    x = jnp.clip(
      jax.image.resize(c.astype(np.float32), (3, 32, 32, 3), "bicubic", antialias=True), 0, 255
    )
    img = np.asarray(model.vision.embed_images(normalize_pixels(x / 255.0, "clip")))
    ids = tok.encode(cap) + [tok.eos_id]
    ids = np.asarray(ids + [tok.pad_id] * (16 - len(ids)))[None]
    txt = np.asarray(model.text(jnp.asarray(ids), jnp.asarray(ids != tok.pad_id))[1])[0]
    img = img / np.linalg.norm(img, axis=-1, keepdims=True)
    want.append(np.mean(img @ (txt / np.linalg.norm(txt))))
  np.testing.assert_allclose(got, want, atol=1e-5)
  assert s.clip_t([], []).shape == (0,)
  with pytest.raises(ValueError, match="captions"):
    s.clip_t(clips, caps[:1])
