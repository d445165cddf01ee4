"""The paper's ablation tables as toy-kitchen experiments: runs, variants, claims.

A *run* is one training (toy config + overrides, from scratch or fine-tuned from a shipped
toy model) per seed; variants of several tables share runs (Table 3's "embedding" is
Table 7's "none"). A *variant* names the runs it renders with (the others are the shipped
models) and how it is measured (`Variant.measure`, see ablate/measure.py):

  director     the variant's director writes each validation story from its dish name
               (free run); the shipped DiT renders it. Director scores and video scores.
  video        the shipped director regresses z from the true texts; the variant's DiT
               renders (given text). Video scores.
  keyframe     the language path on the true texts: the renderer draws each keyframe
               (rolling context), the keyframe DiT renders the clip. Video scores, and
               the keyframes' scores.
  keyframe_alone  the same without rolling context (no reference keyframes).
  interleaved  `video`, with the clips' last frames scored as keyframes.
  latent       `director` for a director that regresses keyframe VAE latents: each z_t
               is decoded as the keyframe that the shipped keyframe DiT renders from
               (sample/story.py's director "latent"). Video and keyframe scores.

A *claim* is the paper's direction: variant `better` beats `worse` on each of its
metrics (ablate/stats.py gives the verdict per metric).
"""

from __future__ import annotations

import dataclasses


class AblateError(ValueError):
  """A bad `auteur ablate` request (unknown table, seeds < 1)."""


# metric -> (higher is better, what it is). Scored on the validation stories.
METRICS = {
  "state_agreement": (True, "state reader on each clip's last frame vs the true state"),
  "changed_objects": (True, "the same on the objects the step changes"),
  "clip_t": (True, "CLIP-T of the clips with their captions (toy CLIP, cosine)"),
  "fvd": (False, "Frechet distance of the clips to the true clips (toy CLIP features)"),
  "step_top1": (True, "free run: z_t's nearest true keyframe embedding is step t's"),
  "teacher_forced_top1": (True, "the same in one pass with the true history"),
  "action_exact": (True, "free run: written action equals the true one"),
  "keyframe_state_agreement": (True, "state reader on each keyframe vs the true state"),
  "identity_consistency": (True, "ingredients' looks kept across the story's keyframes"),
  "keyframe_clip_t": (True, "CLIP-T of the keyframes with their captions"),
  "fid": (False, "Frechet distance of the keyframes to the true ones (toy CLIP)"),
}
VIDEO = ("state_agreement", "changed_objects", "clip_t", "fvd")
DIRECTOR = ("step_top1", "teacher_forced_top1", "action_exact", *VIDEO)
KEYFRAMES = ("keyframe_state_agreement", "identity_consistency", "keyframe_clip_t", "fid")


@dataclasses.dataclass(frozen=True)
class Run:
  """One training per seed: `config` (a packaged config name) with `overrides`, started
  from the shipped toy model `init` (fine-tuning) or from scratch (init None)."""

  task: str  # The sampler's section it fills: director | dit | dit_keyframe | keyframe.
  config: str
  overrides: tuple[tuple[str, object], ...] = ()
  init: str | None = None
  kind: str = "dit"  # Which step count of Budget it trains for (director | dit | keyframe).
  data: str | None = None  # A key of runs.prepare_data's paths to train on (its data.dir).


_NO_REG = (
  ("train.visual_reg.mask_prob", 0.0),
  ("train.visual_reg.shuffle_prob", 0.0),
  ("train.visual_reg.noise_scale", 0.0),
)
RUNS = {
  "director": Run("director", "toy/director", kind="director"),
  "director_mse": Run("director", "toy/director", (("model.alpha", 0.0),), kind="director"),
  "director_cos": Run("director", "toy/director", (("model.beta", 0.0),), kind="director"),
  "director_caption_visual": Run("director", "toy/director:caption_visual", kind="director"),
  "director_action_visual": Run("director", "toy/director:action_visual", kind="director"),
  # The same stories with each step's keyframe VAE latent as the target (Table 13).
  "director_vae_latent": Run(
    "director", "toy/director:vae_latent", kind="director", data="director_vae"
  ),
  "dit_none": Run("dit", "toy/dit", _NO_REG, init="dit"),
  "dit_mask": Run(
    "dit",
    "toy/dit",
    (
      ("train.visual_reg.mask_prob", 0.25),
      ("train.visual_reg.shuffle_prob", 0.0),
      ("train.visual_reg.noise_scale", 0.0),
    ),
    init="dit",
  ),
  "dit_mask_noise": Run(
    "dit",
    "toy/dit",
    (
      ("train.visual_reg.mask_prob", 0.25),
      ("train.visual_reg.shuffle_prob", 0.0),
      ("train.visual_reg.noise_scale", 0.5),
    ),
    init="dit",
  ),
  "dit_all": Run("dit", "toy/dit", init="dit"),  # The paper's 0.25 / 0.25 / 0.5.
  "dit_keyframe": Run(
    "dit_keyframe", "toy/dit:keyframe", (("init.widen_inputs", False),), init="dit_keyframe"
  ),
  "keyframe": Run("keyframe", "toy/keyframe", init="keyframe", kind="keyframe"),
}


@dataclasses.dataclass(frozen=True)
class Variant:
  name: str
  runs: tuple[str, ...]  # Names in RUNS; the other models are the shipped ones.
  measure: str  # director | video | keyframe | keyframe_alone | interleaved | latent


@dataclasses.dataclass(frozen=True)
class Claim:
  text: str
  better: str
  worse: str
  metrics: tuple[str, ...]
  paper: str  # The paper's numbers behind the claim.


@dataclasses.dataclass(frozen=True)
class Table:
  id: str
  title: str
  variants: tuple[Variant, ...]
  claims: tuple[Claim, ...]
  metrics: tuple[str, ...]
  note: str = ""  # What the reader needs to weigh the verdicts (REPORT.md prints it).

  def variant(self, name: str) -> Variant:
    return next(v for v in self.variants if v.name == name)


def _v(name: str, runs: tuple[str, ...], measure: str) -> Variant:
  return Variant(name, runs, measure)


TABLES = {
  "5": Table(
    "5",
    "Table 5: the director's regression loss",
    (
      _v("mse", ("director_mse",), "director"),
      _v("cos", ("director_cos",), "director"),
      _v("mse+cos", ("director",), "director"),
    ),
    (
      Claim(
        "MSE + cosine beats MSE alone",
        "mse+cos",
        "mse",
        ("step_top1", "clip_t", "fvd", "state_agreement"),
        "CLIP-T 25.1 vs 23.6, FID 30.1 vs 31.9",
      ),
      Claim(
        "MSE + cosine beats cosine alone",
        "mse+cos",
        "cos",
        ("step_top1", "clip_t", "fvd", "state_agreement"),
        "CLIP-T 25.1 vs 24.1, FID 30.1 vs 32.1",
      ),
    ),
    DIRECTOR,
  ),
  "6": Table(
    "6",
    "Table 6: the director's chain",
    (
      _v("action->visual", ("director_action_visual",), "director"),
      _v("caption->visual", ("director_caption_visual",), "director"),
      _v("action->caption->visual", ("director",), "director"),
    ),
    (
      Claim(
        "action -> caption -> visual beats caption -> visual",
        "action->caption->visual",
        "caption->visual",
        ("step_top1", "clip_t", "fvd", "state_agreement"),
        "CLIP-T 26.1 vs 25.7, FID 25.3 vs 26.1",
      ),
      Claim(
        "caption -> visual beats action -> visual",
        "caption->visual",
        "action->visual",
        ("step_top1", "clip_t", "fvd", "state_agreement"),
        "CLIP-T 25.7 vs 22.7, FID 26.1 vs 27.9",
      ),
    ),
    ("step_top1", "teacher_forced_top1", *VIDEO),
  ),
  "7": Table(
    "7",
    "Table 7: regularising the DiT's visual condition",
    (
      _v("none", ("dit_none",), "video"),
      _v("+mask", ("dit_mask",), "video"),
      _v("+mask+noise", ("dit_mask_noise",), "video"),
      _v("+mask+noise+shuffle", ("dit_all",), "video"),
    ),
    (
      Claim("masking helps", "+mask", "none", VIDEO, "CLIP-T 26.9 vs 26.4, FVD 539.7 vs 554.3"),
      Claim(
        "noise helps on top of masking",
        "+mask+noise",
        "+mask",
        VIDEO,
        "CLIP-T 27.2 vs 26.9, FVD 522.1 vs 539.7",
      ),
      Claim(
        "shuffling helps on top of both",
        "+mask+noise+shuffle",
        "+mask+noise",
        VIDEO,
        "CLIP-T 27.3 vs 27.2, FVD 520.7 vs 522.1",
      ),
    ),
    VIDEO,
    note="The toy DiT's visual tokens carry no position (toy/dit: visual_pos_len 0), and "
    "its visual cross-attention and per-token embedder are permutation-invariant, so "
    "Shuffle cannot change what it computes: '+mask+noise+shuffle' differs from "
    "'+mask+noise' only by float rounding, and the last claim cannot hold here.",
  ),
  "3": Table(
    "3",
    "Table 3: how the DiT is conditioned",
    (
      _v("keyframe", ("dit_keyframe",), "keyframe"),
      _v("embedding", ("dit_none",), "video"),
      _v("embedding+reg", ("dit_all",), "video"),
    ),
    (
      Claim(
        "the regularised embedding beats the keyframe",
        "embedding+reg",
        "keyframe",
        VIDEO,
        "CLIP-T 26.4 vs 25.9, FVD 512.6 vs 557.7",
      ),
      Claim(
        "the keyframe beats the unregularised embedding",
        "keyframe",
        "embedding",
        VIDEO,
        "CLIP-T 25.9 vs 25.5, FVD 557.7 vs 590.3",
      ),
    ),
    VIDEO,
    note="The keyframe variant's keyframes are drawn from the true texts by the shipped "
    "toy keyframe renderer (rolling context), as the language director draws them, so its "
    "clips carry the renderer's errors (Table 4 scores those keyframes); the embedding "
    "variants read z regressed by the shipped director.",
  ),
  "4": Table(
    "4",
    "Table 4 and the human study: the two directors' keyframes",
    (
      _v("interleaved", ("dit_all",), "interleaved"),
      _v("language, rolling context", ("keyframe", "dit_keyframe"), "keyframe"),
      _v("language, no context", ("keyframe", "dit_keyframe"), "keyframe_alone"),
    ),
    (
      Claim(
        "rolling context raises the keyframes' CLIP-T",
        "language, rolling context",
        "language, no context",
        ("keyframe_clip_t",),
        "CLIP-T 28.0 vs 26.1",
      ),
      Claim(
        "... at a worse FID (lower FID without context)",
        "language, no context",
        "language, rolling context",
        ("fid",),
        "FID 25.3 vs 29.4",
      ),
      Claim(
        "the interleaved director keeps identities more consistent across a story",
        "interleaved",
        "language, rolling context",
        ("identity_consistency",),
        "human study: visual consistency preferred for interleaved",
      ),
    ),
    KEYFRAMES,
  ),
  "13": Table(
    "13",
    "Table 13: the director's latent space",
    (
      _v("CLIP tokens", ("director",), "director"),
      _v("VAE latent", ("director_vae_latent",), "latent"),
    ),
    (
      Claim(
        "regressing CLIP-space states beats regressing VAE latents",
        "CLIP tokens",
        "VAE latent",
        VIDEO,
        "SEED-X CLIP latents CLIP-T 25.1 / FID 30.1 vs SDXL-VAE 13.2 / 286.6",
      ),
    ),
    VIDEO,
  ),
}
ORDER = ("7", "3", "4", "5", "6", "13")  # `--table all`: the DiT tables (fine-tuning: fast) first.


@dataclasses.dataclass(frozen=True)
class Budget:
  """Training steps per run kind and what is scored; the same for every variant."""

  director: int  # From scratch (toy/director).
  dit: int  # Fine-tuning a shipped DiT (toy/dit, toy/dit:keyframe).
  keyframe: int  # Fine-tuning the shipped keyframe renderer.
  stories: int  # Validation stories scored (the first N by id).
  sample_steps: int  # Flow-matching steps per clip / keyframe.
  director_videos: int  # Toy videos in the director's training set.
  videos: int = 120  # Toy videos of the DiT's and renderer's data set (and the validation).


BUDGETS = {
  "full": Budget(
    director=800, dit=1000, keyframe=300, stories=16, sample_steps=30, director_videos=600
  ),
  "quick": Budget(
    director=2, dit=2, keyframe=2, stories=2, sample_steps=2, director_videos=12, videos=10
  ),
}
QUICK_TABLE = Table(  # `--quick`: 2 variants, the machinery only.
  "quick",
  "quick check of the machinery (2 variants; numbers meaningless)",
  (_v("none", ("dit_none",), "video"), _v("+mask+noise+shuffle", ("dit_all",), "video")),
  (Claim("regularisation helps", "+mask+noise+shuffle", "none", VIDEO, "Table 7"),),
  VIDEO,
)
