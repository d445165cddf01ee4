"""umT5-XXL encoder, Wan 2.1's caption encoder: 24 layers of width 4,096 (64 heads of
64), gated-GELU feed-forward of 10,240, per-layer relative position biases (32 buckets,
max distance 128), 256,384-token vocabulary; 5.7B parameters. Captions of up to 512
tokens -> text embeddings [512, 4096] for the DiT's cross-attention.

The DiT config embeds `model` as its text encoder; weights come from the
`text_encoder` folder of a Wan 2.1 diffusers checkpoint (HF UMT5EncoderModel):
  python -c "from auteur_jax.convert.hf_text import load_hf_t5; \
      m = load_hf_t5('/ckpt/Wan2.1-T2V-1.3B-Diffusers/text_encoder', dtype='bfloat16')"
`auteur convert import --family umt5 --src .../text_encoder --dst ckpts/umt5 --config
paper/umt5_xxl` writes them as an orbax checkpoint on this config's mesh. On a mesh,
weights shard over fsdp (width) and tensor (heads, MLP, vocabulary) by `mesh.rules`; in
bfloat16 the encoder needs ~11.4 GB spread over the mesh.
"""

import ml_collections

from auteur_jax.config_sections import check_arg
from auteur_jax.parallel.mesh import mesh_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  check_arg(__file__, arg)
  c = ml_collections.ConfigDict()
  c.task = "text_encoder"
  c.model = ml_collections.ConfigDict(
    dict(  # models/text_encoder.py T5Config.
      vocab_size=256384,
      width=4096,
      head_dim=64,
      num_heads=64,
      mlp_dim=10240,
      depth=24,
      num_buckets=32,
      max_distance=128,
      per_layer_bias=True,
      gated=True,
      act="gelu_new",
      eps=1e-6,
      remat=False,
      dtype="bfloat16",
      param_dtype="bfloat16",
    )
  )

  c.mesh = mesh_config({"data": 1, "fsdp": -1, "tensor": 1})
  return c
