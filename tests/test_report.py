import base64
import re
import struct

import numpy as np
import pytest
import torch
from sklearn.metrics import precision_recall_curve, roc_curve

from likewise.report import (
    plot_embedding_map,
    plot_pr,
    plot_retrieval_examples,
    plot_roc,
    plot_score_histogram,
    project_2d,
    write_report,
)
from likewise.report.html import format_value
from likewise.report.retrieval_examples import as_display_images, nearest_neighbours


def _clusters(n_per=30, n_classes=4, d=8, seed=0, spread=0.3):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((n_classes, d)) * 3
    y = np.repeat(np.arange(n_classes), n_per)
    return (centers[y] + spread * rng.standard_normal((y.size, d))).astype(np.float32), y


def _pairs(seed=0, n=400):
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.3
    return rng.normal(np.where(y, 0.7, 0.1), 0.2), y


def _png_size(data):
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_roc_and_pr_plot_the_true_curves():
    s, y = _pairs()
    fig = plot_roc(s, y)
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    for ax in fig.axes:  # linear and log panels
        line = ax.lines[0]
        np.testing.assert_allclose(line.get_xdata(), fpr)
        np.testing.assert_allclose(line.get_ydata(), tpr)
    assert fig.axes[1].get_xscale() == "log"
    precision, recall, _ = precision_recall_curve(y, s, drop_intermediate=False)
    line = plot_pr(s, y).axes[0].lines[0]
    # scikit-learn lists the points from the lowest threshold and appends (recall 0, precision 1)
    np.testing.assert_allclose(line.get_xdata(), recall[:-1][::-1])
    np.testing.assert_allclose(line.get_ydata(), precision[:-1][::-1])


def test_histogram_shows_both_score_distributions():
    s, y = _pairs(1)
    fig = plot_score_histogram(s, y, threshold=0.4, bins=20)
    ax = fig.axes[0]
    edges = np.histogram_bin_edges(s, bins=20)
    bars = ax.patches
    assert len(bars) == 40  # different-class bars first, then same-class
    heights = np.array([b.get_height() for b in bars])
    np.testing.assert_allclose(heights[:20], np.histogram(s[~y], bins=edges, density=True)[0])
    np.testing.assert_allclose(heights[20:], np.histogram(s[y], bins=edges, density=True)[0])
    assert [line.get_xdata()[0] for line in ax.lines] == [0.4]
    with pytest.raises(ValueError, match="needs both same-class and different-class pairs"):
        plot_score_histogram(s, np.ones_like(y))
    with pytest.raises(ValueError, match="is_same has 3 entries but there are 400 scores"):
        plot_score_histogram(s, y[:3])


def test_project_2d_subsamples_reproducibly_and_keeps_clusters():
    x, y = _clusters(n_per=40)
    coords, rows, used = project_2d(torch.from_numpy(x), method="tsne", max_points=100, seed=3)
    assert used == "tsne" and coords.shape == (100, 2)
    assert np.all(np.diff(rows) > 0) and rows.max() < 160
    again, rows2, _ = project_2d(x, method="tsne", max_points=100, seed=3)
    np.testing.assert_array_equal(rows, rows2)
    np.testing.assert_allclose(coords, again)
    # well separated classes stay separated: the 2-D nearest neighbour has the same label
    d = ((coords[:, None] - coords[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    assert np.mean(y[rows][d.argmin(1)] == y[rows]) > 0.95
    tiny, _, used = project_2d(x[:5])
    assert used == "pca" and tiny.shape == (5, 2)
    with pytest.raises(ValueError, match="unknown method 'mds'"):
        project_2d(x, method="mds")
    with pytest.raises(ValueError, match="contain NaN"):
        project_2d(np.full((20, 3), np.nan))
    try:
        import umap  # noqa: F401
    except ImportError:
        with pytest.raises(ValueError, match="needs the umap-learn package"):
            project_2d(x, method="umap")


def test_embedding_map_colours_by_label():
    x, y = _clusters(n_per=10)
    names = np.array(["ant", "bee", "cat", "dog"])[y]
    ax = plot_embedding_map(x, names, method="pca").axes[0]
    points = ax.collections[0]
    assert points.get_offsets().shape == (40, 2)
    colours = points.get_facecolors()
    for label in np.unique(names):  # one colour per label, different labels differ
        assert len({tuple(c) for c in colours[names == label]}) == 1
    assert len({tuple(c) for c in colours}) == 4
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["ant", "bee", "cat", "dog"]
    with pytest.raises(ValueError, match="labels has 3 entries but there are 40 embeddings"):
        plot_embedding_map(x, y[:3])


def test_retrieval_examples_show_true_neighbours():
    x, y = _clusters(n_per=6, n_classes=3, spread=1.5)
    q = np.array([0, 7, 15])
    scores, nn = nearest_neighbours(x, q, 4, "euclidean", exclude_self=True)
    dist = np.sqrt(((x[q][:, None] - x[None]) ** 2).sum(-1))
    dist[np.arange(3), q] = np.inf
    np.testing.assert_array_equal(nn, np.argsort(dist, axis=1)[:, :4])
    np.testing.assert_allclose(scores, -np.sort(dist, axis=1)[:, :4], atol=1e-4)

    images = np.random.default_rng(0).random((18, 3, 5, 4))  # [N, C, H, W]
    fig = plot_retrieval_examples(images, x, y, n_queries=3, k=4, metric="euclidean")
    axes = np.array(fig.axes).reshape(3, 5)
    for row in axes:
        query_label = int(row[0].get_title().split()[-1])
        for ax in row[1:]:
            label = int(ax.get_title().split("\n")[0].split(": ")[1])
            colour = ax.spines["left"].get_edgecolor()
            expected = (
                (0x2A / 255, 0x9D / 255, 0x4B / 255)
                if label == query_label
                else (0xD1 / 255, 0x49 / 255, 0x5B / 255)
            )
            np.testing.assert_allclose(colour[:3], expected, atol=1e-6)
        assert row[1].get_images()[0].get_array().shape == (5, 4, 3)


def test_display_images_layouts():
    grey = as_display_images(np.arange(2 * 3 * 3).reshape(2, 3, 3))
    assert grey.shape == (2, 3, 3) and grey.min() == 0 and grey.max() == 1
    np.testing.assert_allclose(grey[1], (np.arange(9).reshape(3, 3)) / 8)
    assert as_display_images(np.zeros((2, 1, 4, 4))).shape == (2, 4, 4)
    assert as_display_images(np.ones((2, 4, 4, 3))).shape == (2, 4, 4, 3)
    with pytest.raises(ValueError, match="images must be"):
        as_display_images(np.zeros((2, 16)))
    with pytest.raises(ValueError, match="images has 2 entries but there are 5 embeddings"):
        as_display_images(np.zeros((2, 4, 4)), 5)


def test_write_report_is_one_self_contained_file(tmp_path):
    x, y = _clusters(n_per=15)
    images = np.random.default_rng(1).random((60, 6, 6))
    metrics = {"retrieval": {"precision_at_1": 0.8125, "n_queries": 1234}, "verification": {"eer": 0.0004}}
    path = write_report(
        tmp_path / "r.html", metrics, embeddings=x, labels=y, images=images, metric="euclidean"
    )
    text = path.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["r.html"]
    assert "<script" not in text and "http" not in text.replace("http-equiv", "")
    assert re.search(r"<th>precision_at_1</th><td class=v>0\.8125</td>", text)
    assert re.search(r"<th>n_queries</th><td class=v>1,234</td>", text)
    assert re.search(r"<th>eer</th><td class=v>4\.00e-04</td>", text)
    pngs = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert len(pngs) == 5  # histogram, ROC, PR, 2-D map, retrieval examples
    for data in pngs:
        width, height = _png_size(base64.b64decode(data))
        assert width >= 300 and height >= 200
    no_images = write_report(tmp_path / "s.html", metrics, embeddings=x, labels=y, map_method="pca")
    assert no_images.read_text().count("data:image/png;base64,") == 4


def test_write_report_bad_input_writes_nothing(tmp_path):
    x, y = _clusters(n_per=5)
    with pytest.raises(ValueError, match="images must be"):
        write_report(tmp_path / "r.html", {}, embeddings=x, labels=y, images=np.zeros((20, 7)))
    with pytest.raises(ValueError, match="pass embeddings and labels together"):
        write_report(tmp_path / "r.html", {}, embeddings=x)
    with pytest.raises(TypeError, match="metrics must be a dict"):
        write_report(tmp_path / "r.html", [1, 2])
    assert list(tmp_path.iterdir()) == []


def test_format_value():
    assert [format_value(v) for v in (3, 12345, 0.5, 1e-5, float("nan"), float("inf"), True)] == [
        "3",
        "12,345",
        "0.5000",
        "1.00e-05",
        "n/a",
        "inf",
        "True",
    ]
