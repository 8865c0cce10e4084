"""Entity linking: max-match texts/s (Aho-Corasick vs a Python trie) and end-to-end linking texts/s.

Texts are generated (`experiments.entity_linking.generate`) from the real CCKS2019 KB excerpt
in ../shared when it is there, else from the embedded KB.

* max-match: the whole max-match (matching plus best path) over the full alias dictionary,
  with the pyahocorasick automaton the experiment uses and with the plain Python trie
  (`max_match.TrieMatcher`, the baseline); each timed call is one pass over all the texts.
* end to end: `train.Linker.predict` with the demo's model sizes (untrained weights: the
  work does not depend on their values) on raw texts: encoding (lower-casing, jieba, max-
  match, features), the NER pass, decoding, candidates and the p_link of every candidate,
  as link mode runs it. The first call (compilation) is reported apart.
"""

import jax
import numpy as np

from experiments.benchmarks import harness
from experiments.entity_linking import config as el_config
from experiments.entity_linking import (
    generate,
    input_pipeline,
    kb,
    max_match,
    stats,
    train,
    word_vectors,
)


def _entities() -> tuple[list[kb.Entity], str]:
    if stats.SHARED_KB.exists():
        return kb.read_kb(stats.SHARED_KB)[0], "real CCKS2019 KB excerpt"
    return list(generate.EMBEDDED_KB), "embedded KB"


def run(report: harness.Report, quick: bool) -> None:
    entities, source = _entities()
    count = 200 if quick else 2000
    texts = [e.text for e in generate.generate(entities, count, seed=1)]
    index = kb.build_index(entities)
    report.note(f"{count} texts generated from the {source} ({len(entities)} entities, "
                f"{len(index.kb2id)} aliases)")

    lowered = [kb.lower_same_length(text) for text in texts]
    group = f"max-match, {count} texts"
    rows = []
    for name, matcher, baseline in (("python trie", max_match.TrieMatcher, True),
                                    ("aho-corasick", max_match.AhoCorasickMatcher, False)):
        spans = max_match.MaxMatcher.build(index.words, matcher=matcher).spans
        # One pass is milliseconds: many repeats, so the median survives a busy machine.
        rows.append(report.time_call(group, name, lambda spans=spans: [spans(t) for t in lowered],
                                     baseline=baseline, repeats=21, shapes=f"{count} texts"))
        report.note(f"{name}: {count / rows[-1].median_s:,.0f} texts/s")
    # Also checks that the two matchers agree on every text.
    figures = max_match.compare_matchers(index.words, texts, repeats=5)
    report.finding("max-match texts/s, Aho-Corasick over the Python trie",
                   rows[0].median_s / rows[1].median_s, speed=True, target=1.0,
                   detail=f"matching alone {figures['match_speedup']:.2f}× (best of 5)")

    config = el_config.get_config("demo")
    vocab = input_pipeline.Vocabulary.build(index.descriptions.values(), 1)
    vectors = word_vectors.WordVectors(
        tuple(sorted({w for d in index.descriptions.values() for w in word_vectors.segment(d)})),
        np.zeros((1, config.data.word_vector_dim), np.float32))
    vectors = word_vectors.WordVectors(vectors.words, np.random.default_rng(0).normal(
        size=(len(vectors.words) + 1, vectors.table.shape[1])).astype(np.float32))
    encoder = input_pipeline.Encoder(index, vocab, vectors, config.data.maxlen,
                                     config.data.description_maxlen)
    model = train.build_model(config, vocab.size)
    state = train.make_init_state(model, train.make_optimizer(config), vectors.table,
                                  config.data.maxlen, config.data.description_maxlen
                                  )(jax.random.PRNGKey(0))
    linker = train.Linker(model, encoder, {}, config.inference, config.eval_batch_size)
    params_and_table = (state["params"], state["word_table"])
    sample = texts[:100 if quick else 1000]
    row = report.time_call(f"end to end, {len(sample)} texts", "Linker.predict (demo sizes)",
                           lambda: linker.predict(params_and_table, sample), baseline=True,
                           repeats=1 if quick else 3, shapes=f"{len(sample)} texts, "
                           f"T={config.data.maxlen}, S={config.data.description_maxlen}")
    report.note(f"end-to-end linking: {len(sample) / row.median_s:,.0f} texts/s "
                f"(first call, with compilation: {row.compile_s:.1f} s)")
