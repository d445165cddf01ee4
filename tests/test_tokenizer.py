"""Tests for auteur_jax.data.tokenizer on a small generated cooking corpus."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import tokenizers
import transformers
from tokenizers import models, pre_tokenizers, trainers

from auteur_jax.data import tokenizer as tokenizer_lib
from auteur_jax.data.tokenizer import SPECIAL_TOKENS, Tokenizer, train_bpe


def corpus() -> list[str]:
  verbs = ["chop", "slice", "stir", "add", "fry", "boil", "season", "peel"]
  things = ["the onion", "the tomato", "two eggs", "the garlic", "some salt", "the pasta"]
  tails = ["", " finely", " in the pan", " for two minutes", " until golden"]
  return [f"{v} {t}{e}." for v, t, e in itertools.product(verbs, things, tails)]


@pytest.fixture(scope="module")
def tok(tmp_path_factory) -> Tokenizer:
  return train_bpe(corpus(), vocab_size=400, out_dir=str(tmp_path_factory.mktemp("tok") / "bpe"))


def test_train_is_deterministic(tok):
  again = train_bpe(corpus(), vocab_size=400)
  assert again.hf.get_vocab() == tok.hf.get_vocab()
  assert tok.vocab_size <= 400


def test_save_load_round_trip(tok, tmp_path):
  tok.save(str(tmp_path / "copy"))
  loaded = Tokenizer.load(str(tmp_path / "copy"))
  text = "<caption> peel the garlic and fry it until golden. </caption> <img></img>"
  assert loaded.encode(text, add_bos=True, add_eos=True) == tok.encode(
    text, add_bos=True, add_eos=True
  )
  assert loaded.vocab_size == tok.vocab_size
  assert (loaded.pad_id, loaded.bos_id, loaded.eos_id) == (tok.pad_id, tok.bos_id, tok.eos_id)


def test_special_ids(tok):
  assert (tok.pad_id, tok.bos_id, tok.eos_id) == (0, 1, 2)
  ids = {name: tok.special_id(name) for name in SPECIAL_TOKENS}
  assert len(set(ids.values())) == len(SPECIAL_TOKENS)
  for name, i in ids.items():
    assert tok.encode(name) == [i]
  encoded = tok.encode("<action> chop the onion </action>")
  assert encoded[0] == ids["<action>"] and encoded[-1] == ids["</action>"]
  assert sum(i in ids.values() for i in encoded) == 2
  assert tok.decode(encoded) == " chop the onion "
  assert tok.decode(encoded, skip_special=False) == "<action> chop the onion </action>"
  with pytest.raises(KeyError, match="<recipe>"):
    tok.special_id("<recipe>")


def test_encode_decode_plain_text(tok):
  for text in ["stir the sauce until golden.", "Peel 3 ripe mangoes, then zest a lime!"]:
    ids = tok.encode(text, add_bos=True, add_eos=True)
    assert ids[0] == tok.bos_id and ids[-1] == tok.eos_id
    assert tok.decode(ids) == text
    assert tok.decode(np.asarray(ids, np.int32)) == text


def test_encode_batch_pads_truncates_and_masks(tok):
  texts = ["fry the pasta.", "season the tomato finely in the pan for two minutes.", ""]
  ids, mask = tok.encode_batch(texts, max_len=6, add_eos=True)
  assert ids.shape == mask.shape == (3, 6)
  assert ids.dtype == np.int32 and mask.dtype == bool
  short = tok.encode(texts[0], add_eos=True)
  assert len(short) < 6
  np.testing.assert_array_equal(ids[0, : len(short)], short)
  assert mask[0].sum() == len(short) and (ids[0, len(short) :] == tok.pad_id).all()
  np.testing.assert_array_equal(ids[1], tok.encode(texts[1])[:6])  # Cut, eos lost.
  assert mask[1].all()
  np.testing.assert_array_equal(mask[2], [True] + [False] * 5)  # Just eos.


def test_load_missing_dir_names_it(tmp_path):
  missing = tmp_path / "no_such_tokenizer"
  with pytest.raises(FileNotFoundError, match="no_such_tokenizer"):
    Tokenizer.load(str(missing))


def test_load_plain_transformers_folder_adds_specials(tmp_path):
  """A folder saved by transformers without our tokens (like a hub checkpoint's)."""
  raw = tokenizers.Tokenizer(models.BPE())
  raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  raw.train_from_iterator(
    corpus(),
    trainers.BpeTrainer(
      vocab_size=300,
      special_tokens=["</s>"],
      show_progress=False,
      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    ),
  )
  hf = transformers.PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="</s>")
  hf.save_pretrained(str(tmp_path))
  base_size = len(hf)

  tok = Tokenizer.load(str(tmp_path))
  assert tok.vocab_size == base_size + len(SPECIAL_TOKENS)
  assert tok.pad_id == tok.eos_id == hf.convert_tokens_to_ids("</s>")
  assert tok.bos_id is None
  for name in SPECIAL_TOKENS:
    assert tok.encode(name) == [tok.special_id(name)]
    assert tok.special_id(name) >= base_size
  with pytest.raises(ValueError, match="bos"):
    tok.encode("chop", add_bos=True)


def test_no_eos_gets_pad_token(tmp_path):
  raw = tokenizers.Tokenizer(models.BPE())
  raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  raw.train_from_iterator(corpus(), trainers.BpeTrainer(vocab_size=280, show_progress=False))
  tok = Tokenizer(transformers.PreTrainedTokenizerFast(tokenizer_object=raw))
  assert tok.special_id(tokenizer_lib.PAD) == tok.pad_id
  ids, mask = tok.encode_batch(["chop"], max_len=4)
  assert (ids[0, mask[0].sum() :] == tok.pad_id).all()


def test_train_rejects_tiny_vocab():
  with pytest.raises(ValueError, match="vocab_size"):
    train_bpe(corpus(), vocab_size=100)
