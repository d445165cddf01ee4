"""`auteur convert` import -> export for every family: a tiny random reference model saved
by transformers / diffusers comes back bit-identical, in shards with an index, and loads
with `from_pretrained` giving the same outputs; sharded input converts as one file."""

import glob
import json
import os

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from auteur_jax.checkpoint import layout, orbax_io
from auteur_jax.convert import families
from auteur_jax.convert.exporter import export_weights
from auteur_jax.convert.importer import import_weights

MESH = {"data": 2, "fsdp": 2, "tensor": 2}


def _perturbed(model):
  torch.manual_seed(1)
  with torch.no_grad():  # Random norms / biases too: every tensor matters.
    for p in model.parameters():
      p.add_(0.05 * torch.randn_like(p))
  return model.eval()


def _llama():
  import transformers

  cfg = transformers.LlamaConfig(
    vocab_size=96,
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
  )
  return transformers.LlamaForCausalLM(cfg), lambda m: m(torch.arange(12)[None] % 96).logits


def _qwen2():
  import transformers

  cfg = transformers.Qwen2Config(
    vocab_size=96,
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    tie_word_embeddings=True,
  )
  return transformers.Qwen2ForCausalLM(cfg), lambda m: m(torch.arange(12)[None] % 96).logits


def _wan_dit():
  from diffusers import WanTransformer3DModel

  model = WanTransformer3DModel(
    patch_size=(1, 2, 2),
    num_attention_heads=2,
    attention_head_dim=12,
    in_channels=4,
    out_channels=4,
    text_dim=16,
    freq_dim=8,
    ffn_dim=32,
    num_layers=2,
    rope_max_seq_len=32,
    image_dim=16,
    added_kv_proj_dim=24,
  )
  g = torch.Generator().manual_seed(0)
  x, text = torch.randn(1, 4, 2, 4, 4, generator=g), torch.randn(1, 512, 16, generator=g)
  image = torch.randn(1, 4, 16, generator=g)
  return model, lambda m: m(
    x, torch.tensor([500.0]), text, encoder_hidden_states_image=image, return_dict=False
  )[0]


def _wan_vae():
  from diffusers import AutoencoderKLWan

  model = AutoencoderKLWan(
    base_dim=8,
    z_dim=4,
    dim_mult=[1, 2, 2, 2],
    num_res_blocks=1,
    temperal_downsample=[False, True, True],
    latents_mean=[0.0] * 4,
    latents_std=[1.0] * 4,
  )
  x = torch.rand(1, 3, 5, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
  return model, lambda m: m.decode(m.encode(x).latent_dist.mean).sample


_VISION = dict(
  hidden_size=32,
  intermediate_size=64,
  num_hidden_layers=2,
  num_attention_heads=4,
  image_size=32,
  patch_size=8,
)
_PIXELS = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def _clip_vision():
  from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

  model = CLIPVisionModelWithProjection(CLIPVisionConfig(**_VISION, projection_dim=16))
  return model, lambda m: m(pixel_values=_PIXELS).image_embeds


def _siglip_vision():
  from transformers import SiglipVisionConfig, SiglipVisionModel

  model = SiglipVisionModel(SiglipVisionConfig(**_VISION))
  return model, lambda m: m(pixel_values=_PIXELS).pooler_output


def _clip_text():
  from transformers import CLIPTextConfig, CLIPTextModelWithProjection

  model = CLIPTextModelWithProjection(
    CLIPTextConfig(
      hidden_size=32,
      intermediate_size=64,
      num_hidden_layers=2,
      num_attention_heads=4,
      vocab_size=100,
      max_position_embeddings=16,
      projection_dim=16,
      eos_token_id=50,
    )
  )
  ids = torch.tensor([[98, 5, 6, 7, 50, 0], [98, 9, 10, 11, 12, 50]])
  return model, lambda m: m(input_ids=ids).text_embeds


_T5 = dict(
  vocab_size=48,
  d_model=16,
  d_kv=4,
  d_ff=32,
  num_heads=4,
  num_layers=2,
  relative_attention_num_buckets=8,
  relative_attention_max_distance=20,
)
_IDS = torch.randint(1, 48, (2, 30), generator=torch.Generator().manual_seed(2))


def _t5():
  from transformers import T5Config, T5EncoderModel

  model = T5EncoderModel(T5Config(**_T5, feed_forward_proj="gated-gelu"))
  return model, lambda m: m(input_ids=_IDS).last_hidden_state


def _umt5():
  from transformers import UMT5Config, UMT5EncoderModel

  return UMT5EncoderModel(UMT5Config(**_T5)), lambda m: m(input_ids=_IDS).last_hidden_state


REFERENCES = {
  "llama": _llama,
  "qwen2": _qwen2,
  "wan_dit": _wan_dit,
  "wan_vae": _wan_vae,
  "clip_vision": _clip_vision,
  "siglip_vision": _siglip_vision,
  "clip_text": _clip_text,
  "t5": _t5,
  "umt5": _umt5,
}


def save_reference(family, path, **save_kw):
  torch.manual_seed(0)
  model, run = REFERENCES[family]()
  model = _perturbed(model)
  model.save_pretrained(path, **save_kw)
  return model, run


def _tensors(folder):
  out = {}
  for f in sorted(glob.glob(os.path.join(folder, "*.safetensors"))):
    out.update(load_file(f))
  return out


@pytest.mark.parametrize("family", sorted(REFERENCES))
def test_import_export_round_trip(tmp_path, monkeypatch, family):
  ref, run = save_reference(family, tmp_path / "ref")
  summary = import_weights(
    family, str(tmp_path / "ref"), str(tmp_path / "ckpt"), mesh_shape=MESH, progress=False
  )
  assert summary["params"] > 0 and summary["mesh"] == MESH
  export_weights(
    family, str(tmp_path / "ckpt"), str(tmp_path / "out"), max_shard_bytes=16_000, progress=False
  )
  fam = families.get(family)
  index = tmp_path / "out" / f"{fam.stem}.safetensors.index.json"
  with open(index) as f:  # Sharded at the size limit, with the reference library's index.
    weight_map = json.load(f)["weight_map"]
  assert len(set(weight_map.values())) > 1
  before, after = _tensors(tmp_path / "ref"), _tensors(tmp_path / "out")
  kept = {n for n in before if not fam.ignore(n) or n in after}
  assert set(after) == kept, sorted(set(after) ^ kept)
  for name in kept:  # Bit-identical.
    assert after[name].dtype == before[name].dtype, name
    np.testing.assert_array_equal(after[name], before[name], err_msg=name)
  # Without `accelerate`, diffusers refuses classes with fp32-pinned modules; in float32
  # the pinning changes nothing.
  monkeypatch.setattr(type(ref), "_keep_in_fp32_modules", None, raising=False)
  back = type(ref).from_pretrained(str(tmp_path / "out")).eval()
  with torch.no_grad():
    np.testing.assert_allclose(run(back).numpy(), run(ref).numpy(), rtol=0, atol=1e-5)


@pytest.mark.parametrize("family", ["llama", "wan_dit"])
def test_sharded_input_converts_like_one_file(tmp_path, family):
  ref, _ = save_reference(family, tmp_path / "one")
  ref.save_pretrained(tmp_path / "many", max_shard_size="20KB")
  assert glob.glob(str(tmp_path / "many" / "*.safetensors.index.json"))
  assert len(glob.glob(str(tmp_path / "many" / "*.safetensors"))) > 2
  for name in ("one", "many"):
    import_weights(
      family,
      str(tmp_path / name),
      str(tmp_path / f"ckpt_{name}"),
      mesh_shape={"fsdp": 8},
      progress=False,
    )
  a, b = (layout.find_step_dir(str(tmp_path / f"ckpt_{n}")) for n in ("one", "many"))
  meta_a, meta_b = orbax_io.tree_metadata(f"{a}/state"), orbax_io.tree_metadata(f"{b}/state")
  assert set(meta_a) == set(meta_b)
  for key in meta_a:  # Same bytes in every zarr chunk of every parameter.
    name = ".".join(key)
    files_a = sorted(os.listdir(f"{a}/state/{name}"))
    assert files_a == sorted(os.listdir(f"{b}/state/{name}"))
    for f in files_a:
      with open(f"{a}/state/{name}/{f}", "rb") as x, open(f"{b}/state/{name}/{f}", "rb") as y:
        assert x.read() == y.read(), (name, f)
