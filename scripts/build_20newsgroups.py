"""Build the 20 Newsgroups dataset folder that `--preset 20newsgroups` reads, from scikit-learn's copy of the bydate split.

    python scripts/build_20newsgroups.py data/20newsgroups       # needs the network once (about 14 MB)
    taxoclass run --preset 20newsgroups data=data/20newsgroups

The folder has the layout of `../shared/data/20newsgroups` on the development machine (TELEClass layout,
docs/data.md): `labels.txt` and `label_hierarchy.txt` (27 classes on 3 levels, our taxonomy from the newsgroup
names: `TAXONOMY` below), `train/corpus.txt.gz` (`doc_id<TAB>text`, the bydate train split, unlabelled for the
method) with `train/doc2labels.txt` (its gold, only to report the quality of mined core classes), and
`test/corpus.txt.gz` + `test/doc2labels.txt` (the bydate test split). Gold = the full path of the post's
newsgroup (1-3 classes). Each post keeps its Subject line's text (with any leading `Re:` removed) and its body,
whitespace collapsed, as `Subject. body`; the other header lines are dropped, so no newsgroup name is left in a
header. Ids are neutral (`train_N`, `test_N`) and the order is a fixed shuffle (`--seed`), so any prefix
(`max_docs=N`) and either half of the gold cover every newsgroup.

Where the posts come from: `sklearn.datasets.fetch_20newsgroups(subset="train"|"test", remove=())`, which
downloads `20news-bydate.tar.gz` (the bydate split of Jason Rennie's 20 Newsgroups page,
http://qwone.com/~jason/20Newsgroups/) into `~/scikit_learn_data` the first time. The shared copy came from
another mirror of the same split (github.com/YunomiXavia/20news-bydate, commit 2298b3e) and holds 11,306 / 7,525
posts where scikit-learn's has 11,314 / 7,532; which 15 posts it left out is not recorded, and its shuffle is
not this one. A folder built here therefore holds a few more posts in another order, and its figures can differ
from the README's in the last digit.

**Not run end to end here:** this script was written on a machine with no internet, so the download
(`fetch_posts`) has never run. The conversion is a pure function (`build_files`) that
tests/test_build_data.py checks on posts written in memory, through the project's own dataset reader, and
against the taxonomy files of the shared copy when they are present.
"""

from __future__ import annotations

import argparse
import gzip
import random
import re
import sys
from pathlib import Path

# (class id, name, parent id or None); ids and names as in the shared copy's labels.txt and label_hierarchy.txt
TAXONOMY = [
    (0, "computer", None),
    (1, "computer_graphics", 0),
    (2, "microsoft_windows", 0),
    (3, "computer_hardware", 0),
    (4, "ibm_pc_hardware", 3),
    (5, "mac_hardware", 3),
    (6, "x_window_system", 0),
    (7, "recreation", None),
    (8, "cars", 7),
    (9, "motorcycles", 7),
    (10, "sports", 7),
    (11, "baseball", 10),
    (12, "hockey", 10),
    (13, "science", None),
    (14, "cryptography", 13),
    (15, "electronics", 13),
    (16, "medicine", 13),
    (17, "space", 13),
    (18, "politics", None),
    (19, "guns", 18),
    (20, "middle_east", 18),
    (21, "political_debate", 18),
    (22, "religion", None),
    (23, "atheism", 22),
    (24, "christianity", 22),
    (25, "religious_debate", 22),
    (26, "for_sale", None),
]

# each newsgroup's leaf class: its gold is the leaf and the leaf's ancestors
NEWSGROUP_LEAF = {
    "alt.atheism": 23,
    "comp.graphics": 1,
    "comp.os.ms-windows.misc": 2,
    "comp.sys.ibm.pc.hardware": 4,
    "comp.sys.mac.hardware": 5,
    "comp.windows.x": 6,
    "misc.forsale": 26,
    "rec.autos": 8,
    "rec.motorcycles": 9,
    "rec.sport.baseball": 11,
    "rec.sport.hockey": 12,
    "sci.crypt": 14,
    "sci.electronics": 15,
    "sci.med": 16,
    "sci.space": 17,
    "soc.religion.christian": 24,
    "talk.politics.guns": 19,
    "talk.politics.mideast": 20,
    "talk.politics.misc": 21,
    "talk.religion.misc": 25,
}

RE_PREFIX = re.compile(r"^(?:re:\s*)+", re.IGNORECASE)


def label_path(newsgroup: str) -> list[int]:
    """The class ids from the top level down to the newsgroup's leaf, e.g. rec.sport.hockey -> [7, 10, 12]."""
    if newsgroup not in NEWSGROUP_LEAF:
        raise ValueError(f"unknown newsgroup {newsgroup!r}")
    parent = {cid: par for cid, _, par in TAXONOMY}
    path, node = [], NEWSGROUP_LEAF[newsgroup]
    while node is not None:
        path.append(node)
        node = parent[node]
    return path[::-1]


def post_text(raw: str) -> str:
    """One raw post (headers, a blank line, the body) as one line: `Subject. body`, whitespace collapsed; the
    Subject without its leading `Re:`s; every other header line dropped. Empty when the post has neither."""
    head, _, body = raw.replace("\r\n", "\n").partition("\n\n")
    subject, in_subject = [], False
    for line in head.split("\n"):
        if line[:1] in (" ", "\t") and in_subject:  # a folded header line continues the one before
            subject.append(line)
            continue
        in_subject = line.lower().startswith("subject:")
        if in_subject:
            subject.append(line[len("subject:"):])
    subject_text = RE_PREFIX.sub("", " ".join(" ".join(subject).split()))
    body_text = " ".join(body.split())
    if subject_text and body_text:
        return f"{subject_text}. {body_text}"
    return f"{subject_text}." if subject_text else body_text


def split_rows(posts: list[str], newsgroups: list[str], prefix: str, seed: int) -> list[tuple[str, str, list[int]]]:
    """(doc_id, text, gold path) for one split: posts in a fixed shuffled order, ids `{prefix}_N` in that order;
    a post with neither subject nor body is left out."""
    if len(posts) != len(newsgroups):
        raise ValueError(f"{len(posts)} posts but {len(newsgroups)} newsgroups")
    order = list(range(len(posts)))
    random.Random(seed).shuffle(order)
    rows = []
    for i in order:
        text = post_text(posts[i])
        if text:
            rows.append((f"{prefix}_{len(rows)}", text, label_path(newsgroups[i])))
    return rows


def build_files(train: tuple[list[str], list[str]], test: tuple[list[str], list[str]], seed: int = 0) -> dict[str, str]:
    """The folder's files as {relative path: text}, from (posts, newsgroup names) of each split; no I/O.
    The corpus files are named `.txt` here and gzipped by `write_folder`."""
    files = {
        "labels.txt": "".join(f"{cid}\t{name}\n" for cid, name, _ in TAXONOMY),
        "label_hierarchy.txt": "".join(f"{par}\t{cid}\n" for par, cid in sorted((par, cid) for cid, _, par in TAXONOMY
                                                                            if par is not None)),
    }
    for split, (posts, groups) in (("train", train), ("test", test)):
        rows = split_rows(posts, groups, split, seed)
        files[f"{split}/corpus.txt"] = "".join(f"{doc_id}\t{text}\n" for doc_id, text, _ in rows)
        files[f"{split}/doc2labels.txt"] = "".join(f"{doc_id}\t{','.join(map(str, path))}\n" for doc_id, _, path in rows)
    return files


def write_folder(folder: Path, files: dict[str, str]) -> None:
    """Write the files; `*/corpus.txt` as `corpus.txt.gz` (reproducible: no time stamp in the gzip header)."""
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        data = text.encode("utf-8")
        if name.endswith("/corpus.txt"):
            with open(path.with_suffix(".txt.gz"), "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
                gz.write(data)
        else:
            path.write_bytes(data)


def fetch_posts(subset: str) -> tuple[list[str], list[str]]:
    """(raw posts, newsgroup names) of the bydate `subset` ("train" or "test"), headers kept; downloads once."""
    from sklearn.datasets import fetch_20newsgroups

    bunch = fetch_20newsgroups(subset=subset, remove=(), shuffle=False)
    return list(bunch.data), [bunch.target_names[t] for t in bunch.target]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="the dataset folder to write (e.g. data/20newsgroups)")
    parser.add_argument("--seed", type=int, default=0, help="the fixed shuffle of each split (default 0)")
    args = parser.parse_args(argv)
    if args.folder.exists() and any(args.folder.iterdir()):
        parser.error(f"{args.folder} exists and is not empty")
    files = build_files(fetch_posts("train"), fetch_posts("test"), seed=args.seed)
    write_folder(args.folder, files)
    counts = {split: files[f"{split}/doc2labels.txt"].count("\n") for split in ("train", "test")}
    print(f"{args.folder}: {counts['train']} corpus posts, {counts['test']} test posts, {len(TAXONOMY)} classes; "
          f"check it with: taxoclass validate {args.folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
