"""A `--dev` file for a search: k corpus documents drawn at random, with their gold labels (a benchmark's).

    python scripts/draw_dev.py ../shared/data/relaclass-amazon-1000 100 --out dev.txt        # doc_id<TAB>id,id
    python scripts/draw_dev.py ../shared/data/20newsgroups 100 --seed 3 --out dev.txt --preset 20newsgroups

On your own data, label the documents yourself: `--ids-only` writes the drawn ids, one a line, to label and
complete as `doc_id<TAB>class_id,class_id` (the dataset's class ids). On a transductive set (the corpus is the
test set) the drawn documents are test documents too: judge the search's winner on the others
(scripts/label_budget.py does).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from taxoclass.config import build_config  # noqa: E402
from taxoclass.pipeline import prepare_inputs  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data")
    ap.add_argument("k", type=int)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--preset", default=None)
    ap.add_argument("--out", required=True)
    ap.add_argument("--ids-only", action="store_true", help="the drawn ids alone, for you to label")
    ap.add_argument("overrides", nargs="*", metavar="key=value")
    args = ap.parse_args()
    inputs = prepare_inputs(build_config(args.preset, overrides=[f"data={args.data}", *args.overrides], environ={}))
    corpus, tax = inputs.corpus, inputs.taxonomy
    gold = corpus.gold if corpus.gold is not None else (inputs.test.gold if inputs.test_is_corpus else None)
    if gold is None and not args.ids_only:
        sys.exit(f"draw_dev.py: {args.data}: the corpus has no gold labels; use --ids-only and label the documents")
    rows = np.sort(np.random.default_rng(args.seed).permutation(len(corpus.ids))[: args.k])
    lines = [corpus.ids[i] if args.ids_only else f"{corpus.ids[i]}\t{','.join(tax.ids[c] for c in gold[i])}" for i in rows]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"{args.out}: {len(lines)} documents of {len(corpus.ids)}", file=sys.stderr)


if __name__ == "__main__":
    main()
