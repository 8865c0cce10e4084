"""The entity linker's inputs: characters, words, max-match boundaries, linking features.

Everything is computed on the lower-cased text (`kb.lower_same_length`, offsets unchanged),
as the post does (kexue.fm/archives/6919):

* characters: ids of a vocabulary of characters seen at least `min_count` times over the KB
  descriptions and the training texts; 0 is padding, 1 an unknown character;
* words: jieba's segmentation, each character carrying the row of its word in the frozen
  word-vector table (0 for an unknown word);
* boundaries: 1 where a max-match mention (over the pruned dictionary) starts / ends;
* linking features for one (mention, candidate): the mention's span; the character occurs
  in the candidate's description; the character's word is one of the description's words;
  the character lies in a match of one of the candidate's short objects.

Training examples (`TrainingBatches`): every text with at least one gold mention whose
string is in the (pruned) dictionary; each epoch, each such text contributes one example:
one of those mentions drawn uniformly and one of the entities of that name drawn uniformly,
labelled 1 when it is the gold one. The draws are a pure function of (seed, epoch, text), so
a resumed run sees the batches an uninterrupted one would.
"""

import collections
import dataclasses
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from experiments.entity_linking import kb, max_match, word_vectors

PAD, UNKNOWN = 0, 1


@dataclasses.dataclass(frozen=True)
class Vocabulary:
    """Characters with ids from 2 on (0 padding, 1 unknown)."""

    chars: tuple[str, ...]

    @classmethod
    def build(cls, texts: Iterable[str], min_count: int) -> "Vocabulary":
        counts = collections.Counter(char for text in texts
                                     for char in kb.lower_same_length(text))
        return cls(tuple(sorted(c for c, n in counts.items() if n >= min_count)))

    @property
    def size(self) -> int:
        return len(self.chars) + 2

    def encode(self, text: str, maxlen: int) -> np.ndarray:
        """(maxlen,) int32 ids of the lower-cased `text`, cut or zero-padded."""
        index = self.__dict__.get("_index")
        if index is None:
            index = {c: i + 2 for i, c in enumerate(self.chars)}
            object.__setattr__(self, "_index", index)
        ids = np.zeros(maxlen, np.int32)
        lowered = kb.lower_same_length(text)[:maxlen]
        ids[:len(lowered)] = [index.get(c, UNKNOWN) for c in lowered]
        return ids

    def to_json(self) -> str:
        return json.dumps({"chars": list(self.chars)}, ensure_ascii=False) + "\n"

    @classmethod
    def from_json(cls, text: str) -> "Vocabulary":
        return cls(tuple(json.loads(text)["chars"]))

    def digest(self) -> str:
        return hashlib.sha256("".join(self.chars).encode()).hexdigest()[:16]


@dataclasses.dataclass(frozen=True)
class TextInputs:
    """One encoded text (all arrays cut / padded to maxlen T).

    Attributes:
      text: the original text.
      char_ids: (T,) int32.
      word_ids: (T,) int32 rows of the word-vector table.
      boundaries: (T, 2) float32 max-match start / end indicators.
      char_words: the word each character lies in (lower-cased), for the word feature.
    """

    text: str
    char_ids: np.ndarray
    word_ids: np.ndarray
    boundaries: np.ndarray
    char_words: tuple[str, ...]

    @property
    def length(self) -> int:
        return min(len(self.text), len(self.char_ids))


@dataclasses.dataclass(frozen=True)
class DescriptionInputs:
    """One encoded entity description (cut / padded to S)."""

    char_ids: np.ndarray          # (S,) int32
    word_ids: np.ndarray          # (S,) int32
    chars: frozenset[str]         # every character of the whole description
    words: frozenset[str]         # every word of the whole description
    objects: tuple[str, ...]      # its short objects, longest first


class Encoder:
    """Encodes texts and descriptions for one KB index, vocabulary and word-vector table.

    Args:
      index: the (pruned) KB index: its words are max-match's dictionary.
      vocab: the character vocabulary.
      vectors: the frozen word vectors.
      maxlen: T, characters per text.
      description_maxlen: S, characters per description.
    """

    def __init__(self, index: kb.KBIndex, vocab: Vocabulary, vectors: word_vectors.WordVectors,
                 maxlen: int, description_maxlen: int):
        self.index, self.vocab, self.vectors = index, vocab, vectors
        self.maxlen, self.description_maxlen = maxlen, description_maxlen
        self.max_matcher = max_match.MaxMatcher.build(index.words)
        self._descriptions: dict[str, DescriptionInputs] = {}

    def text(self, text: str) -> TextInputs:
        lowered = kb.lower_same_length(text)
        maxlen = self.maxlen
        boundaries = np.zeros((maxlen, 2), np.float32)
        for start, end in self.max_matcher.spans(lowered):
            if end <= maxlen:
                boundaries[start, 0] = boundaries[end - 1, 1] = 1.0
        char_words = []
        for word in word_vectors.segment(lowered):
            char_words += [word] * len(word)
        return TextInputs(text, self.vocab.encode(lowered, maxlen),
                          word_vectors.char_word_ids(lowered, self.vectors, maxlen),
                          boundaries, tuple(char_words[:maxlen]))

    def description(self, kb_id: str) -> DescriptionInputs:
        cached = self._descriptions.get(kb_id)
        if cached is None:
            description = self.index.descriptions[kb_id]
            cached = DescriptionInputs(
                self.vocab.encode(description, self.description_maxlen),
                word_vectors.char_word_ids(description, self.vectors, self.description_maxlen),
                frozenset(description), frozenset(word_vectors.segment(description)),
                tuple(self.index.objects.get(kb_id, ())))
            self._descriptions[kb_id] = cached
        return cached

    def link_features(self, inputs: TextInputs, span: tuple[int, int], kb_id: str
                      ) -> np.ndarray:
        """(T, 4) float32: span, char in description, word in description, object match."""
        description = self.description(kb_id)
        features = np.zeros((self.maxlen, 4), np.float32)
        length = inputs.length
        start, end = span
        features[start:min(end, self.maxlen), 0] = 1.0
        lowered = kb.lower_same_length(inputs.text)[:length]
        features[:length, 1] = [c in description.chars for c in lowered]
        features[:length, 2] = [w in description.words for w in inputs.char_words[:length]]
        features[:length, 3] = kb.object_match_mask(lowered, description.objects)[:length]
        return features

    def pair(self, inputs: TextInputs, span: tuple[int, int], kb_id: str
             ) -> dict[str, np.ndarray]:
        """The model inputs of one (text, mention span, candidate) pair, unbatched."""
        description = self.description(kb_id)
        return {"char_ids": inputs.char_ids, "word_ids": inputs.word_ids,
                "boundaries": inputs.boundaries,
                "link_features": self.link_features(inputs, span, kb_id),
                "description_ids": description.char_ids,
                "description_word_ids": description.word_ids}


def stack(rows: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Unbatched input dicts → one batch (B, ...) per name."""
    return {name: np.stack([row[name] for row in rows]) for name in rows[0]}


@dataclasses.dataclass(frozen=True)
class TrainingText:
    """A training text: its inputs, NER targets and the mentions linking samples from."""

    inputs: TextInputs
    ner_targets: np.ndarray                               # (T, 2) float32
    mentions: tuple[tuple[int, int, str], ...]            # (start, end, gold id)


def training_texts(examples: Iterable[kb.Example], encoder: Encoder) -> list[TrainingText]:
    """The texts with at least one gold mention in the dictionary, inside maxlen."""
    texts = []
    for example in examples:
        mentions = tuple(
            (m.offset, m.offset + len(m.mention), m.kb_id) for m in example.linked
            if encoder.index.candidates(m.mention)
            and m.offset + len(m.mention) <= encoder.maxlen)
        if not mentions:
            continue
        inputs = encoder.text(example.text)
        targets = np.zeros((encoder.maxlen, 2), np.float32)
        for start, end, _ in mentions:
            targets[start, 0] = targets[end - 1, 1] = 1.0
        texts.append(TrainingText(inputs, targets, mentions))
    return texts


class TrainingBatches:
    """One (mention, candidate) draw per text per epoch, shuffled, in fixed-size batches.

    Epoch e visits the texts in the order `default_rng([seed, e])` gives; text i's draw in
    epoch e comes from `default_rng([seed, e, i])`. The last partial batch is dropped.

    Args:
      texts: from `training_texts`.
      encoder: the encoder that built them.
      batch_size: examples per batch.
      seed: the shuffling and drawing seed.
    """

    def __init__(self, texts: Sequence[TrainingText], encoder: Encoder, batch_size: int,
                 seed: int):
        if not 0 < batch_size <= len(texts):
            raise ValueError(f"batch_size {batch_size} must be in [1, {len(texts)}] (the "
                             "number of training texts with a dictionary mention)")
        self.texts, self.encoder = list(texts), encoder
        self.batch_size, self.seed = batch_size, seed
        self.batches_per_epoch = len(self.texts) // batch_size
        self.epoch, self.batch = 0, 0
        self._order = self._permutation(0)

    def _permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.texts))

    def state(self) -> dict[str, int]:
        return {"epoch": self.epoch, "batch": self.batch}

    def restore(self, state: Mapping[str, int]) -> None:
        self.epoch, self.batch = int(state["epoch"]), int(state["batch"])
        self._order = self._permutation(self.epoch)

    def __iter__(self):
        return self

    def example(self, i: int, epoch: int) -> dict[str, np.ndarray]:
        """Text i's (mention, candidate) draw of `epoch`, with its targets."""
        text = self.texts[i]
        rng = np.random.default_rng([self.seed, epoch, i])
        start, end, gold = text.mentions[rng.integers(len(text.mentions))]
        candidates = self.encoder.index.candidates(text.inputs.text[start:end])
        candidate = candidates[rng.integers(len(candidates))]
        return {**self.encoder.pair(text.inputs, (start, end), candidate),
                "ner_targets": text.ner_targets,
                "link_labels": np.float32(candidate == gold)}

    def __next__(self) -> dict[str, np.ndarray]:
        if self.batch == self.batches_per_epoch:
            self.restore({"epoch": self.epoch + 1, "batch": 0})
        rows = self._order[self.batch * self.batch_size:(self.batch + 1) * self.batch_size]
        self.batch += 1
        return stack([self.example(int(i), self.epoch) for i in rows])
