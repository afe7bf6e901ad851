import pytest
from fake_task import FakeCopy

from lenggen.data.tokenizer import EOS_ID, PAD_ID, Tokenizer, TokenizerError


@pytest.fixture(scope="module")
def tokenizer():
    return Tokenizer.from_task(FakeCopy())


def test_ids_are_pad_eos_then_the_task_vocabulary(tokenizer):
    # FakeCopy's vocabulary, sorted: "[SEP]" < "a" (0x5B < 0x61).
    assert (PAD_ID, EOS_ID) == (0, 1)
    assert tokenizer.words == ("<pad>", "</s>", "[SEP]", "a", "b", "c", "d")
    assert tokenizer.vocab_size == 7
    assert tokenizer.task == "fake_copy"


def test_encode_splits_on_any_whitespace(tokenizer):
    assert tokenizer.encode("a c  [SEP]\td") == [3, 5, 2, 6]
    assert tokenizer.encode("") == []


def test_decode_stops_at_eos_and_drops_pad(tokenizer):
    assert tokenizer.decode([3, 0, 5, 2, 1, 4, 4]) == "a c [SEP]"
    assert tokenizer.decode([0, 0]) == ""


def test_round_trip_of_every_example(tokenizer):
    task = FakeCopy()
    for split in ("train", "validation", "test"):
        for example in task.examples(split):
            ids = tokenizer.encode(example.source) + tokenizer.encode(example.target) + [EOS_ID]
            assert tokenizer.decode(ids) == f"{example.source} {example.target}"


def test_unknown_word_names_the_word_and_the_task(tokenizer):
    with pytest.raises(
        TokenizerError,
        match=r"Word 'e' \(in 'a e'\) is not in the vocabulary of "
        r"task 'fake_copy', which has 5 words: '\[SEP\]', 'a'",
    ):
        tokenizer.encode("a e")
    assert issubclass(TokenizerError, ValueError)


def test_id_outside_the_vocabulary_raises(tokenizer):
    with pytest.raises(TokenizerError, match=r"Id 7 is outside .* expected an id in \[0, 7\)"):
        tokenizer.decode([3, 7])


@pytest.mark.parametrize(
    "vocabulary, message",
    [
        (("a", "a"), "holds 'a' twice"),
        (("a", "</s>"), "reserved word '</s>'"),
        (("a b",), "holds 'a b'; expected non-empty strings without whitespace"),
        (("",), "holds ''"),
    ],
)
def test_bad_vocabulary_raises(vocabulary, message):
    with pytest.raises(TokenizerError, match=message):
        Tokenizer(vocabulary=vocabulary, task="t")


def test_save_load_round_trip(tokenizer, tmp_path):
    path = tmp_path / "vocabulary.json"
    tokenizer.save(path)
    loaded = Tokenizer.load(path)
    assert loaded == tokenizer
    assert loaded.words == tokenizer.words and loaded.task == "fake_copy"
    assert loaded.encode("d [SEP]") == [6, 2]


def test_load_rejects_other_files(tmp_path):
    path = tmp_path / "other.json"
    path.write_text('{"words": ["a"]}')
    with pytest.raises(TokenizerError, match="is not a tokenizer file"):
        Tokenizer.load(path)
    path.write_text("not json")
    with pytest.raises(TokenizerError, match="is not JSON"):
        Tokenizer.load(path)
