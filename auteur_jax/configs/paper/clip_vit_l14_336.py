"""OpenAI CLIP ViT-L/14 at 336 px as the director's visual space: the 24 x 24 patch
tokens of the penultimate block average-pooled to 8 x 8 = K = 64 tokens of D = 1024
(SEED-X pools a ViT-G's 256 tokens to 64 the same way). The text tower (12 x 768) is
only needed to train or fine-tune the pair.

  auteur encode --config paper/clip_vit_l14_336 \
      --config.init.hf_vision=/ckpt/clip-vit-large-patch14-336 \
      --config.encode.in_dir=gs://.../cookgen_vae --config.encode.out_dir=gs://.../cookgen_enc
It prints a progress bar per split, then
`encoded N clip shards (0 skipped) -> ...: visual_embedding (64, 1024) bfloat16`.
`:siglip` gives SigLIP so400m/14 at 384 px instead (27 x 27 tokens -> 64 by adaptive
pooling, D = 1152); its text tower is not the CLIP one, so that config holds only the
vision tower (all `auteur encode` uses; it cannot be trained).
"""

import ml_collections

from auteur_jax.config_sections import check_arg
from auteur_jax.parallel.mesh import mesh_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  check_arg(__file__, arg, ("siglip",))
  c = ml_collections.ConfigDict()
  c.task = "clip"
  m = c.model = ml_collections.ConfigDict()
  if arg == "siglip":
    m.vision = ml_collections.ConfigDict(
      dict(
        family="siglip",
        image_size=384,
        patch_size=14,
        width=1152,
        depth=27,
        num_heads=16,
        mlp_dim=4304,
        act="gelu_pytorch_tanh",
        eps=1e-6,
        projection_dim=0,
        feature_layer=-1,
        resampler="avgpool",
        num_tokens=64,
        project_tokens=False,
        remat=True,
        dtype="bfloat16",
        param_dtype="float32",
      )
    )
  else:
    m.vision = ml_collections.ConfigDict(
      dict(
        family="clip",
        image_size=336,
        patch_size=14,
        width=1024,
        depth=24,
        num_heads=16,
        mlp_dim=4096,
        act="quick_gelu",
        eps=1e-5,
        projection_dim=768,
        feature_layer=-2,
        resampler="avgpool",
        num_tokens=64,
        project_tokens=False,
        remat=True,
        dtype="bfloat16",
        param_dtype="float32",
      )
    )
    m.text = ml_collections.ConfigDict(
      dict(
        vocab_size=49408,
        width=768,
        depth=12,
        num_heads=12,
        mlp_dim=3072,
        max_len=77,
        projection_dim=768,
        act="quick_gelu",
        eps=1e-5,
        eos_token_id=49407,
        pool_argmax=True,
        remat=True,
        dtype="bfloat16",
        param_dtype="float32",
      )
    )
    m.loss = "softmax"

  c.mesh = mesh_config({"data": -1, "fsdp": 1, "tensor": 1})

  c.init = ml_collections.ConfigDict()
  c.init.checkpoint = ""
  c.init.hf_vision = ""  # Required: an HF CLIP(-vision) / SigLIP folder.

  e = c.encode = ml_collections.ConfigDict()
  e.in_dir = ""
  e.out_dir = ""
  e.splits = ()
  e.batch_size = 64
  e.num_frames = 1
  e.dtype = "bfloat16"
  e.seed = 0
  return c
