"""CCKS2019 entity linking: max-match NER and joint NER + linking (kexue.fm/archives/6919).

Parts (docs/entity_linking.md):

* `kb`: readers for the competition's `kb_data` and annotated `train.json` / `develop.json`
  files (every record checked, offsets against their texts), the alias index `kb2id` and
  the entity descriptions the linker reads;
* `max_match`: dictionary matching with an Aho-Corasick automaton, the max-match best path,
  dictionary pruning from training statistics, candidate restriction and the recall and
  precision of each of these stages;
* `generate`: a generated annotated corpus (same-name entities, NIL mentions, unannotated
  dictionary words) over the real KB excerpt or a small embedded KB;
* `stats`: `python -m experiments.entity_linking.stats` prints the per-stage table;
* `word_vectors`: jieba segmentation, word2vec text files, gensim training
  (`python -m experiments.entity_linking.word_vectors --out FILE [TEXTS...]`);
* `input_pipeline`, `scoring`, `train`, `config`: the joint model's inputs, decoding, F1,
  NIL threshold and error analysis, training on the shared trainer and link mode
  (`python launch.py entity_linking[:demo]`).
"""

from experiments.entity_linking.config import get_config
from experiments.entity_linking.train import run

__all__ = ["get_config", "run"]
