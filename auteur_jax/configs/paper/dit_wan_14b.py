"""Visual-conditioned DiT at Wan 2.1 14B shapes: 40 blocks of width 5120 (40 heads x
128), MLP 13824; everything else as paper/dit_wan_1_3b (data, Table 12
training, visual branch added to the text-to-video checkpoint).
  auteur convert import --family wan_dit --config paper/dit_wan_14b \
      --src /path/to/Wan2.1-T2V-14B-Diffusers/transformer --dst ckpts/wan_14b
  auteur train --config paper/dit_wan_14b --workdir gs://.../dit14b \
      --config.init.checkpoint=ckpts/wan_14b --config.data.dir=gs://.../cookgen
Weights are sharded over fsdp and the heads / MLP over tensor (4 ways here; 40 heads
also split 8 ways); long clips can add a `context` axis for the token dimension.

`paper/dit_wan_14b:720p`: Wan's 720p clips, 81 frames of 720 x 1280 -> latents 21 x 90 x
160 -> 75,600 tokens per clip (the batch stays the paper's 64).
"""

import os

import ml_collections

from auteur_jax.config import load_module_config
from auteur_jax.config_sections import check_arg


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  check_arg(__file__, arg, ("720p",))
  here = os.path.dirname(os.path.abspath(__file__))
  c = load_module_config(os.path.join(here, "dit_wan_1_3b.py"))
  c.model.num_heads = 40
  c.model.ffn_dim = 13824
  c.model.num_layers = 40
  c.mesh.shape = ml_collections.ConfigDict({"data": 1, "fsdp": -1, "tensor": 4, "context": 1})
  if arg == "720p":
    del c.data.size  # A side -> (height, width): ConfigDict keeps a field's first type.
    c.data.size = (720, 1280)
  return c
