"""Labelled sentence pairs → paraphrase groups (connected components of the positive pairs).

    python -m experiments.sentence_similarity.convert LCQMC/dev.txt AFQMC/train.txt -o groups.tsv
    python -m experiments.sentence_similarity.convert sts.tsv --positive 5 --header -o groups.tsv

Input: tab-separated `s1<TAB>s2<TAB>label` (LCQMC / BQ / AFQMC style; `--first-column` and
`--label-column` move the columns). Output: the seed's `group_id<TAB>sentence` format, one
line per sentence, groups of size ≥ 2 only.
"""

import argparse
import pathlib

from experiments.sentence_similarity import input_pipeline


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pair_files", nargs="+", type=pathlib.Path)
    parser.add_argument("-o", "--output", type=pathlib.Path, required=True)
    parser.add_argument("--first-column", type=int, default=0)
    parser.add_argument("--label-column", type=int, default=-1)
    parser.add_argument("--positive", nargs="+", default=["1"],
                        help="label values meaning 'paraphrase' (default 1)")
    parser.add_argument("--negative", nargs="+", default=None,
                        help="label values meaning 'not a paraphrase' (default: 0, or every "
                             "other value seen with --positive given)")
    parser.add_argument("--header", action="store_true", help="skip each file's first line")
    parser.add_argument("--skip-bad", action="store_true",
                        help="skip (and count) malformed rows instead of failing")
    args = parser.parse_args(argv)
    labels = {value: True for value in args.positive}
    labels.update({value: False for value in (args.negative or ["0"])})
    pairs = []
    for path in args.pair_files:
        file_pairs, skipped = input_pipeline.read_pair_file(
            path, label_column=args.label_column, first_column=args.first_column,
            positive=labels, skip_header=args.header, skip_bad=args.skip_bad)
        print(f"{path}: {len(file_pairs)} pairs, "
              f"{sum(p for _, _, p in file_pairs)} positive")
        if len(skipped):
            print(skipped.summary())
        pairs += file_pairs
    groups = input_pipeline.pairs_to_groups(pairs)
    input_pipeline.write_groups(groups, args.output)
    print(f"{args.output}: {len(groups)} groups, {sum(map(len, groups))} sentences")


if __name__ == "__main__":
    main()
