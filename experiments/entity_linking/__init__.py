"""CCKS2019 entity linking: max-match NER and joint NER + linking (kexue.fm/archives/6919).

Parts so far (see docs/entity_linking.md once the model lands):

* `kb`: readers for the competition's `kb_data` and annotated `train.json` / `develop.json`
  files (every record checked, offsets against their texts), the alias index `kb2id` and
  the entity descriptions the linker reads;
* `max_match`: dictionary matching with an Aho-Corasick automaton, the max-match best path,
  dictionary pruning from training statistics, candidate restriction and the recall and
  precision of each of these stages;
* `generate`: a generated annotated corpus (same-name entities, NIL mentions, unannotated
  dictionary words) over the real KB excerpt or a small embedded KB;
* `stats`: `python -m experiments.entity_linking.stats` prints the per-stage table.
"""
