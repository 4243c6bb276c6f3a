"""``likewise index``: build a FAISS index from embeddings, and search it.

    likewise index build --embeddings E.npy [--labels L.npy] [--ids I.npy] --out DIR
                         [--kind flat|hnsw|ivf] [--metric cosine|dot|euclidean]
    likewise index search DIR --queries Q.npy -k 10 [--out results.jsonl]

``search`` prints one JSON object per query line:
``{"query": i, "ids": [...], "scores": [...], "labels": [...]}`` (``labels`` only
when the index has them; fewer than k entries when the index holds fewer
vectors). Scores are similarities (negated distances for euclidean).
The index directory and the results file are written atomically.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

#: command-line flag -> Index parameter
_PARAMS = {
    "M": "M",
    "ef_construction": "ef_construction",
    "ef_search": "ef_search",
    "nlist": "nlist",
    "nprobe": "nprobe",
}


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "index", help="build and search a FAISS index", description=__doc__.split("\n\n")[0]
    )
    sub = p.add_subparsers(dest="index_command", metavar="ACTION", parser_class=type(p))
    sub.required = True

    b = sub.add_parser("build", help="build an index directory from embeddings")
    b.add_argument("--embeddings", required=True, help="[n, D] array (.npy, .npz[:key], .csv)")
    b.add_argument(
        "--labels", help="[n] labels stored with the vectors: integers or class names (one-column .csv)"
    )
    b.add_argument("--ids", help="[n] non-negative integer ids (default 0..n-1)")
    b.add_argument("--out", required=True, help="index directory to write (new, empty, or an older index)")
    b.add_argument(
        "--force",
        action="store_true",
        help="also replace another likewise artifact at --out (never other files)",
    )
    b.add_argument("--kind", default="flat", choices=("flat", "hnsw", "ivf"))
    b.add_argument("--metric", default="cosine", choices=("cosine", "dot", "euclidean"))
    b.add_argument("--M", type=int, help="hnsw: graph degree (default 32)")
    b.add_argument("--ef-construction", type=int, help="hnsw: build beam width (default 200)")
    b.add_argument("--ef-search", type=int, help="hnsw: search beam width (default 128)")
    b.add_argument("--nlist", type=int, help="ivf: number of lists (default round(4 sqrt(n)))")
    b.add_argument("--nprobe", type=int, help="ivf: lists searched per query (default 32)")
    b.set_defaults(func=run_build)

    s = sub.add_parser("search", help="search an index directory; one JSON line per query")
    s.add_argument("index", help="index directory written by `likewise index build`")
    s.add_argument("--queries", required=True, help="[Q, D] array (.npy, .npz[:key], .csv)")
    s.add_argument("-k", "--k", type=int, default=10, help="neighbours per query (default 10)")
    s.add_argument("--ef-search", type=int, help="hnsw: override the search beam width")
    s.add_argument("--nprobe", type=int, help="ivf: override the lists searched")
    s.add_argument("--out", help="write the JSON lines to this file instead of stdout")
    s.set_defaults(func=run_search)


def _load(spec: str) -> Any:
    from likewise.io import load_array, split_key

    path, key = split_key(spec)
    return load_array(path, key)


def run_build(args: argparse.Namespace) -> int:
    from likewise.artifacts import check_replaceable
    from likewise.index import Index
    from likewise.inputs import as_labels, as_matrix

    x = as_matrix(_load(args.embeddings), f"--embeddings ({args.embeddings})")
    labels = ids = None
    if args.labels:
        y = _load(args.labels)
        y = y[:, 0] if y.ndim == 2 and y.shape[1] == 1 else y
        labels = as_labels(y, f"--labels ({args.labels})")
        if len(labels) != len(x):
            raise ValueError(
                f"--labels ({args.labels}) has {len(labels)} entries but --embeddings has {len(x)} rows"
            )
    if args.ids:
        ids = _load(args.ids)
        ids = ids[:, 0] if ids.ndim == 2 and ids.shape[1] == 1 else ids
        if ids.shape != (len(x),):
            raise ValueError(f"--ids ({args.ids}) has shape {ids.shape} but --embeddings has {len(x)} rows")
    params = {name: getattr(args, flag) for flag, name in _PARAMS.items() if getattr(args, flag) is not None}
    index = Index(x.shape[1], metric=args.metric, kind=args.kind, **params)
    index.add(x, ids=ids, labels=labels)
    check_replaceable(args.out, "index", overwrite=args.force)  # before the work, not after it
    index.save(args.out, overwrite=args.force)
    print(f"wrote {args.out}: {index!r}", file=sys.stderr)
    return 0


def run_search(args: argparse.Namespace) -> int:
    from likewise.artifacts import check_output_file
    from likewise.index import Index, as_matrix
    from likewise.io import atomic_write_text

    if args.out:
        check_output_file(args.out, "jsonl")
    if args.k < 1:
        raise ValueError(f"-k must be a positive integer, got {args.k}")
    index = Index.load(args.index)
    overrides = {
        name: getattr(args, name) for name in ("ef_search", "nprobe") if getattr(args, name) is not None
    }
    if overrides:
        index.set_params(**overrides)
    q = as_matrix(_load(args.queries), f"--queries ({args.queries})")
    if q.shape[1] != index.dim:
        raise ValueError(
            f"--queries ({args.queries}) have {q.shape[1]} dimensions but the index has {index.dim}"
        )
    scores, ids = index.search(q, args.k)
    labels = index.labels_for(ids) if index.has_labels else None
    lines = []
    for i in range(len(q)):
        keep = ids[i] >= 0
        row: dict[str, Any] = {"query": i, "ids": ids[i][keep].tolist(), "scores": scores[i][keep].tolist()}
        if labels is not None:
            row["labels"] = labels[i][keep].tolist()
        lines.append(json.dumps(row))
    text = "\n".join(lines) + "\n"
    if args.out:
        atomic_write_text(args.out, text)
    else:
        sys.stdout.write(text)
    return 0
