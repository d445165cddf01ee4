"""The model families `auteur convert` knows, by name. Each family (its name map, used for
import, export and the in-memory loaders alike, and config.json <-> our config) lives in
its converter module:

  family          reference class (library)                 ours                       module
  llama, qwen2    LlamaForCausalLM / Qwen2ForCausalLM (HF)  models/llm.LLM             hf_llm
  wan_dit         WanTransformer3DModel (diffusers)         models/dit.VideoDiT        diffusers_wan
  wan_vae         AutoencoderKLWan (diffusers)              models/vae.VideoVAE        diffusers_vae
  clip_vision     CLIPVisionModelWithProjection (HF)        models/vision.VisionTower  hf_vision
  siglip_vision   SiglipVisionModel (HF)                    models/vision.VisionTower  hf_vision
  clip_text       CLIPTextModelWithProjection (HF)          models/clip_text           hf_text
  t5, umt5        T5EncoderModel / UMT5EncoderModel (HF)    models/text_encoder        hf_text
  videomae        VideoMAEModel (HF; encoder)               models/videomae.VideoMAE   hf_videomae
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from auteur_jax.checkpoint.errors import WeightError
from auteur_jax.convert import (
  diffusers_vae,
  diffusers_wan,
  hf_llm,
  hf_text,
  hf_videomae,
  hf_vision,
)
from auteur_jax.convert.mapping import Family

FAMILIES: dict[str, Family] = {
  f.name: f
  for f in [
    hf_llm.LLAMA,
    hf_llm.QWEN2,
    diffusers_wan.FAMILY,
    diffusers_vae.FAMILY,
    hf_vision.FAMILIES["clip"],
    hf_vision.FAMILIES["siglip"],
    hf_text.CLIP_TEXT,
    hf_text.T5,
    hf_text.UMT5,
    hf_videomae.FAMILY,
  ]
}


def get(name: str) -> Family:
  if name not in FAMILIES:
    raise WeightError(f"unknown family {name!r}; expected one of {sorted(FAMILIES)}")
  return FAMILIES[name]


def check_kind(family: Family, hf: Mapping[str, Any], where: str) -> None:
  """Refuses a config.json of another family (e.g. --family qwen2 on a Llama folder)."""
  kind = family.kind(hf)
  if kind not in family.kinds:
    what = kind or hf.get("model_type") or hf.get("_class_name") or "unknown"
    raise WeightError(
      f"{where}/config.json: this is a {what!r} model, not "
      f"--family {family.name} (which reads {list(family.kinds)})"
    )
