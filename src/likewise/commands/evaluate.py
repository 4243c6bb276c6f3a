"""``likewise evaluate``: retrieval and verification metrics of embeddings, plus an HTML report.

    likewise evaluate --embeddings E.npy --labels L.npy [--ref-embeddings R.npy --ref-labels RL.npy]
                      [--metric cosine] [-k 1 5 10] [--images I.npy] [--out DIR]

Prints the metrics table; with ``--out`` writes ``DIR/metrics.json`` and
``DIR/report.html``. Arrays may be ``.npy``, ``.npz`` (``file.npz:key``) or CSV;
labels may be integers or class names (a one-column CSV of names, with or
without a header line such as ``label``). ``metrics.json`` is strict JSON: a
value that is not a finite number (e.g. ``threshold_at_far_1e-03`` when no
threshold reaches that rate) is ``null``.
Every input is checked and every number computed before anything is written.

Verification pairs: without references, pairs within the set
(:func:`likewise.evaluation.verification_pairs`); with references, query x
reference pairs. All pairs when there are at most ``--max-pairs``, else a
uniform seeded sample — or, when that sample would hold fewer than
``MIN_POSITIVE`` same-label pairs, a balanced one (as many different- as
same-label pairs; ROC, EER and TAR@FAR are unaffected by the balance, AP and the
best-F1/accuracy numbers are). ``verification.pair_sampling`` says which.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

#: below this many same-label pairs in a uniform sample, sample balanced pairs instead
MIN_POSITIVE = 100


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="retrieval + verification metrics of embeddings, and an HTML report",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("--embeddings", required=True, help="[n, D] array (.npy, .npz[:key], .csv)")
    p.add_argument("--labels", required=True, help="[n] class ids or names (.npy, .npz[:key], .csv)")
    p.add_argument("--ref-embeddings", help="reference set [N, D] (default: leave-one-out on --embeddings)")
    p.add_argument("--ref-labels", help="[N] class ids or names of the references")
    p.add_argument("--metric", default="cosine", choices=("cosine", "dot", "euclidean", "squared_euclidean"))
    p.add_argument("-k", "--k", type=int, nargs="+", default=[1, 5, 10], help="cut-offs of recall@k")
    p.add_argument(
        "--images", help="[n, H, W(, C)] or [n, C, H, W] .npy: adds retrieval examples to the report"
    )
    p.add_argument("--max-pairs", type=int, default=200_000, help="verification pairs (default 200000)")
    p.add_argument("--max-points", type=int, default=2000, help="points in the 2-D map (default 2000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="directory for metrics.json and report.html")
    p.add_argument("--no-report", action="store_true", help="with --out, write metrics.json only")
    p.set_defaults(func=run)


def _array(spec: str, what: str) -> np.ndarray:
    from likewise.io import load_array, split_key

    path, key = split_key(spec)
    return load_array(path, key)


def _matrix(spec: str, what: str) -> np.ndarray:
    from likewise.inputs import as_matrix

    return as_matrix(_array(spec, what), f"{what} ({spec})")


def _labels(spec: str, what: str, n: int, of: str) -> np.ndarray:
    from likewise.inputs import as_labels

    y = _array(spec, what)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    y = as_labels(y, f"{what} ({spec})")
    if y.shape[0] != n:
        raise ValueError(f"{what} ({spec}) has {y.shape[0]} entries but {of} has {n} rows")
    return y


def _images(spec: str, n: int) -> np.ndarray:
    from likewise.io import split_key
    from likewise.report.retrieval_examples import as_display_images

    path, key = split_key(spec)
    if not Path(path).exists():
        raise FileNotFoundError(2, "No such file", path)
    try:
        data = np.load(path, allow_pickle=False)
        if isinstance(data, np.lib.npyio.NpzFile):
            with data:
                names = list(data.keys())
                if key is None and len(names) != 1:
                    raise ValueError(f"{path} holds arrays {names}; say which one (e.g. {path}:{names[0]})")
                data = data[key or names[0]]
    except (OSError, EOFError, KeyError) as exc:
        raise ValueError(f"--images {spec} is not a readable .npy/.npz array: {exc}") from exc
    as_display_images(data, n)  # validates the layout and the count
    return data


def _check_pairs_exist(labels: np.ndarray, ref_labels: np.ndarray | None) -> None:
    if ref_labels is None:
        _, counts = np.unique(labels, return_counts=True)
        if counts.max() < 2:
            raise ValueError(
                "labels: no two embeddings share a label, so there is no same-class pair to evaluate"
            )
        if counts.size < 2:
            raise ValueError("labels: every embedding has the same label, so there is nothing to tell apart")
    else:
        if not np.isin(labels, ref_labels).any():
            raise ValueError(
                "no query label occurs among the ref labels, so there is no same-class pair to evaluate"
            )
        if np.unique(np.r_[labels, ref_labels]).size < 2:
            raise ValueError("labels: every item has the same label, so there is nothing to tell apart")


def cross_pairs(
    q: np.ndarray,
    q_labels: np.ndarray,
    r: np.ndarray,
    r_labels: np.ndarray,
    metric: str,
    max_pairs: int,
    seed: int,
    balanced: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """Scores and same-label flags of (query, reference) pairs: all, a uniform sample, or a balanced one."""
    import torch

    rng = np.random.default_rng(seed)
    n_q, n_r = len(q), len(r)
    if balanced:
        classes, r_codes = np.unique(r_labels, return_inverse=True)
        members = [np.flatnonzero(r_codes == c) for c in range(classes.size)]
        pos_q = np.flatnonzero(np.isin(q_labels, classes))
        weight = np.array(
            [members[c].size for c in np.searchsorted(classes, q_labels[pos_q])], dtype=np.float64
        )
        half = max_pairs // 2
        i_pos = rng.choice(pos_q, size=half, p=weight / weight.sum())
        j_pos = np.array([rng.choice(members[c]) for c in np.searchsorted(classes, q_labels[i_pos])])
        i_all, j_all = rng.integers(0, n_q, 4 * half), rng.integers(0, n_r, 4 * half)
        neg = q_labels[i_all] != r_labels[j_all]
        i = np.r_[i_pos, i_all[neg][:half]]
        j = np.r_[j_pos, j_all[neg][:half]]
    elif n_q * n_r <= max_pairs:
        i, j = np.divmod(np.arange(n_q * n_r), n_r)
    else:
        i, j = np.divmod(np.sort(rng.choice(n_q * n_r, size=max_pairs, replace=False)), n_r)
    scores = np.empty(i.size, dtype=np.float64)
    tq, tr = torch.from_numpy(q), torch.from_numpy(r)
    step = 1 << 16
    for a in range(0, i.size, step):
        xi, xj = tq[torch.from_numpy(i[a : a + step])], tr[torch.from_numpy(j[a : a + step])]
        scores[a : a + step] = _pair_scores(xi, xj, metric)
    return scores, q_labels[i] == r_labels[j]


def _pair_scores(xi: Any, xj: Any, metric: str) -> np.ndarray:
    """Row-wise similarity of paired rows (the definitions of :mod:`likewise.similarity`)."""
    import torch.nn.functional as F

    if metric == "cosine":
        s = (F.normalize(xi, dim=1) * F.normalize(xj, dim=1)).sum(1)
    elif metric == "dot":
        s = (xi * xj).sum(1)
    else:
        d2 = (xi.double() - xj.double()).pow(2).sum(1)
        s = -(d2.sqrt() if metric == "euclidean" else d2)
    return s.double().numpy()


def verification_scores(
    q: np.ndarray,
    q_labels: np.ndarray,
    r: np.ndarray | None,
    r_labels: np.ndarray | None,
    metric: str,
    max_pairs: int,
    seed: int,
) -> tuple[np.ndarray, np.ndarray, str]:
    """Pair scores, flags and how the pairs were chosen ("all", "uniform", "balanced")."""
    from likewise.evaluation import verification_pairs

    if r is None:
        total = len(q) * (len(q) - 1) // 2
        s, same = verification_pairs(q, q_labels, metric=metric, max_pairs=max_pairs, seed=seed)
        how = "all" if total <= max_pairs else "uniform"
        if same.sum() < MIN_POSITIVE and total > max_pairs:
            s, same = verification_pairs(
                q, q_labels, metric=metric, max_pairs=max_pairs, balanced=True, seed=seed
            )
            how = "balanced"
    else:
        total = len(q) * len(r)
        s, same = cross_pairs(q, q_labels, r, r_labels, metric, max_pairs, seed, balanced=False)
        how = "all" if total <= max_pairs else "uniform"
        if same.sum() < MIN_POSITIVE and total > max_pairs:
            s, same = cross_pairs(q, q_labels, r, r_labels, metric, max_pairs, seed, balanced=True)
            how = "balanced"
    if same.all() or not same.any():
        raise ValueError("the verification pairs are all same-label or all different-label; cannot evaluate")
    return s, same, how


def format_table(metrics: dict[str, dict[str, Any]]) -> str:
    """Plain-text table: one section per group, one metric per line."""
    from likewise.report.html import format_value

    width = max(len(k) for d in metrics.values() for k in d)
    lines = []
    for section, values in metrics.items():
        lines.append(section)
        lines.extend(f"  {k:<{width}}  {format_value(v):>10}" for k, v in values.items())
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from likewise.evaluation import retrieval_metrics, verification_metrics

    for name in ("max_pairs", "max_points"):
        if getattr(args, name) < 2:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 2")
    if min(args.k) < 1:
        raise ValueError("-k values must be positive")
    if (args.ref_embeddings is None) != (args.ref_labels is None):
        raise ValueError("pass both --ref-embeddings and --ref-labels, or neither")
    if args.out:
        from likewise.artifacts import EVALUATION_ENTRIES, check_output_dir

        check_output_dir(args.out, EVALUATION_ENTRIES, "likewise evaluate")
    q = _matrix(args.embeddings, "--embeddings")
    y = _labels(args.labels, "--labels", len(q), "--embeddings")
    r = ry = None
    if args.ref_embeddings is not None:
        r = _matrix(args.ref_embeddings, "--ref-embeddings")
        if r.shape[1] != q.shape[1]:
            raise ValueError(
                f"--ref-embeddings have {r.shape[1]} dimensions but --embeddings have {q.shape[1]}"
            )
        ry = _labels(args.ref_labels, "--ref-labels", len(r), "--ref-embeddings")
        if (ry.dtype.kind == "U") != (y.dtype.kind == "U"):
            raise ValueError("--labels and --ref-labels must both be numbers or both strings")
    if len(q) < 2 and r is None:
        raise ValueError("--embeddings needs at least 2 rows")
    _check_pairs_exist(y, ry)
    images = _images(args.images, len(q)) if args.images else None

    retrieval = retrieval_metrics(q, y, r, ry, metric=args.metric, k=tuple(args.k), include="all")
    scores, same, how = verification_scores(q, y, r, ry, args.metric, args.max_pairs, args.seed)
    full = verification_metrics(scores, same)
    verification = {k: v for k, v in full.items() if not isinstance(v, np.ndarray)}
    metrics = {"retrieval": retrieval, "verification": verification}
    report = None
    if args.out and not args.no_report:
        from likewise.report import render_report

        where = "leave-one-out" if r is None else f"against {len(r):,} references"
        report = render_report(
            metrics,
            embeddings=q,
            labels=y,
            images=images,
            scores=scores,
            is_same=same,
            metric=args.metric,
            subtitle=f"{len(q):,} embeddings x {q.shape[1]} dimensions, {np.unique(y).size} labels, "
            f"metric {args.metric}, retrieval {where}; "
            f"{verification['n_pairs']:,} verification pairs ({how})",
            max_points=args.max_points,
            seed=args.seed,
        )
    print(format_table(metrics))
    if args.out:
        from likewise.io import atomic_write_json, atomic_write_text

        out = Path(args.out)
        payload = {
            **metrics,
            "verification": {**verification, "pair_sampling": how},
            "settings": {
                "embeddings": args.embeddings,
                "labels": args.labels,
                "ref_embeddings": args.ref_embeddings,
                "ref_labels": args.ref_labels,
                "metric": args.metric,
                "k": list(args.k),
                "max_pairs": args.max_pairs,
                "seed": args.seed,
            },
        }
        if report is not None:
            atomic_write_text(out / "report.html", report)
        atomic_write_json(out / "metrics.json", payload)
        print(
            f"wrote {out / 'metrics.json'}" + (f" and {out / 'report.html'}" if report else ""),
            file=sys.stderr,
        )
    return 0
