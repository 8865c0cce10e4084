"""Tokenisers over a BERT vocabulary: one token per character, and WordPiece.

The NL2SQL labels tag question characters, so the question must keep exactly one token per
character (docs/nl2sql.md §1.2): `CharTokenizer` maps each character to its vocabulary
entry (lower-cased when only that form is known), whitespace to `[unused1]` (or `[UNK]` when
the vocabulary has no `[unused1]`: the shared Chinese vocabulary puts “ at id 1) and any other
unknown character to `[UNK]`. `wordpiece_tokenizer` is BERT's own tokenisation through the
`tokenizers` library, for pre-training text.
"""

import tokenizers
from tokenizers import normalizers, pre_tokenizers

from experiments import data

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def read_vocab(path) -> list[str]:
    """The tokens of a BERT vocab.txt, one per line, in id order.

    Raises:
      experiments.data.RecordError: when a special token of `SPECIAL_TOKENS` is missing.
    """
    tokens = [line.rstrip("\r\n") for line in data.read_lines(path)]
    for token in SPECIAL_TOKENS:
        if token not in tokens:
            raise data.RecordError(path, None, None, f"the vocabulary lacks {token}")
    return tokens


class CharTokenizer:
    """One id per character over a BERT vocabulary.

    Attributes:
      tokens: the vocabulary, id order.
    """

    def __init__(self, tokens: list[str]):
        self.tokens = list(tokens)
        self.ids = {token: index for index, token in enumerate(self.tokens)}
        self.unk = self.ids["[UNK]"]
        self.space = self.ids.get("[unused1]", self.unk)
        self.cls, self.sep = self.ids["[CLS]"], self.ids["[SEP]"]
        self.pad, self.mask = self.ids["[PAD]"], self.ids["[MASK]"]

    @classmethod
    def from_file(cls, path) -> "CharTokenizer":
        return cls(read_vocab(path))

    @property
    def vocab_size(self) -> int:
        return len(self.tokens)

    def char_id(self, char: str) -> int:
        """The id of one character."""
        if char.isspace():
            return self.space
        if char in self.ids:
            return self.ids[char]
        return self.ids.get(char.lower(), self.unk)

    def encode(self, text: str) -> list[int]:
        """len(text) ids, one per character."""
        return [self.char_id(char) for char in text]


def wordpiece_tokenizer(vocab_path, lowercase: bool = True) -> tokenizers.Tokenizer:
    """BERT's tokenisation (basic splitting of punctuation and CJK characters, then
    WordPiece) through the `tokenizers` library, without [CLS]/[SEP]."""
    vocab = {token: index for index, token in enumerate(read_vocab(vocab_path))}
    tokenizer = tokenizers.Tokenizer(tokenizers.models.WordPiece(
        vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tokenizer.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=lowercase)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    return tokenizer

