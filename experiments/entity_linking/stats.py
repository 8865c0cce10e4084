"""Recall and precision of each dictionary stage of the entity-linking pipeline.

    python -m experiments.entity_linking.stats                    # generated texts
    python -m experiments.entity_linking.stats --kb KB_DATA --train TRAIN.json [--dev DEV.json]

Prints a markdown table: max-match with the full alias dictionary, after pruning it with the
training statistics, and after restricting the candidates (kexue.fm/archives/6919 reports
recall ≈ 92% / precision ≈ 30% raw and ≈ 91.8% / 60% pruned on the competition's data).
Without --train the texts are generated (`generate.py`) from the KB; without --kb the KB is
the real CCKS2019 excerpt in ../shared when it is there, else the embedded one. Without
--dev the training file is split as the post splits it (every 9th text of a fixed order).
"""

import argparse
import pathlib
import sys
import tempfile

from experiments.entity_linking import generate, kb, max_match
from experiments.errors import UserError

SHARED_KB = (pathlib.Path(__file__).resolve().parents[2].parent / "shared" / "data" /
             "entity_linking" / "ccks2019_el_kb_subset" / "kb_data")

STAGE_NAMES = {"max_match": "max-match, full dictionary",
               "pruned": "after pruning (rem+1)/(pred+1) ≥ threshold",
               "restricted": "after candidate restriction"}


def markdown_table(figures: dict[str, dict[str, float]]) -> str:
    """The per-stage figures of `max_match.pipeline_figures` as a markdown table."""
    lines = ["| stage | recall | precision | F1 | link recall | candidates / mention | "
             "dictionary words |", "|---|---|---|---|---|---|---|"]
    for stage, row in figures.items():
        lines.append(f"| {STAGE_NAMES.get(stage, stage)} | {row['recall']:.3f} | "
                     f"{row['precision']:.3f} | {row['f1']:.3f} | {row['link_recall']:.3f} | "
                     f"{row['candidates']:.2f} | {row['words']} |")
    return "\n".join(lines)


def _read_kb(path, skip_bad: bool) -> list[kb.Entity]:
    entities, skipped = kb.read_kb(path, skip_bad=skip_bad)
    if len(skipped):
        print(skipped.summary())
    return entities


def _read_examples(path, skip_bad: bool) -> list[kb.Example]:
    examples, skipped = kb.read_examples(path, skip_bad=skip_bad)
    if len(skipped):
        print(skipped.summary())
    return examples


def load(args) -> tuple[list[kb.Entity], list[kb.Example], list[kb.Example], str]:
    """(entities, train, dev, a line saying where they came from) for the parsed flags."""
    if args.kb:
        entities, kb_name = _read_kb(args.kb, args.skip_bad), str(args.kb)
    elif SHARED_KB.exists():
        entities, kb_name = _read_kb(SHARED_KB, args.skip_bad), f"{SHARED_KB} (real excerpt)"
    else:
        entities, kb_name = list(generate.EMBEDDED_KB), "the embedded KB"
    if args.dev and not args.train:
        raise UserError("--dev needs --train (the statistics come from the training texts)")
    if args.train:
        train = _read_examples(args.train, args.skip_bad)
        if args.dev:
            dev = _read_examples(args.dev, args.skip_bad)
            source = f"texts: {args.train} / {args.dev}"
        else:
            train, dev = max_match.split_train_dev(train, seed=args.seed)
            source = f"texts: {args.train}, every 9th of a fixed order as dev"
    else:
        with tempfile.TemporaryDirectory() as directory:
            paths = generate.write_corpus(directory, entities, num_train=args.num_train,
                                          num_dev=args.num_dev, seed=args.seed,
                                          write_kb=False)
            # Read back through the loaders, as a user's files would be.
            train, dev = (_read_examples(paths[name], False) for name in ("train", "dev"))
        source = f"texts: generated (seed {args.seed})"
    return entities, train, dev, f"KB: {kb_name}, {len(entities)} entities; {source}"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kb", type=pathlib.Path, help="kb_data file (JSON lines)")
    parser.add_argument("--train", type=pathlib.Path, help="annotated train.json")
    parser.add_argument("--dev", type=pathlib.Path, help="annotated texts to score on")
    parser.add_argument("--threshold", type=float, default=max_match.PRUNE_THRESHOLD,
                        help="prune a word when (rem+1)/(pred+1) reaches this (default 5)")
    parser.add_argument("--min-count", type=int, default=max_match.CANDIDATE_MIN_COUNT,
                        help="keep a candidate id seen this often for its mention (default 2)")
    parser.add_argument("--num-train", type=int, default=4000, help="generated training texts")
    parser.add_argument("--num-dev", type=int, default=500, help="generated dev texts")
    parser.add_argument("--seed", type=int, default=0, help="generator and split seed")
    parser.add_argument("--skip-bad", action="store_true",
                        help="skip (and count) malformed records instead of failing")
    args = parser.parse_args(argv)
    try:
        entities, train, dev, source = load(args)
    except UserError as error:
        sys.exit(f"error: {error}")
    index = kb.build_index(entities)
    figures = max_match.pipeline_figures(train, dev, index, threshold=args.threshold,
                                         min_count=args.min_count)
    gold = figures["max_match"]["gold"]
    print(f"{source}\n{len(train)} training texts, {len(dev)} dev texts with {gold} linked "
          f"gold mentions; pruning threshold {args.threshold:g}, candidate min count "
          f"{args.min_count}\n")
    print(markdown_table(figures))


if __name__ == "__main__":
    main()
