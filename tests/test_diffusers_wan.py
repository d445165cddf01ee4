"""diffusers WanTransformer3DModel -> VideoDiT: parity (text-only and image-conditioned
layouts, two video shapes each; Wan 2.1 image-to-video with its keyframe channels),
sharded / bfloat16 checkpoints, refused mismatches, the I2V import / export round trip."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from diffusers import WanTransformer3DModel
from flax import nnx
from safetensors.numpy import load_file, save_file

from auteur_jax.checkpoint.errors import WeightError
from auteur_jax.convert import diffusers_wan as W

TINY = dict(
  patch_size=(1, 2, 2),
  num_attention_heads=2,
  attention_head_dim=12,
  in_channels=4,
  out_channels=3,
  text_dim=16,
  freq_dim=8,
  ffn_dim=32,
  num_layers=2,
  rope_max_seq_len=32,
)
# Image-conditioned: added_kv_proj_dim must be heads x head_dim; image_dim is the raw width.
LAYOUTS = {
  "t2v": {},
  "i2v": dict(image_dim=20, added_kv_proj_dim=24),
  "flf2v": dict(image_dim=20, added_kv_proj_dim=24, pos_embed_seq_len=6),
}
_fwd = nnx.jit(lambda model, *args: model(*args))


@pytest.fixture(scope="module")
def references(tmp_path_factory):
  """layout -> (torch model, saved folder); weights perturbed so no tensor is trivial."""
  torch.manual_seed(0)
  out = {}
  for name, extra in LAYOUTS.items():
    model = WanTransformer3DModel(**TINY, **extra).eval()
    with torch.no_grad():
      for p in model.parameters():
        p.add_(0.1 * torch.randn_like(p))
    path = str(tmp_path_factory.mktemp(name))
    model.save_pretrained(path)
    out[name] = (model, path)
  return out


def _run_both(model, ours, thw, image, text_len, seed=0, batch=2):
  g = torch.Generator().manual_seed(seed)
  x = torch.randn(batch, 4, *thw, generator=g)
  t = torch.rand(batch, generator=g)
  text = torch.randn(batch, text_len, 16, generator=g)
  with torch.no_grad():
    ref = model(x, t * 1000, text, encoder_hidden_states_image=image, return_dict=False)[0]
  vis = None if image is None else jnp.asarray(image.numpy()).reshape(batch, -1, 20)
  got = _fwd(
    ours,
    jnp.asarray(x.numpy().transpose(0, 2, 3, 4, 1)),
    jnp.asarray(t.numpy()),
    jnp.asarray(text.numpy()),
    vis,
  )
  return np.asarray(got).transpose(0, 4, 1, 2, 3), ref.numpy()


@pytest.mark.parametrize("layout", ["t2v", "i2v"])
@pytest.mark.parametrize("thw", [(3, 4, 6), (2, 8, 4)])
def test_parity(references, layout, thw):
  model, path = references[layout]
  ours = W.load_diffusers_wan(path)
  assert ours.cfg.visual_dim == (20 if layout == "i2v" else 0)
  image = None
  text_len = 7
  if layout == "i2v":
    image = torch.randn(2, 5, 20, generator=torch.Generator().manual_seed(1))
    text_len = 512  # diffusers 0.42 takes exactly the last 512 tokens as text.
  got, ref = _run_both(model, ours, thw, image, text_len)
  assert got.shape == ref.shape == (2, 3, *thw)
  np.testing.assert_allclose(got, ref, atol=1e-4, rtol=1e-4)


def test_parity_position_embedded_visual_tokens(references):
  """FLF2V layout: diffusers folds [2B, L/2, D] into [B, L, D] and adds pos_embed[L]."""
  model, path = references["flf2v"]
  ours = W.load_diffusers_wan(path)
  assert ours.cfg.visual_pos_len == 6
  image = torch.randn(2, 3, 20, generator=torch.Generator().manual_seed(2))
  got, ref = _run_both(model, ours, (2, 4, 4), image, 512, batch=1)
  np.testing.assert_allclose(got, ref, atol=1e-4, rtol=1e-4)
  with pytest.raises(ValueError, match="exactly 6 tokens"):
    ours(jnp.zeros((1, 2, 4, 4, 4)), jnp.zeros((1,)), jnp.zeros((1, 3, 16)), jnp.zeros((1, 5, 20)))


@pytest.mark.integration
def test_visual_branch_added_to_text_to_video_checkpoint(references):
  _, path = references["t2v"]
  ours = W.load_diffusers_wan(path, add_visual_dim=20, seed=3)
  assert ours.cfg.visual_dim == 20
  image = torch.randn(2, 5, 20, generator=torch.Generator().manual_seed(1))
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 2, 4, 4, 4)), jnp.float32)
  t, text = jnp.array([0.2, 0.9]), jnp.ones((2, 7, 16))
  vis = jnp.asarray(image.numpy())
  plain = W.load_diffusers_wan(path)
  # Untrained visual branch: same prediction as the text-to-video model ...
  np.testing.assert_allclose(_fwd(ours, x, t, text, vis), _fwd(plain, x, t, text, None), atol=1e-5)
  # ... but its keys are random and its values train: the gradient reaches them.
  grads = nnx.jit(nnx.grad(lambda m: jnp.sum(m(x, t, text, vis) ** 2)))(ours)
  assert float(jnp.abs(grads.blocks.ca_vkv[...][:, :, 1]).sum()) > 0
  with pytest.raises(ValueError, match="text-to-video checkpoints"):
    W.load_diffusers_wan(references["i2v"][1], add_visual_dim=20)


def test_sharded_and_bfloat16_checkpoints(references, tmp_path):
  model, path = references["i2v"]
  whole = nnx.state(W.load_diffusers_wan(path), nnx.Param)
  sharded = str(tmp_path / "sharded")
  model.save_pretrained(sharded, max_shard_size="20KB")
  assert len([n for n in os.listdir(sharded) if n.endswith(".safetensors")]) > 1
  jax.tree.map(
    np.testing.assert_array_equal, nnx.state(W.load_diffusers_wan(sharded), nnx.Param), whole
  )
  bf16 = str(tmp_path / "bf16")
  model.to(torch.bfloat16).save_pretrained(bf16)
  model.to(torch.float32)
  loaded = W.load_diffusers_wan(bf16, param_dtype="bfloat16", dtype="float32")
  assert loaded.blocks.ffn_up[...].dtype == jnp.bfloat16
  want = model.blocks[1].ffn.net[0].proj.weight.detach().to(torch.bfloat16).float().numpy().T
  np.testing.assert_array_equal(np.asarray(loaded.blocks.ffn_up[...][1], np.float32), want)


def test_load_onto_mesh(references):
  from auteur_jax.parallel.mesh import make_mesh

  _, path = references["i2v"]
  plain = W.load_diffusers_wan(path)
  sharded = W.load_diffusers_wan(path, mesh=make_mesh({"data": 2, "fsdp": 2, "tensor": 2}))
  up = sharded.blocks.ffn_up[...]
  assert tuple(up.sharding.spec) == (None, "fsdp", "tensor")
  assert len(up.addressable_shards) == 8
  jax.tree.map(
    np.testing.assert_array_equal, nnx.state(sharded, nnx.Param), nnx.state(plain, nnx.Param)
  )


def _folder(tmp_path, name, config, tensors=None, like=None):
  """A model folder with `config`, and `tensors` or (linked) the weights of folder `like`."""
  folder = tmp_path / name
  folder.mkdir()
  (folder / "config.json").write_text(json.dumps(config))
  weights = "diffusion_pytorch_model.safetensors"
  if tensors is not None:
    save_file(tensors, str(folder / weights))
  else:
    os.symlink(os.path.join(like, weights), folder / weights)
  return str(folder)


def test_refuses_mismatches(references, tmp_path):
  _, path = references["i2v"]
  with open(os.path.join(path, "config.json")) as f:
    config = json.load(f)
  tensors = load_file(os.path.join(path, "diffusion_pytorch_model.safetensors"))
  missing = {k: v for k, v in tensors.items() if k != "blocks.1.attn2.add_k_proj.weight"}
  with pytest.raises(WeightError, match=r"missing: \['blocks.1.attn2.add_k_proj.weight'\]"):
    W.load_diffusers_wan(_folder(tmp_path, "missing", config, missing))
  t2v = {k: v for k, v in config.items() if k not in ("image_dim", "added_kv_proj_dim")}
  with pytest.raises(WeightError, match="not used by this model config.*add_k_proj"):
    W.load_diffusers_wan(_folder(tmp_path, "t2v", t2v, like=path))
  with pytest.raises(ValueError, match="added_kv_proj_dim must equal heads x head_dim = 24"):
    W.config_from_diffusers({**config, "added_kv_proj_dim": 20})
  with pytest.raises(ValueError, match="qk_norm"):
    W.config_from_diffusers({**config, "qk_norm": "rms_norm"})
  bad = _folder(tmp_path, "bad", {**config, "ffn_dim": 40}, like=path)
  shapes = r"ffn.net.2.weight' has shape \(24, 32\), the config expects \(24, 40\)"
  with pytest.raises(WeightError, match=shapes):
    W.load_diffusers_wan(bad)
  with pytest.raises(WeightError, match="no config.json"):
    W.load_diffusers_wan(str(tmp_path))


@pytest.mark.parametrize(
  "path", ["paper/dit_wan_1_3b", "paper/dit_wan_14b", "toy/dit", "toy/dit:keyframe"]
)
def test_configs_match_diffusers_shapes(path):
  """Our model of each config has exactly the parameters of the diffusers model with
  the same shapes (built on torch's meta device: no memory)."""
  from auteur_jax.config import load_config
  from auteur_jax.models.dit import DiTConfig, VideoDiT, count_params

  cfg = DiTConfig.from_dict(load_config(path).model)
  with nnx.use_eager_sharding(False):
    ours = count_params(nnx.eval_shape(lambda: VideoDiT(cfg, rngs=nnx.Rngs(0))))
  with torch.device("meta"):
    theirs = WanTransformer3DModel(
      patch_size=cfg.patch_size,
      num_attention_heads=cfg.num_heads,
      attention_head_dim=cfg.head_dim,
      in_channels=cfg.in_channels,
      out_channels=cfg.out_channels,
      text_dim=cfg.text_dim,
      freq_dim=cfg.freq_dim,
      ffn_dim=cfg.ffn_dim,
      num_layers=cfg.num_layers,
      cross_attn_norm=cfg.cross_attn_norm,
      eps=cfg.eps,
      image_dim=cfg.visual_dim or None,
      added_kv_proj_dim=cfg.width if cfg.visual_dim else None,
    )
  # diffusers also creates norm_added_q weights that its own attention never uses.
  unused = sum(p.numel() for n, p in theirs.named_parameters() if "norm_added_q" in n)
  assert ours == sum(p.numel() for p in theirs.parameters()) - unused


# Wan 2.1 I2V, tiny: 16 noisy latent channels + 4 mask + 16 keyframe latent channels.
I2V = dict(
  patch_size=(1, 2, 2),
  num_attention_heads=2,
  attention_head_dim=16,
  in_channels=36,
  out_channels=16,
  text_dim=16,
  freq_dim=8,
  ffn_dim=32,
  num_layers=2,
  rope_max_seq_len=32,
  image_dim=32,
  added_kv_proj_dim=32,
)


@pytest.fixture(scope="module")
def i2v_reference(tmp_path_factory):
  """A tiny random Wan 2.1 I2V WanTransformer3DModel (every tensor perturbed), saved."""
  torch.manual_seed(0)
  model = WanTransformer3DModel(**I2V).eval()
  with torch.no_grad():
    for p in model.parameters():
      p.add_(0.1 * torch.randn_like(p))
  path = str(tmp_path_factory.mktemp("i2v"))
  model.save_pretrained(path)
  return model, path


def _i2v_inputs(batch=2, thw=(3, 4, 6), seed=0):
  """Noisy latents [B, 16, T, H, W], t, text [B, 512, 16], image tokens [B, 5, 32] and
  the keyframe condition [B, T, H, W, 20] (ours: a random keyframe latent, last frame)."""
  from auteur_jax.diffusion.keyframe import keyframe_condition

  g = torch.Generator().manual_seed(seed)
  x = torch.randn(batch, 16, *thw, generator=g)
  t = torch.rand(batch, generator=g)
  text = torch.randn(batch, 512, 16, generator=g)  # diffusers 0.42: the last 512 are text.
  image = torch.randn(batch, 5, 32, generator=g)
  key = jnp.asarray(torch.randn(batch, *thw[1:], 16, generator=g).numpy())
  cond = keyframe_condition(key, (batch, *thw, 16), "last")
  return x, t, text, image, cond


@pytest.mark.parametrize("thw", [(3, 4, 6), (2, 8, 4)])
def test_i2v_parity(i2v_reference, thw):
  """Our keyframe DiT given (latents, condition) == diffusers' given the pipeline's
  torch.cat([latents, condition], dim=1) (36 channels), image tokens through add_k/v."""
  model, path = i2v_reference
  ours = W.load_diffusers_wan(path)
  assert (ours.cfg.visual_condition, ours.cfg.in_channels, ours.cfg.visual_dim) == (
    "keyframe",
    36,
    32,
  )
  x, t, text, image, cond = _i2v_inputs(thw=thw)
  hidden = torch.cat([x, torch.from_numpy(np.asarray(cond).transpose(0, 4, 1, 2, 3))], dim=1)
  with torch.no_grad():
    ref = model(hidden, t * 1000, text, encoder_hidden_states_image=image, return_dict=False)[0]
  got = _fwd(
    ours,
    jnp.asarray(x.numpy().transpose(0, 2, 3, 4, 1)),
    jnp.asarray(t.numpy()),
    jnp.asarray(text.numpy()),
    jnp.asarray(image.numpy()),
    cond,
  )
  got = np.asarray(got).transpose(0, 4, 1, 2, 3)
  assert got.shape == ref.shape == (2, 16, *thw)
  np.testing.assert_allclose(got, ref.numpy(), atol=1e-4, rtol=1e-4)
  # "both" reads the same weights (the image tokens are then the director's embedding).
  assert W.load_diffusers_wan(path, visual_condition="both").cfg.visual_condition == "both"


def test_i2v_import_export_round_trip(i2v_reference, tmp_path, monkeypatch):
  """`auteur convert` import (onto an 8-device mesh) -> export gives back every tensor
  bit-identical and a config.json diffusers loads as the same I2V model; the exported
  folder loads into our model again with the same params."""
  from auteur_jax.convert.exporter import export_weights
  from auteur_jax.convert.importer import import_weights

  model, path = i2v_reference
  import_weights("wan_dit", path, str(tmp_path / "ckpt"), mesh_shape={"fsdp": 8}, progress=False)
  export_weights("wan_dit", str(tmp_path / "ckpt"), str(tmp_path / "out"), progress=False)
  out = str(tmp_path / "out")
  with open(os.path.join(out, "config.json")) as f:
    config = json.load(f)
  assert (config["in_channels"], config["out_channels"], config["image_dim"]) == (36, 16, 32)
  before = load_file(os.path.join(path, "diffusion_pytorch_model.safetensors"))
  after = {}
  for name in os.listdir(out):
    if name.endswith(".safetensors"):
      after.update(load_file(os.path.join(out, name)))
  kept = {n for n in before if not n.endswith("norm_added_q.weight")}
  assert set(after) == kept
  for name in kept:
    np.testing.assert_array_equal(after[name], before[name], err_msg=name)
  assert after["patch_embedding.weight"].shape == (32, 36, 1, 2, 2)
  back = W.load_diffusers_wan(out)
  assert back.cfg == W.load_diffusers_wan(path).cfg
  jax.tree.map(
    np.testing.assert_array_equal,
    nnx.state(back, nnx.Param),
    nnx.state(W.load_diffusers_wan(path), nnx.Param),
  )
  x, t, text, image, cond = _i2v_inputs(batch=1, thw=(2, 4, 4))
  hidden = torch.cat([x, torch.from_numpy(np.asarray(cond).transpose(0, 4, 1, 2, 3))], dim=1)
  # Without `accelerate` diffusers refuses fp32-pinned modules; in float32 that is moot.
  monkeypatch.setattr(WanTransformer3DModel, "_keep_in_fp32_modules", None, raising=False)
  again = WanTransformer3DModel.from_pretrained(out).eval()
  with torch.no_grad():
    a = again(hidden, t * 1000, text, encoder_hidden_states_image=image, return_dict=False)[0]
    b = model(hidden, t * 1000, text, encoder_hidden_states_image=image, return_dict=False)[0]
  np.testing.assert_array_equal(a.numpy(), b.numpy())
