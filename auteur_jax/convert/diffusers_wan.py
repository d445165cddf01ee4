"""diffusers `WanTransformer3DModel` weights -> `models.dit.VideoDiT`.

Reads a diffusers model folder (config.json + one safetensors file, or several listed
by a `*.safetensors.index.json`), for the text-to-video and the image-conditioned
(`image_dim` / `added_kv_proj_dim`) layouts. Steps: rename -> transpose ([out, in] torch
Linear to our [in, out]) -> reshape heads -> stack the blocks on a leading layer axis ->
check every tensor against the model's abstract state -> place (optionally sharded).

Safetensors are parsed here (header + memory map) so bfloat16 checkpoints load without
torch; each tensor is read when it is converted.
"""

from __future__ import annotations

import dataclasses
import json
import os
import struct
from collections.abc import Iterator, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from flax import nnx

from auteur_jax.models.dit import (DiTConfig, VideoDiT, VisualEmbedder, block_param_specs,
                                   per_layer_init)
from auteur_jax.parallel.rules import DEFAULT_RULES, Rules, state_shardings

_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16,
           "BF16": ml_dtypes.bfloat16, "I64": np.int64, "I32": np.int32}
# Tensors diffusers itself ignores when loading.
_IGNORED_SUFFIXES = ("norm_added_q.weight",)


class SafetensorsReader(Mapping):
  """name -> np.ndarray (memory-mapped) over one or more .safetensors files."""

  def __init__(self, files: list[str]):
    self._where: dict[str, tuple[str, dict]] = {}
    for path in files:
      with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
      header.pop("__metadata__", None)
      for name, info in header.items():
        self._where[name] = (path, dict(info, base=8 + n))

  def __getitem__(self, name: str) -> np.ndarray:
    if name not in self._where:
      raise KeyError(f"tensor {name!r} not in the checkpoint")
    path, info = self._where[name]
    if info["dtype"] not in _DTYPES:
      raise ValueError(f"{path}: tensor {name} has unsupported dtype {info['dtype']}")
    start, end = info["data_offsets"]
    dtype = np.dtype(_DTYPES[info["dtype"]])
    count = (end - start) // dtype.itemsize
    arr = np.memmap(path, dtype=dtype, mode="r", offset=info["base"] + start, shape=(count,))
    return arr.reshape(info["shape"])

  def __iter__(self) -> Iterator[str]:
    return iter(self._where)

  def __len__(self) -> int:
    return len(self._where)


def open_checkpoint(path: str) -> tuple[dict[str, Any], SafetensorsReader]:
  """(config.json dict, tensor reader) of a diffusers model folder."""
  config_path = os.path.join(path, "config.json")
  if not os.path.isfile(config_path):
    raise FileNotFoundError(f"{path}: no config.json (expected a diffusers model folder)")
  with open(config_path) as f:
    config = json.load(f)
  index = [n for n in os.listdir(path) if n.endswith(".safetensors.index.json")]
  if index:
    with open(os.path.join(path, index[0])) as f:
      weight_map = json.load(f)["weight_map"]
    files = sorted({os.path.join(path, v) for v in weight_map.values()})
  else:
    files = sorted(os.path.join(path, n) for n in os.listdir(path) if n.endswith(".safetensors"))
  if not files:
    raise FileNotFoundError(f"{path}: no .safetensors files")
  missing = [f for f in files if not os.path.isfile(f)]
  if missing:
    raise FileNotFoundError(f"{path}: shards listed in the index are missing: {missing}")
  return config, SafetensorsReader(files)


def config_from_diffusers(config: Mapping[str, Any], **overrides: Any) -> DiTConfig:
  """DiTConfig for a diffusers WanTransformer3DModel config.json; `overrides` win."""
  cls = config.get("_class_name", "WanTransformer3DModel")
  if cls != "WanTransformer3DModel":
    raise ValueError(f"config.json: _class_name is {cls!r}, expected 'WanTransformer3DModel'")
  qk_norm = config.get("qk_norm", "rms_norm_across_heads")
  if qk_norm != "rms_norm_across_heads":
    raise ValueError(f"config.json: qk_norm {qk_norm!r} unsupported; "
                     "expected 'rms_norm_across_heads'")
  heads, head_dim = config.get("num_attention_heads", 40), config.get("attention_head_dim", 128)
  image_dim = config.get("image_dim") or 0
  added = config.get("added_kv_proj_dim")
  if image_dim and added != heads * head_dim:
    raise ValueError(f"config.json: added_kv_proj_dim must equal heads x head_dim = "
                     f"{heads * head_dim} when image_dim is set, got {added}")
  if added and not image_dim:
    raise ValueError("config.json: added_kv_proj_dim set without image_dim")
  fields = dict(
      patch_size=tuple(config.get("patch_size", (1, 2, 2))), num_heads=heads,
      head_dim=head_dim, in_channels=config.get("in_channels", 16),
      out_channels=config.get("out_channels") or config.get("in_channels", 16),
      text_dim=config.get("text_dim", 4096), freq_dim=config.get("freq_dim", 256),
      ffn_dim=config.get("ffn_dim", 13824), num_layers=config.get("num_layers", 40),
      cross_attn_norm=bool(config.get("cross_attn_norm", True)), eps=config.get("eps", 1e-6),
      visual_dim=image_dim, visual_pos_len=config.get("pos_embed_seq_len") or 0,
      rope_max_len=config.get("rope_max_seq_len", 1024))
  fields.update(overrides)
  return DiTConfig.from_dict(fields)


def _linear(w: np.ndarray) -> np.ndarray:
  return np.asarray(w).T


def _heads_in(w: np.ndarray, h: int) -> np.ndarray:
  """torch [H*K, D] -> ours [D, H, K]."""
  return np.asarray(w).T.reshape(w.shape[1], h, -1)


def convert_tensors(tensors: Mapping[str, np.ndarray], cfg: DiTConfig) -> dict[str, np.ndarray]:
  """Flat dict 'a/b/c' -> array in our layout; raises on missing or unexpected tensors."""
  used: set[str] = set()

  def get(name: str) -> np.ndarray:
    if name not in tensors:
      raise KeyError(f"diffusers checkpoint: missing tensor {name!r}")
    used.add(name)
    return np.asarray(tensors[name])

  h, d = cfg.num_heads, cfg.width
  out: dict[str, np.ndarray] = {}
  pe = get("patch_embedding.weight")  # [D, C, pt, ph, pw] -> [pt*ph*pw*C, D]
  out["patch_embed/kernel"] = pe.transpose(2, 3, 4, 1, 0).reshape(-1, pe.shape[0])
  out["patch_embed/bias"] = get("patch_embedding.bias")
  ce = "condition_embedder."
  pairs = {"time_fc1": ce + "time_embedder.linear_1", "time_fc2": ce + "time_embedder.linear_2",
           "text_fc1": ce + "text_embedder.linear_1", "text_fc2": ce + "text_embedder.linear_2",
           "head": "proj_out"}
  if cfg.visual_dim:
    ie = ce + "image_embedder."
    pairs.update({"visual_embed/fc1": ie + "ff.net.0.proj", "visual_embed/fc2": ie + "ff.net.2"})
    for ours, theirs in (("norm1", "norm1"), ("norm2", "norm2")):
      out[f"visual_embed/{ours}_scale"] = get(f"{ie}{theirs}.weight")
      out[f"visual_embed/{ours}_bias"] = get(f"{ie}{theirs}.bias")
    if cfg.visual_pos_len:
      out["visual_embed/pos_embed"] = get(ie + "pos_embed")[0]
  for ours, theirs in pairs.items():
    out[f"{ours}/kernel"] = _linear(get(theirs + ".weight"))
    out[f"{ours}/bias"] = get(theirs + ".bias")
  out["time_proj"] = _linear(get(ce + "time_proj.weight")).reshape(d, 6, d)
  out["time_proj_bias"] = get(ce + "time_proj.bias").reshape(6, d)
  out["head_modulation"] = get("scale_shift_table").reshape(2, d)

  layers = [_convert_block(get, f"blocks.{i}.", cfg) for i in range(cfg.num_layers)]
  for name in layers[0]:
    out[f"blocks/{name}"] = np.stack([layer[name] for layer in layers])

  unexpected = sorted(n for n in tensors if n not in used and not n.endswith(_IGNORED_SUFFIXES))
  if unexpected:
    raise ValueError(f"diffusers checkpoint: {len(unexpected)} unexpected tensors for this "
                     f"config (visual_dim={cfg.visual_dim}, num_layers={cfg.num_layers}): "
                     f"{unexpected[:8]}")
  return out


def _convert_block(get, pre: str, cfg: DiTConfig) -> dict[str, np.ndarray]:
  h = cfg.num_heads
  hk = (h, cfg.head_dim)

  def fused(names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """torch Linears [H*K, D] -> our fused kernel [D, n, H, K] and bias [n, H, K]."""
    w = np.stack([_heads_in(get(pre + n + ".weight"), h) for n in names], axis=1)
    b = np.stack([get(pre + n + ".bias").reshape(hk) for n in names])
    return w, b

  p = {"modulation": get(pre + "scale_shift_table").reshape(6, cfg.width)}
  p["sa_qkv"], p["sa_qkv_bias"] = fused(["attn1.to_q", "attn1.to_k", "attn1.to_v"])
  p["ca_q"], p["ca_q_bias"] = fused(["attn2.to_q"])
  p["ca_kv"], p["ca_kv_bias"] = fused(["attn2.to_k", "attn2.to_v"])
  for ours, theirs in (("sa", "attn1."), ("ca", "attn2.")):
    p[f"{ours}_q_norm"] = get(f"{pre}{theirs}norm_q.weight").reshape(hk)
    p[f"{ours}_k_norm"] = get(f"{pre}{theirs}norm_k.weight").reshape(hk)
    w = get(f"{pre}{theirs}to_out.0.weight")  # [D, H*K] -> [H, K, D]
    p[f"{ours}_out"] = w.T.reshape(*hk, w.shape[0])
    p[f"{ours}_out_bias"] = get(f"{pre}{theirs}to_out.0.bias")
  if cfg.cross_attn_norm:
    p["ca_norm_scale"] = get(pre + "norm2.weight")
    p["ca_norm_bias"] = get(pre + "norm2.bias")
  if cfg.visual_dim:
    p["ca_vkv"], p["ca_vkv_bias"] = fused(["attn2.add_k_proj", "attn2.add_v_proj"])
    p["ca_vk_norm"] = get(pre + "attn2.norm_added_k.weight").reshape(hk)
  p["ffn_up"] = _linear(get(pre + "ffn.net.0.proj.weight"))
  p["ffn_up_bias"] = get(pre + "ffn.net.0.proj.bias")
  p["ffn_down"] = _linear(get(pre + "ffn.net.2.weight"))
  p["ffn_down_bias"] = get(pre + "ffn.net.2.bias")
  return p


def new_visual_branch(cfg: DiTConfig, seed: int = 0) -> dict[str, jax.Array]:
  """Fresh weights "path/to/param" -> array of the visual branch (embedder and per-block
  visual keys/values) for adding visual conditioning to a text-only model. The visual
  value projection starts at zero: the model first predicts what the text-only one did.
  """
  if not cfg.visual_dim:
    raise ValueError("new_visual_branch: config.model.visual_dim must be > 0")

  @jax.jit  # One compiled init instead of one per parameter shape.
  def init():
    rngs = nnx.Rngs(seed)
    with nnx.use_eager_sharding(False):
      embed = VisualEmbedder(cfg, rngs)
    out = {f"visual_embed/{'/'.join(str(k) for k in key)}": v[...]
           for key, v in nnx.to_flat_state(nnx.state(embed, nnx.Param))}
    shapes = block_param_specs(cfg)
    for name in ("ca_vkv", "ca_vkv_bias", "ca_vk_norm"):
      shape, _, fn = shapes[name]
      out[f"blocks/{name}"] = per_layer_init(fn)(rngs.params(), (cfg.num_layers, *shape),
                                             jnp.dtype(cfg.param_dtype))
    out["blocks/ca_vkv"] = out["blocks/ca_vkv"].at[:, :, 1].set(0.0)  # [L, D, (k, v), H, K]
    out["blocks/ca_vkv_bias"] = out["blocks/ca_vkv_bias"].at[:, 1].set(0.0)
    return out

  return init()


def load_diffusers_wan(path: str, *, mesh: jax.sharding.Mesh | None = None,
                       rules: Rules = DEFAULT_RULES, add_visual_dim: int = 0, seed: int = 0,
                       **overrides: Any) -> VideoDiT:
  """A VideoDiT holding the weights of the diffusers model folder `path`.

  overrides: DiTConfig fields that do not change shapes (dtype, param_dtype, remat,
  scan_layers). With `mesh`, each weight is placed with its logical sharding (`rules`).
  add_visual_dim: start VideoAuteur's visual conditioning from a text-to-video checkpoint:
  adds a visual branch for tokens of this width (`new_visual_branch`, seeded by
  `seed`) that leaves the predictions unchanged until it is trained.
  """
  config, tensors = open_checkpoint(path)
  cfg = config_from_diffusers(config, **overrides)
  if add_visual_dim:
    if cfg.visual_dim:
      raise ValueError(f"{path}: add_visual_dim is for text-to-video checkpoints; this one "
                       f"has an image branch (image_dim={cfg.visual_dim})")
    converted = convert_tensors(tensors, cfg)
    cfg = dataclasses.replace(cfg, visual_dim=add_visual_dim)
    converted.update({k: np.asarray(v) for k, v in new_visual_branch(cfg, seed).items()})
  else:
    converted = convert_tensors(tensors, cfg)
  with nnx.use_eager_sharding(False):
    abstract = nnx.eval_shape(lambda: VideoDiT(cfg, rngs=nnx.Rngs(0)))
  graphdef, state = nnx.split(abstract)
  shardings = state_shardings(state, mesh, rules) if mesh is not None else None
  flat_shardings = dict(nnx.to_flat_state(shardings)) if shardings is not None else {}
  flat = nnx.to_flat_state(state)
  seen = set()
  for key, var in flat:
    name = "/".join(str(k) for k in key)
    if name not in converted:
      raise KeyError(f"{path}: no converted weight for model parameter {name!r}")
    arr = converted[name]
    if arr.shape != var.shape:
      raise ValueError(f"{path}: weight {name}: expected shape {var.shape}, got {arr.shape} "
                       "(config.json does not describe these tensors)")
    arr = np.asarray(arr, dtype=var.dtype)
    sharding = flat_shardings.get(key)
    if isinstance(sharding, nnx.Variable):  # state_shardings keeps the Variable wrappers.
      sharding = sharding.get_value()
    var.set_value(jax.device_put(arr, sharding) if sharding is not None else jnp.asarray(arr))
    seen.add(name)
  extra = sorted(set(converted) - seen)
  if extra:  # A converter bug, not a user error: the two layouts disagree.
    raise AssertionError(f"converted weights the model does not have: {extra}")
  return nnx.merge(graphdef, nnx.from_flat_state(flat))
