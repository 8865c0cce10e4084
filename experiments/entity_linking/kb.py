"""CCKS2019 entity-linking files, the alias index and the entity descriptions.

File formats (the competition's, one JSON object per line):

* `kb_data`: `{"subject_id": "10001", "subject": "胜利", "alias": ["胜利"], "type": ["Thing"],
  "data": [{"predicate": "摘要", "object": "..."}, ...]}`. `alias` and `type` may be absent.
* `train.json` / `develop.json`: `{"text_id": "1", "text": "...", "mention_data": [{"kb_id":
  "10001", "mention": "胜利", "offset": "3"}, ...]}`. The offset is a string of the mention's
  0-based character position; `text[offset:offset + len(mention)]` must be the mention. A
  kb_id of "NIL" (or "NIL_..." as later editions of the task write it) marks a mention with
  no entity in the knowledge base. The competition's `develop.json` has no `mention_data`:
  read it with `labelled=False`.

Every record is checked; a bad one raises `experiments.data.RecordError` naming the file, the
line and the field (`mention_data[2].offset`), or with `skip_bad=True` is skipped and counted
in the returned `Skipped` log.

Preprocessing as in the post (kexue.fm/archives/6919): everything is lower-cased; the alias
index `kb2id` maps each entity's subject and aliases, lower-cased and with the title marks 《》
stripped from both ends, to the ids of the entities that carry it; an entity's description
is its `predicate：object` lines in file order plus a line `名称：name1、name2…`, lower-cased.
"""

import dataclasses
import json
import re
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from experiments import data

NIL = "NIL"
# The post's descriptions keep objects of at most 10 characters for its object-match feature.
MAX_OBJECT_LENGTH = 10


def is_nil(kb_id: str) -> bool:
    """True for "NIL" and "NIL_<type>" ids: a mention with no entity in the KB."""
    return kb_id == NIL or kb_id.startswith(NIL + "_")


def lower_same_length(text: str) -> str:
    """Lower-cases each character whose lower case is one character (offsets stay valid).

    `str.lower` turns a few characters into two ('İ' → 'i̇'), which would shift every offset
    after them; those are kept as they are.
    """
    if text.isascii():
        return text.lower()
    return "".join(low if len(low := char.lower()) == 1 else char for char in text)


def normalize_alias(alias: str) -> str:
    """An index key: lower-cased, title marks 《》 stripped from both ends."""
    return lower_same_length(alias).strip("《》")


@dataclasses.dataclass(frozen=True)
class Entity:
    """One `kb_data` record."""

    subject_id: str
    subject: str
    aliases: tuple[str, ...]                  # as in the file (may repeat the subject)
    types: tuple[str, ...]
    facts: tuple[tuple[str, str], ...]        # (predicate, object), in file order
    line: int = 0                             # 1-based line in the file (0: not from a file)


@dataclasses.dataclass(frozen=True)
class Mention:
    """One entry of `mention_data`."""

    mention: str
    offset: int
    kb_id: str

    @property
    def is_nil(self) -> bool:
        return is_nil(self.kb_id)


@dataclasses.dataclass(frozen=True)
class Example:
    """One annotated (or, for `develop.json`, unannotated) text."""

    text_id: str
    text: str
    mentions: tuple[Mention, ...]
    line: int = 0
    labelled: bool = True

    @property
    def linked(self) -> tuple[Mention, ...]:
        """The mentions with a KB id (NIL mentions left out, as the seed trains)."""
        return tuple(m for m in self.mentions if not m.is_nil)


class _Bad(Exception):
    """A field problem inside one record: (field, problem)."""

    def __init__(self, field: str | None, problem: str):
        super().__init__(problem)
        self.field, self.problem = field, problem


def _string(record: Mapping, key: str, name: str | None = None, *, required: bool = True,
            allow_int: bool = False) -> str:
    name = name or key
    if key not in record:
        raise _Bad(name, "missing")
    value = record[key]
    if allow_int and isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise _Bad(name, f"expected a string, got {type(value).__name__} {value!r}")
    if required and not value.strip():
        raise _Bad(name, "empty")
    return value


def _string_list(record: Mapping, key: str) -> tuple[str, ...]:
    values = record.get(key, [])
    if not isinstance(values, list):
        raise _Bad(key, f"expected a list of strings, got {type(values).__name__}")
    for i, value in enumerate(values):
        if not isinstance(value, str):
            raise _Bad(f"{key}[{i}]", f"expected a string, got {type(value).__name__} "
                                      f"{value!r}")
    return tuple(values)


def _object(value, name: str) -> Mapping:
    if not isinstance(value, dict):
        raise _Bad(name, f"expected a JSON object, got {type(value).__name__}")
    return value


def _parse_entity(record: Mapping, line: int) -> Entity:
    subject_id = _string(record, "subject_id", allow_int=True).strip()
    subject = _string(record, "subject")
    aliases = _string_list(record, "alias")
    types = _string_list(record, "type")
    if "data" not in record:
        raise _Bad("data", "missing")
    if not isinstance(record["data"], list):
        raise _Bad("data", f"expected a list of {{predicate, object}}, got "
                           f"{type(record['data']).__name__}")
    facts = []
    for i, item in enumerate(record["data"]):
        item = _object(item, f"data[{i}]")
        facts.append((_string(item, "predicate", f"data[{i}].predicate", required=False),
                      _string(item, "object", f"data[{i}].object", required=False)))
    return Entity(subject_id, subject, aliases, types, tuple(facts), line)


def _parse_offset(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise _Bad(name, f"expected an integer or a string of one, got {value!r}")
    try:
        offset = int(value.strip() if isinstance(value, str) else value)
    except ValueError:
        raise _Bad(name, f"not an integer: {value!r}") from None
    if offset < 0:
        raise _Bad(name, f"negative offset {offset}")
    return offset


def _parse_mention(item, text: str, i: int) -> Mention:
    prefix = f"mention_data[{i}]"
    item = _object(item, prefix)
    kb_id = _string(item, "kb_id", f"{prefix}.kb_id", allow_int=True).strip()
    mention = _string(item, "mention", f"{prefix}.mention")
    if "offset" not in item:
        raise _Bad(f"{prefix}.offset", "missing")
    offset = _parse_offset(item["offset"], f"{prefix}.offset")
    found = text[offset:offset + len(mention)]
    if found != mention:
        raise _Bad(f"{prefix}.offset",
                   f"text[{offset}:{offset + len(mention)}] is {found!r}, not the mention "
                   f"{mention!r}" + ("" if offset + len(mention) <= len(text)
                                     else f" (the text has {len(text)} characters)"))
    return Mention(mention, offset, kb_id)


def _parse_example(record: Mapping, line: int, labelled: bool) -> Example:
    text_id = _string(record, "text_id", allow_int=True).strip()
    text = _string(record, "text")
    if "mention_data" not in record:
        if labelled:
            raise _Bad("mention_data", "missing (an unlabelled file reads with labelled=False)")
        return Example(text_id, text, (), line, labelled=False)
    items = record["mention_data"]
    if not isinstance(items, list):
        raise _Bad("mention_data", f"expected a list, got {type(items).__name__}")
    mentions = tuple(_parse_mention(item, text, i) for i, item in enumerate(items))
    return Example(text_id, text, mentions, line, labelled=True)


def _read_records(path, parse, *, skip_bad: bool):
    """(parsed records, Skipped): JSON lines through `parse(record, line)`, blank lines ignored."""
    lines, skipped = data.read_numbered_lines(path, skip_bad=skip_bad)
    records = []
    for number, text in lines:
        if not text.strip():
            continue
        try:
            try:
                record = json.loads(text)
            except json.JSONDecodeError as error:
                raise _Bad(None, f"invalid JSON: {error.msg} (column {error.colno})") from None
            if not isinstance(record, dict):
                raise _Bad(None, "a record must be a JSON object, got "
                                 f"{type(record).__name__}")
            records.append(parse(record, number))
        except _Bad as bad:
            error = data.RecordError(path, number, bad.field, bad.problem)
            if not skip_bad:
                raise error from None
            skipped.errors.append(error)
    return records, skipped


def read_kb(path, *, skip_bad: bool = False) -> tuple[list[Entity], data.Skipped]:
    """Reads a `kb_data` file.

    Args:
      path: the file (JSON lines, blank lines ignored).
      skip_bad: skip (and count) malformed records instead of raising; a repeated
        `subject_id` counts as malformed (the first record with it is kept).

    Returns:
      (entities in file order, skipped).

    Raises:
      experiments.data.RecordError: naming the file, line and field of the first bad record
        (`subject_id`, `subject`, `alias[i]`, `type[i]`, `data[i].object`, ...).
    """
    first_line: dict[str, int] = {}

    def parse(record, line):
        entity = _parse_entity(record, line)
        if entity.subject_id in first_line:
            raise _Bad("subject_id", f"duplicate id {entity.subject_id!r} (first on line "
                                     f"{first_line[entity.subject_id]})")
        first_line[entity.subject_id] = line
        return entity

    return _read_records(path, parse, skip_bad=skip_bad)


def read_examples(path, *, labelled: bool = True, skip_bad: bool = False
                  ) -> tuple[list[Example], data.Skipped]:
    """Reads a `train.json` / `develop.json` file.

    Args:
      path: the file (JSON lines, blank lines ignored).
      labelled: require `mention_data` on every record; with False a record without it
        reads as an unlabelled example (the competition's `develop.json`).
      skip_bad: skip (and count) malformed records instead of raising.

    Returns:
      (examples in file order, skipped).

    Raises:
      experiments.data.RecordError: naming the file, line and field of the first bad record,
        e.g. `mention_data[1].offset` when the text at the offset is not the mention.
    """
    return _read_records(path, lambda record, line: _parse_example(record, line, labelled),
                         skip_bad=skip_bad)


def example_record(example: Example) -> dict:
    """The CCKS JSON object of an example (offsets as strings, as the competition writes)."""
    return {"text_id": example.text_id, "text": example.text,
            "mention_data": [{"kb_id": m.kb_id, "mention": m.mention, "offset": str(m.offset)}
                             for m in example.mentions]}


def entity_record(entity: Entity) -> dict:
    """The `kb_data` JSON object of an entity."""
    return {"alias": list(entity.aliases), "subject_id": entity.subject_id,
            "subject": entity.subject, "type": list(entity.types),
            "data": [{"predicate": p, "object": o} for p, o in entity.facts]}


def write_jsonl(records: Iterable[dict], path) -> None:
    """Writes JSON objects one per line, UTF-8, non-ASCII characters as they are."""
    with open(path, "w", encoding="utf-8") as stream:
        for record in records:
            stream.write(json.dumps(record, ensure_ascii=False) + "\n")


# --------------------------------------------------------------------------------------
# The index the max-match NER and the linker read.


def entity_names(entity: Entity) -> tuple[str, ...]:
    """Subject then aliases, lower-cased, each once, in that order (title marks kept)."""
    return tuple(dict.fromkeys(lower_same_length(name)
                               for name in (entity.subject, *entity.aliases)))


def describe(entity: Entity, max_chars: int | None = None) -> str:
    """The entity's description: `predicate：object` lines, then `名称：names`, lower-cased.

    Args:
      entity: the KB record.
      max_chars: keep only the first `max_chars` characters; None keeps all (the post's code
        truncates nothing here: its model reads the whole description).

    Returns:
      The lines joined with "\\n", in file order, the name line last.
    """
    lines = [f"{predicate}：{value}" for predicate, value in entity.facts]
    lines.append("名称：" + "、".join(entity_names(entity)))
    text = lower_same_length("\n".join(lines))
    return text if max_chars is None else text[:max_chars]


def short_objects(entity: Entity, max_length: int = MAX_OBJECT_LENGTH) -> tuple[str, ...]:
    """The entity's distinct non-empty objects of at most `max_length` characters.

    Lower-cased (they are matched against lower-cased texts), longest first, ties in file
    order: the order in which the post's regular expression tries them.
    """
    values = dict.fromkeys(lower_same_length(value) for _, value in entity.facts
                           if 0 < len(value) <= max_length)
    return tuple(sorted(values, key=len, reverse=True))


def object_match_mask(text: str, objects: Sequence[str]) -> np.ndarray:
    """(len(text),) float32: 1 where `text` holds one of `objects`, leftmost-longest first.

    The post's fourth linking feature: does this character of the query lie in a match of
    one of the candidate's short objects (`short_objects`, longest first)?
    """
    mask = np.zeros(len(text), np.float32)
    if objects:
        pattern = re.compile("|".join(re.escape(value) for value in objects))
        for match in pattern.finditer(lower_same_length(text)):
            mask[match.start():match.end()] = 1.0
    return mask


@dataclasses.dataclass(frozen=True)
class KBIndex:
    """The alias index and the entity descriptions.

    Attributes:
      kb2id: normalised alias (`normalize_alias`) → the ids of the entities carrying it, in
        KB order.
      descriptions: subject_id → `describe(entity)`.
      objects: subject_id → `short_objects(entity)`.
    """

    kb2id: Mapping[str, tuple[str, ...]]
    descriptions: Mapping[str, str]
    objects: Mapping[str, tuple[str, ...]]

    @property
    def words(self) -> tuple[str, ...]:
        """The dictionary of the max-match NER: every key of `kb2id`."""
        return tuple(self.kb2id)

    def candidates(self, mention: str) -> tuple[str, ...]:
        """The ids of the entities named `mention` (any case, with or without 《》)."""
        return self.kb2id.get(normalize_alias(mention), ())

    def without(self, words: Iterable[str]) -> "KBIndex":
        """The same index with the aliases `words` (index keys) removed."""
        removed = set(words)
        return dataclasses.replace(
            self, kb2id={w: ids for w, ids in self.kb2id.items() if w not in removed})


def build_index(entities: Iterable[Entity], *, max_description_chars: int | None = None,
                max_object_length: int = MAX_OBJECT_LENGTH) -> KBIndex:
    """The alias index and the descriptions of `entities` (the post's preprocessing, see the
    module docstring).

    Args:
      entities: the KB, e.g. from `read_kb`.
      max_description_chars: passed to `describe` (None: whole descriptions).
      max_object_length: passed to `short_objects`.

    Returns:
      A KBIndex; an alias that is empty once normalised (e.g. "《》") is left out.
    """
    kb2id: dict[str, list[str]] = {}
    descriptions, objects = {}, {}
    for entity in entities:
        for name in entity_names(entity):
            key = normalize_alias(name)
            if key:
                ids = kb2id.setdefault(key, [])
                if entity.subject_id not in ids:
                    ids.append(entity.subject_id)
        descriptions[entity.subject_id] = describe(entity, max_description_chars)
        objects[entity.subject_id] = short_objects(entity, max_object_length)
    return KBIndex({key: tuple(ids) for key, ids in kb2id.items()}, descriptions, objects)
