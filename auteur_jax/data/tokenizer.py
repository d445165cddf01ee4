"""Text tokenization for the director: an HF tokenizer plus the director's special tokens.

`Tokenizer` wraps a Hugging Face tokenizer loaded from a local folder (a Llama/Qwen2
checkpoint's, or one made by `train_bpe`) and guarantees that the director's markup
tokens (<action>, <caption>, <img> and their closing forms) and a pad token exist and
encode as single ids. `train_bpe` builds a small byte-level BPE for data sets without
a hub tokenizer (the toy kitchen). Nothing is ever downloaded.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

import numpy as np
import tokenizers
import transformers
from tokenizers import decoders, models, pre_tokenizers, trainers

# Markup of the director's interleaved sequence: a_t, c_t and the visual slot of z_t.
SPECIAL_TOKENS = ("<action>", "</action>", "<caption>", "</caption>", "<img>", "</img>")
# Pad / bos / eos / unk of tokenizers trained by `train_bpe` (ids 0..3, in this order).
PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"


class Tokenizer:
  """An HF tokenizer with the director's special tokens and a pad token.

  Attributes:
    hf: the wrapped `transformers` tokenizer (after the special tokens were added).
  """

  def __init__(self, hf: transformers.PreTrainedTokenizerBase):
    self.hf = hf
    vocab = hf.get_vocab()
    special = set(hf.all_special_tokens)
    # Tokens already special keep their ids; the rest are registered as special
    # (new ids at the end of the vocabulary, or their existing id if in the vocab).
    missing = [t for t in SPECIAL_TOKENS if t not in special or t not in vocab]
    if missing:
      hf.add_special_tokens({"extra_special_tokens": missing}, replace_extra_special_tokens=False)
    if hf.pad_token is None:
      # Reusing eos keeps the vocabulary (and a checkpoint's embedding) unchanged;
      # padding is masked by length, so pad == eos is unambiguous.
      if hf.eos_token is not None:
        hf.pad_token = hf.eos_token
      else:
        hf.add_special_tokens({"pad_token": PAD})

  @classmethod
  def load(cls, path: str) -> Tokenizer:
    """Loads a tokenizer saved with `save_pretrained` / `save` from local folder `path`."""
    path = os.fspath(path)
    if not os.path.isdir(path):
      raise FileNotFoundError(
        f"{path}: tokenizer folder not found (expected a folder "
        "with tokenizer.json / tokenizer_config.json)"
      )
    try:
      hf = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, KeyError) as e:
      raise ValueError(f"{path}: cannot load a tokenizer from this folder ({e})") from e
    return cls(hf)

  def save(self, path: str) -> None:
    """Writes the tokenizer (special tokens included) to folder `path` (created)."""
    os.makedirs(path, exist_ok=True)
    self.hf.save_pretrained(path)

  @property
  def vocab_size(self) -> int:
    """Number of ids, added tokens included (the embedding table's rows)."""
    return len(self.hf)

  @property
  def pad_id(self) -> int:
    return self.hf.pad_token_id

  @property
  def bos_id(self) -> int | None:
    """None for tokenizers without one (e.g. Qwen2)."""
    return self.hf.bos_token_id

  @property
  def eos_id(self) -> int | None:
    return self.hf.eos_token_id

  def special_id(self, name: str) -> int:
    """Id of special token `name`, e.g. "<action>" or the pad/bos/eos token's text."""
    if name not in self.hf.all_special_tokens:
      raise KeyError(
        f"{name!r} is not a special token of this tokenizer; expected one "
        f"of {sorted(self.hf.all_special_tokens)}"
      )
    i = self.hf.convert_tokens_to_ids(name)
    assert isinstance(i, int)  # One token, one id.
    return i

  def _wrap(self, ids: list[int], add_bos: bool, add_eos: bool) -> list[int]:
    if add_bos:
      if self.bos_id is None:
        raise ValueError(
          f"{self.hf.name_or_path or 'tokenizer'}: has no bos token; encode with add_bos=False"
        )
      ids = [self.bos_id] + ids
    if add_eos:
      if self.eos_id is None:
        raise ValueError(
          f"{self.hf.name_or_path or 'tokenizer'}: has no eos token; encode with add_eos=False"
        )
      ids = ids + [self.eos_id]
    return ids

  def encode(self, text: str, add_bos: bool = False, add_eos: bool = False) -> list[int]:
    """Text -> ids. Special tokens written in the text (e.g. "<action>") are one id."""
    # add_special_tokens=False: bos/eos are ours to place, not the template's.
    return self._wrap(self.hf.encode(text, add_special_tokens=False), add_bos, add_eos)

  def encode_batch(
    self, texts: Sequence[str], max_len: int, add_bos: bool = False, add_eos: bool = False
  ) -> tuple[np.ndarray, np.ndarray]:
    """Texts -> (ids int32 [N, max_len], mask bool [N, max_len]).

    Padded with pad_id on the right; sequences longer than max_len are cut to their
    first max_len ids (a cut sequence loses its eos). mask is True on real tokens.
    """
    if max_len < 1:
      raise ValueError(f"encode_batch: max_len must be >= 1, got {max_len}")
    texts = list(texts)
    ids = np.full((len(texts), max_len), self.pad_id, np.int32)
    mask = np.zeros((len(texts), max_len), bool)
    if not texts:
      return ids, mask
    # The batch call tokenizes in parallel in Rust.
    batch = self.hf(texts, add_special_tokens=False)["input_ids"]
    for row, seq in enumerate(batch):
      seq = self._wrap(list(seq), add_bos, add_eos)[:max_len]
      ids[row, : len(seq)] = seq
      mask[row, : len(seq)] = True
    return ids, mask

  def decode(self, ids: Iterable[int] | np.ndarray, skip_special: bool = True) -> str:
    """Ids -> text; special tokens (pad, markup) are dropped if `skip_special`."""
    ids = np.asarray(ids).reshape(-1).tolist()
    text = self.hf.decode(ids, skip_special_tokens=skip_special, clean_up_tokenization_spaces=False)
    assert isinstance(text, str)  # One sequence, one text.
    return text


def train_bpe(
  texts: Iterable[str], vocab_size: int, out_dir: str | None = None, min_frequency: int = 2
) -> Tokenizer:
  """Trains a byte-level BPE on `texts`; saves it to `out_dir` when given.

  Ids 0..3 are <pad>, <bos>, <eos>, <unk>, then the director's SPECIAL_TOKENS, then the
  256 byte symbols and the learned merges, so any text is encodable (no unknowns).
  The result depends only on `texts` and the arguments.

  Args:
    texts: training sentences.
    vocab_size: target size including special tokens and the 256 byte symbols.
    out_dir: folder for `Tokenizer.load`; None to keep it in memory only.
    min_frequency: pairs seen fewer times are not merged.
  """
  specials = [PAD, BOS, EOS, UNK, *SPECIAL_TOKENS]
  alphabet = pre_tokenizers.ByteLevel.alphabet()
  if vocab_size < len(specials) + len(alphabet):
    raise ValueError(
      f"train_bpe: vocab_size must be >= "
      f"{len(specials) + len(alphabet)} (specials + 256 bytes), "
      f"got {vocab_size}"
    )
  tok = tokenizers.Tokenizer(models.BPE(unk_token=UNK))
  # No prefix space: "chop" at the start of a text and after a markup token is the
  # same as in the data, and decode(encode(x)) == x exactly.
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(
    vocab_size=vocab_size,
    min_frequency=min_frequency,
    special_tokens=specials,
    initial_alphabet=alphabet,
    show_progress=False,
  )
  tok.train_from_iterator(texts, trainer)
  hf = transformers.PreTrainedTokenizerFast(
    tokenizer_object=tok,
    pad_token=PAD,
    bos_token=BOS,
    eos_token=EOS,
    unk_token=UNK,
    extra_special_tokens=list(SPECIAL_TOKENS),
  )
  tokenizer = Tokenizer(hf)
  if out_dir is not None:
    tokenizer.save(out_dir)
  return tokenizer
