import pytest

from qrnca.errors import InputError, LetterTokenError
from qrnca.models.loading import PromptEncoding, letter_token_ids, load_model
from qrnca.models.tiny import save_tiny, train_word_tokenizer


def test_letters_are_single_tokens_in_word_tokenizer():
    tok = train_word_tokenizer(["which is it ? A . B . C . D ."])
    bare = letter_token_ids(tok, "bare")
    spaced = letter_token_ids(tok, "leading_space")
    assert bare == spaced and len(set(bare.values())) == 4


def test_letter_that_is_not_one_token_is_an_error():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.WordLevel({"<unk>": 0, "A": 1, "B": 2, "C": 3}, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="<unk>")
    with pytest.raises(LetterTokenError, match="'D'"):
        letter_token_ids(tok, "bare")
    with pytest.raises(InputError, match="answer_token"):
        letter_token_ids(tok, "nonsense")


def test_load_local_model_roundtrip(tmp_path):
    save_tiny(tmp_path / "m", "llama")
    model, tok = load_model({"name": "t", "path": str(tmp_path / "m"), "dtype": "float32"})
    ids = PromptEncoding().ids(tok, "Respond with the letter .")
    assert ids[0, 0].item() == tok.bos_token_id  # the tokenizer adds BOS itself
    assert not any(p.requires_grad for p in model.parameters())
    with pytest.raises(InputError, match="no config.json"):
        load_model({"name": "t", "path": str(tmp_path / "missing")})
