"""Video DiT: patches, 3-D RoPE, shapes and errors, layer-loop variants, sharded forward."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from auteur_jax.models import dit, layers
from auteur_jax.parallel import rules as R
from auteur_jax.parallel.mesh import make_mesh

CFG = dit.DiTConfig(
  patch_size=(1, 2, 2),
  in_channels=4,
  out_channels=3,
  num_heads=2,
  head_dim=12,
  ffn_dim=32,
  num_layers=2,
  text_dim=16,
  freq_dim=8,
  visual_dim=20,
)


@functools.cache
def _random_state(cfg=CFG, seed=0):
  """Random weights from numpy on the model's abstract state (compiling the real init
  costs seconds per config; test_init_and_logical_axes covers it)."""
  with nnx.use_eager_sharding(False):
    abstract = nnx.eval_shape(lambda: dit.VideoDiT(cfg, rngs=nnx.Rngs(0)))
  graphdef, state = nnx.split(abstract)
  rng = np.random.default_rng(seed)

  def fill(path, var):
    norm = str(path[-1]).endswith(("_norm", "_scale"))
    value = (1.0 if norm else 0.0) + rng.normal(0, 0.1 if norm else 0.2, var.shape)
    return var.replace(jnp.asarray(value, var.dtype))

  state = nnx.from_flat_state([(p, fill(p, v)) for p, v in nnx.to_flat_state(state)])
  return graphdef, state


def _build(cfg=CFG, seed=0, shardings=None):
  graphdef, state = _random_state(cfg, seed)
  if shardings is not None:
    state = jax.device_put(state, shardings)
  return nnx.merge(graphdef, state)


_fwd = nnx.jit(lambda model, *args: model(*args))


def _inputs(b=2, t=3, h=4, w=6, lt=5, k=4, cfg=CFG, seed=0):
  ks = jax.random.split(jax.random.key(seed), 4)
  return (
    jax.random.normal(ks[0], (b, t, h, w, cfg.in_channels)),
    jax.random.uniform(ks[1], (b,)),
    jax.random.normal(ks[2], (b, lt, cfg.text_dim)),
    jax.random.normal(ks[3], (b, k, cfg.visual_dim)),
  )


@pytest.mark.parametrize(
  "shape,patch", [((2, 3, 4, 6, 5), (1, 2, 2)), ((1, 4, 6, 2, 3), (2, 3, 1))]
)
def test_patchify_round_trip(shape, patch):
  x = jax.random.normal(jax.random.key(0), shape)
  tokens = dit.patchify(x, patch)
  grid = dit.patch_grid(shape, patch)
  assert tokens.shape == (shape[0], int(np.prod(grid)), int(np.prod(patch)) * shape[-1])
  np.testing.assert_array_equal(dit.unpatchify(tokens, grid, patch), x)
  # Token 1 is the next patch along the width: its first value is x[0, 0, 0, pw, 0].
  assert float(tokens[0, 1, 0]) == float(x[0, 0, 0, patch[2], 0])


def test_patch_errors():
  with pytest.raises(ValueError, match="height 5 is not divisible by patch size 2"):
    dit.patch_grid((1, 2, 5, 4, 3), (1, 2, 2))
  with pytest.raises(ValueError, match=r"expected \[B, T, H, W, C\]"):
    dit.patch_grid((2, 4, 4, 3), (1, 2, 2))


def test_rope_3d_split_and_relative_positions():
  assert layers.rope_3d_split(128) == (44, 42, 42)  # Wan 2.1's 128-channel heads.
  assert layers.rope_3d_split(12) == (4, 4, 4)
  grid = (3, 4, 5)
  cos, sin = layers.rope_3d_tables(grid, 12)
  assert cos.shape == (60, 6)
  np.testing.assert_allclose(cos**2 + sin**2, 1.0, rtol=1e-6)
  rng = np.random.default_rng(0)
  q = jnp.asarray(rng.normal(size=(1, 60, 1, 12)), jnp.float32)
  k = jnp.asarray(rng.normal(size=(1, 60, 1, 12)), jnp.float32)
  qr = layers.apply_rope_interleaved(jnp.broadcast_to(q[:, :1], q.shape), cos, sin)
  kr = layers.apply_rope_interleaved(jnp.broadcast_to(k[:, :1], k.shape), cos, sin)
  idx = lambda f, h, w: (f * grid[1] + h) * grid[2] + w  # noqa: E731
  dot = lambda a, b: float(jnp.sum(qr[0, idx(*a)] * kr[0, idx(*b)]))  # noqa: E731
  # Scores depend on the offset along each axis only, and each axis matters.
  assert dot((0, 1, 2), (1, 2, 0)) == pytest.approx(dot((1, 2, 3), (2, 3, 1)), rel=1e-4)
  for other in ((1, 1, 2), (0, 2, 2), (0, 1, 3)):
    assert dot((0, 0, 0), (0, 0, 0)) != pytest.approx(dot((0, 1, 2), other), rel=1e-3)
  # Channel pair 0 turns with the frame index at frequency 1.
  f1 = idx(1, 0, 0)
  np.testing.assert_allclose([cos[f1, 0], sin[f1, 0]], [np.cos(1.0), np.sin(1.0)], rtol=1e-6)


@pytest.mark.parametrize("thw", [(3, 4, 6), (1, 8, 2)])
def test_forward_shapes_variable_video(thw):
  model = _build()
  x, t, text, vis = _inputs(t=thw[0], h=thw[1], w=thw[2])
  out = _fwd(model, x, t, text, vis)
  assert out.shape == (*x.shape[:4], CFG.out_channels)
  assert bool(jnp.all(jnp.isfinite(out)))
  # Visual tokens and text change the prediction; so does t.
  assert not np.allclose(out, _fwd(model, x, t, text, jnp.zeros_like(vis)))
  assert not np.allclose(out, _fwd(model, x, t, 0 * text, vis))
  assert not np.allclose(out, _fwd(model, x, 1 - t, text, vis))
  assert dit.count_params(model) > 0


def test_config_and_input_errors():
  with pytest.raises(ValueError, match="config.model: unknown key 'num_head'"):
    dit.DiTConfig.from_dict({"num_head": 4})
  with pytest.raises(ValueError, match="remat"):
    dit.DiTConfig.from_dict({"remat": "sometimes"})
  with pytest.raises(ValueError, match=r"config.model.attention: expected one of \('full'"):
    dit.DiTConfig.from_dict({"attention": "flash"})
  with pytest.raises(ValueError, match="config.model.attention_block: expected >= 1"):
    dit.DiTConfig.from_dict({"attention": "blockwise", "attention_block": 0})
  assert dit.DiTConfig.from_dict(dataclasses.asdict(CFG)) == CFG
  with pytest.raises(ValueError, match=r"config.model.patch_size: expected 3 values"):
    dit.DiTConfig.from_dict({"patch_size": [1, 2]})
  model = _build()
  x, t, text, vis = _inputs()
  with pytest.raises(ValueError, match="expected 4 channels"):
    model(x[..., :3], t, text, vis)
  with pytest.raises(ValueError, match=r"text: expected \[2, L, 16\]"):
    model(x, t, text[..., :8], vis)
  with pytest.raises(ValueError, match="visual: expected"):
    model(x, t, text, vis[..., :3])
  text_only = _build(dataclasses.replace(CFG, visual_dim=0))
  with pytest.raises(ValueError, match="text-only DiT"):
    text_only(x, t, text, vis)


# Keyframe-conditioned: 3 latent channels + 4 mask + 3 keyframe-latent channels.
KF = dataclasses.replace(CFG, in_channels=10, visual_condition="keyframe")


def test_keyframe_config_errors():
  with pytest.raises(ValueError, match=r"config.model.visual_condition: expected one of"):
    dit.DiTConfig.from_dict({"visual_condition": "image"})
  with pytest.raises(ValueError, match=r"config.model.in_channels: .* = 10, got 4"):
    dit.DiTConfig.from_dict({**dataclasses.asdict(CFG), "visual_condition": "both"})
  with pytest.raises(ValueError, match="'both' needs visual_dim > 0"):
    dit.DiTConfig.from_dict({**dataclasses.asdict(KF), "visual_dim": 0, "visual_condition": "both"})
  assert dit.DiTConfig.from_dict({**dataclasses.asdict(KF), "visual_dim": 0}).keyframe
  assert (KF.condition_channels, CFG.condition_channels) == (7, 0)


def test_keyframe_dit_joins_the_condition_after_the_latents():
  """The keyframe model is the in_channels-10 model fed [latents, condition] on the
  channel axis (diffusers' torch.cat([latents, condition], dim=1)); its input errors."""
  x, t, text, vis = _inputs(cfg=KF)
  latents, cond = x[..., :3], x[..., 3:]
  out = _fwd(_build(KF), latents, t, text, vis, cond)
  plain = _build(dataclasses.replace(KF, visual_condition="embedding"))  # Same weights.
  np.testing.assert_allclose(out, _fwd(plain, x, t, text, vis), rtol=1e-6, atol=1e-6)
  assert out.shape == (*x.shape[:4], 3)
  model = _build(KF)
  with pytest.raises(ValueError, match=r"keyframe-conditioned .* condition \[B, T, H, W, 7\]"):
    model(latents, t, text, vis)
  with pytest.raises(ValueError, match=r"condition: expected shape \(2, 3, 4, 6, 7\)"):
    model(latents, t, text, vis, cond[:, :2])
  with pytest.raises(ValueError, match="expected 3 channels"):
    model(x, t, text, vis, cond)
  with pytest.raises(ValueError, match="condition given to a DiT without keyframe input"):
    _build()(x, t, text, vis, cond)


def test_widened_patch_kernel_keeps_the_narrow_models_predictions():
  """dit.widen_patch_kernel: an embedding DiT's weights with zero weights for the new
  keyframe channels predict what it did, whatever the condition holds."""
  narrow = _build(dataclasses.replace(CFG, in_channels=3))
  graphdef, state = nnx.split(_build(KF))
  kernel = dit.widen_patch_kernel(narrow.patch_embed.kernel[...], KF.patch_size, 10)
  assert kernel.shape == state["patch_embed"]["kernel"].shape
  flat = dict(nnx.to_flat_state(nnx.state(narrow)))
  flat[("patch_embed", "kernel")] = flat[("patch_embed", "kernel")].replace(kernel)
  wide = nnx.merge(graphdef, nnx.from_flat_state(list(flat.items())))
  x, t, text, vis = _inputs(cfg=KF)
  np.testing.assert_allclose(
    _fwd(wide, x[..., :3], t, text, vis, x[..., 3:]),
    _fwd(narrow, x[..., :3], t, text, vis),
    rtol=1e-6,
    atol=1e-6,
  )
  with pytest.raises(ValueError, match=r"expected \[4 x C, D\] with C <= 2"):
    dit.widen_patch_kernel(kernel, KF.patch_size, 2)


@pytest.mark.integration
def test_layer_loop_variants_agree():
  """Scanned, rematerialised layers and blockwise self-attention give the plain unrolled
  loss and gradients."""
  x, t, text, vis = _inputs()  # 18 tokens: blocks of 5 keys leave a padded last block.
  results = {}
  for scan, remat, attention in (
    (False, "none", "full"),
    (True, "names", "full"),
    (True, "names", "blockwise"),
    (False, "full", "blockwise"),
  ):
    model = _build(
      dataclasses.replace(
        CFG, scan_layers=scan, remat=remat, attention=attention, attention_block=5
      )
    )
    graphdef, params = nnx.split(model)

    def loss(p, graphdef=graphdef):
      return jnp.mean(nnx.merge(graphdef, p)(x, t, text, vis) ** 2)

    results[(scan, remat, attention)] = jax.jit(jax.value_and_grad(loss))(params)
  ref_loss, ref_grad = results[(False, "none", "full")]  # Plain autodiff, unrolled layers.
  for key, (val, grad) in results.items():
    np.testing.assert_allclose(val, ref_loss, rtol=1e-5, err_msg=str(key))
    jax.tree.map(
      lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-6), grad, ref_grad
    )
  assert float(jnp.abs(ref_grad["blocks"]["ca_vkv"][...]).sum()) > 0  # Visual path trains.


@pytest.mark.integration
def test_init_and_logical_axes():
  with nnx.use_eager_sharding(False):
    model = nnx.jit(lambda: dit.VideoDiT(CFG, rngs=nnx.Rngs(0)))()
  assert bool(jnp.all(model.blocks.sa_q_norm[...] == 1.0))
  assert float(jnp.std(model.blocks.ffn_up[...])) == pytest.approx(CFG.width**-0.5, rel=0.1)
  for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
    names = var.get_metadata().get("out_sharding")
    assert names is not None and len(names) == var.ndim, (path, names)
    if path[0] == "blocks":
      assert names[0] == "layers", path


@pytest.mark.integration
@pytest.mark.parametrize(
  "axes,attention",
  [
    ({"data": 2, "fsdp": 2, "tensor": 2}, "full"),
    ({"data": 2, "context": 2, "tensor": 2}, "full"),
    ({"data": 2, "context": 2, "tensor": 2}, "blockwise"),
    ({"data": 2, "context": 2, "tensor": 2}, "full:ring"),
    ({"data": 1, "context": 4, "fsdp": 2}, "full:ring"),
    ({"data": 2, "context": 2, "fsdp": 2}, "blockwise:all_to_all"),
  ],
)
def test_sharded_forward_equals_single_device(axes, attention):
  x, t, text, vis = _inputs(b=2, t=2, h=4, w=4)
  ref = _fwd(_build(), x, t, text, vis)
  mesh = make_mesh(axes)
  attention, _, strategy = attention.partition(":")
  cfg = dataclasses.replace(
    CFG, attention=attention, attention_block=3, context_parallel=strategy or "xla"
  )
  shardings = R.state_shardings(_random_state(cfg)[1], mesh)  # From the logical names.
  model = _build(cfg, shardings=shardings)
  with R.use_mesh(mesh):
    out = _fwd(model, x, t, text, vis)
  qkv = model.blocks.sa_qkv[...]
  assert len({s.device for s in qkv.addressable_shards}) == 8
  spec = tuple(qkv.sharding.spec) + (None,) * (qkv.ndim - len(qkv.sharding.spec))
  tensor = "tensor" if "tensor" in axes else None
  embed = tuple(a for a in ("fsdp", "context") if a in axes)  # Weights split over both.
  assert spec == (None, embed[0] if len(embed) == 1 else embed or None, None, tensor, None)
  np.testing.assert_allclose(np.asarray(out), np.asarray(ref), rtol=1e-5, atol=1e-5)
