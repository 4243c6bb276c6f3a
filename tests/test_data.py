import numpy as np
import pytest
from PIL import Image

from likewise.data import (
    ArrayDataset,
    class_disjoint_split,
    load_data,
    load_image_folder,
    stratified_split,
)


def test_bundled_digits_and_mnist5k_shapes_and_ranges():
    d = load_data("digits")
    assert d.x.shape == (1797, 1, 8, 8) and d.x.dtype == np.float32
    assert 0.0 <= d.x.min() and d.x.max() <= 1.0
    m = load_data("mnist5k")
    assert m.x.shape == (5000, 1, 28, 28)
    assert np.bincount(m.y).tolist() == [500] * 10


def test_class_disjoint_split_is_disjoint_and_complete():
    y = np.repeat(np.arange(10), 7)
    tr, te = class_disjoint_split(y, [0, 1, 2, 3, 4])
    assert set(y[tr]) == {0, 1, 2, 3, 4} and set(y[te]) == {5, 6, 7, 8, 9}
    assert sorted(np.concatenate([tr, te]).tolist()) == list(range(len(y)))
    a = class_disjoint_split(y, seed=3)
    b = class_disjoint_split(y, seed=3)
    assert all(np.array_equal(p, q) for p, q in zip(a, b))
    assert not set(y[a[0]]) & set(y[a[1]])


def test_class_disjoint_split_errors():
    y = np.repeat(np.arange(3), 4)
    with pytest.raises(ValueError, match=r"train_classes \[7\] do not occur"):
        class_disjoint_split(y, [7])
    with pytest.raises(ValueError, match="cover every class"):
        class_disjoint_split(y, [0, 1, 2])
    with pytest.raises(ValueError, match="at least 2 classes"):
        class_disjoint_split(np.zeros(5, dtype=int))


def test_stratified_split_keeps_proportions():
    y = np.repeat(np.arange(4), [10, 20, 30, 1])
    tr, te = stratified_split(y, 0.3, seed=1)
    assert not set(tr) & set(te)
    counts = {c: (y[te] == c).sum() for c in range(4)}
    assert counts == {0: 3, 1: 6, 2: 9, 3: 0}
    assert np.array_equal(stratified_split(y, 0.3, seed=1)[1], te)


def test_image_folder_reads_classes_and_reports_corrupt_files(tmp_path):
    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            Image.fromarray(rng.integers(0, 255, (6, 5, 3), dtype=np.uint8)).save(tmp_path / cls / f"{i}.png")
    (tmp_path / "dog" / "broken.png").write_bytes(b"not a png")
    (tmp_path / "empty").mkdir()
    data = load_image_folder(tmp_path)
    assert data.x.shape == (6, 3, 6, 5)
    assert data.class_names == ["cat", "dog"]
    assert data.y.tolist() == [0, 0, 0, 1, 1, 1]
    reasons = dict(data.skipped)
    assert "unreadable image" in reasons[str(tmp_path / "dog" / "broken.png")]
    assert str(tmp_path / "empty") in reasons


def test_image_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_image_folder(tmp_path / "missing")
    with pytest.raises(ValueError, match="no class sub-folders"):
        load_image_folder(tmp_path)
    (tmp_path / "only").mkdir()
    Image.fromarray(np.zeros((4, 4), dtype=np.uint8)).save(tmp_path / "only" / "a.png")
    with pytest.raises(ValueError, match="at least two classes"):
        load_image_folder(tmp_path)


def test_array_files_with_string_labels(tmp_path):
    x = np.arange(12, dtype=np.float64).reshape(4, 3)
    np.save(tmp_path / "x.npy", x)
    (tmp_path / "y.csv").write_text("label\n3\n7\n3\n9\n")
    data = load_data(tmp_path / "x.npy", tmp_path / "y.csv")
    assert data.y.tolist() == [0, 1, 0, 2] and data.class_names == ["3", "7", "9"]
    np.testing.assert_array_equal(data.x, x.astype(np.float32))
    np.save(tmp_path / "bad.npy", np.array([[1.0, np.nan]]))
    np.save(tmp_path / "one.npy", np.array([1]))
    with pytest.raises(ValueError, match="NaN"):
        load_data(tmp_path / "bad.npy", tmp_path / "one.npy")
    with pytest.raises(ValueError, match="has 4 rows but .* has 1 labels"):
        load_data(tmp_path / "x.npy", tmp_path / "one.npy")
    with pytest.raises(FileNotFoundError):
        load_data(tmp_path / "nope.npy", tmp_path / "y.csv")


def test_array_dataset_items():
    ds = ArrayDataset(np.ones((3, 2)), np.array([4, 5, 6]))
    x, y = ds[1]
    assert x.dtype.is_floating_point and int(y) == 5 and len(ds) == 3


def _png(path, size, value=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((*size, 3), value, dtype=np.uint8)).save(path)


def test_image_folder_resizes_to_the_first_images_size(tmp_path):
    _png(tmp_path / "a" / "0.png", (6, 5), 10)
    _png(tmp_path / "a" / "1.png", (12, 9), 20)  # another size: resized, not refused
    _png(tmp_path / "b" / "0.png", (3, 3), 30)
    data = load_image_folder(tmp_path)
    assert data.x.shape == (3, 3, 6, 5)
    np.testing.assert_allclose(data.x[1], 20 / 255, atol=1e-6)
    assert load_image_folder(tmp_path, image_size=4).x.shape == (3, 3, 4, 4)


def test_subset_keeps_the_skipped_inputs(tmp_path):
    for cls in ("cat", "dog"):
        for i in range(2):
            _png(tmp_path / cls / f"{i}.png", (4, 4))
    (tmp_path / "cat" / "bad.jpg").write_bytes(b"\xff\xd8 truncated")
    data = load_image_folder(tmp_path)
    assert [p for p, _ in data.skipped] == [str(tmp_path / "cat" / "bad.jpg")]
    part = data.subset(np.array([0, 3]))
    assert len(part) == 2 and part.skipped == data.skipped
    part.skipped.append(("x", "y"))  # a copy: the source's list is not shared
    assert len(data.skipped) == 1


def test_load_images_reads_a_plain_folder_with_the_file_of_every_row(tmp_path):
    from likewise.data import load_images

    _png(tmp_path / "b.png", (5, 5), 50)
    _png(tmp_path / "a.png", (5, 5), 100)
    _png(tmp_path / "sub" / "c.png", (10, 10), 150)
    (tmp_path / "broken.png").write_bytes(b"not an image")
    (tmp_path / "notes.txt").write_text("not an image either, and not counted")
    _png(tmp_path / ".hidden" / "d.png", (5, 5))
    x, files, skipped = load_images(tmp_path, image_size=(4, 4), grayscale=True)
    assert files == ["a.png", "b.png", "sub/c.png"]
    assert x.shape == (3, 1, 4, 4)
    np.testing.assert_allclose(x[:, 0, 0, 0], [100 / 255, 50 / 255, 150 / 255], atol=1e-6)
    assert [name for name, _ in skipped] == ["broken.png"]
    assert "unreadable image" in skipped[0][1]
    (tmp_path / "only").mkdir()
    (tmp_path / "only" / "x.png").write_bytes(b"junk")
    with pytest.raises(ValueError, match="none readable"):
        load_images(tmp_path / "only")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no image files"):
        load_images(tmp_path / "empty")
    with pytest.raises(FileNotFoundError):
        load_images(tmp_path / "missing")
