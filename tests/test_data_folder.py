"""folder:PATH datasets on tiny trees of PNGs generated here."""
import os
import time

import numpy as np
import pytest
from PIL import Image

from aevb.data import DataError, DataWarning, load
from aevb.data import folder


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("AEVB_DATA", str(tmp_path / "cache"))
    return tmp_path / "cache"


def png(path, colour, size=(40, 30), mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, colour).save(path)


@pytest.fixture
def tree(tmp_path):
    """PATH/red (6 images), PATH/blue (4 images, one in a sub-subfolder)."""
    root = tmp_path / "imgs"
    for i in range(6):
        png(root / "red" / f"{i}.png", (255, 0, 0))
    for i in range(3):
        png(root / "blue" / f"{i}.png", (0, 0, 255))
    png(root / "blue" / "more" / "3.png", (0, 0, 255), mode="RGBA")
    return root


def test_class_folders_give_labels(tree):
    ds = load(f"folder:{tree}", image_size=32, channels=3)
    assert ds.shape == (3, 32, 32) and ds.num_classes == 2
    assert ds.info["classes"] == ["blue", "red"]
    assert (len(ds.train), len(ds.test)) == (9, 1)  # 10% of 10 images
    x = np.concatenate([ds.train.x.numpy(), ds.test.x.numpy()])
    y = np.concatenate([ds.train.y.numpy(), ds.test.y.numpy()])
    assert sorted(y.tolist()) == [0] * 4 + [1] * 6
    red = np.array([1.0, 0.0, 0.0])[:, None, None]
    blue = np.array([0.0, 0.0, 1.0])[:, None, None]
    for img, label in zip(x, y):  # each image is its class's colour, everywhere
        assert np.allclose(img, red if label == 1 else blue, atol=1e-6)


def test_grayscale_sizes_and_default(tree):
    for size in (28, 32, 64, 128):
        ds = load(f"folder:{tree}", image_size=size, channels=1)
        assert ds.shape == (1, size, size)
        # ITU-R 601-2 luma of pure red: 299/1000 * 255 = 76.2 -> 76
        red = ds.train.x[ds.train.y == 1]
        assert np.allclose(red.numpy(), 76 / 255, atol=1e-6)
    assert load(f"folder:{tree}").shape == (3, 64, 64)


def test_resize_crops_to_centre_square(tmp_path):
    im = Image.new("L", (60, 20), 0)  # a wide image: white centre square, black sides
    im.paste(255, (20, 0, 40, 20))
    (tmp_path / "flat").mkdir()
    im.save(tmp_path / "flat" / "a.png")
    ds = load(f"folder:{tmp_path / 'flat'}", image_size=28, channels=1, test_fraction=0.0)
    assert ds.train.y is None and ds.num_classes == 0 and len(ds.test) == 0
    x = ds.train.x  # the black sides were cropped away, not squeezed in (which gives 1/3 black)
    assert x.mean() > 0.99 and x.min() > 0.85  # (bicubic rings a little at the borders)


def test_flat_folder_split_is_seeded(tmp_path):
    root = tmp_path / "flat"
    for i in range(20):
        png(root / f"{i:02d}.png", (i * 10, i * 10, i * 10))
    a = load(f"folder:{root}", image_size=28, channels=1, test_fraction=0.25, seed=3)
    b = load(f"folder:{root}", image_size=28, channels=1, test_fraction=0.25, seed=3)
    c = load(f"folder:{root}", image_size=28, channels=1, test_fraction=0.25, seed=4)
    assert a.train.y is None and (len(a.train), len(a.test)) == (15, 5)
    grey = lambda ds: sorted(round(v * 25.5) for v in ds.test.x[:, 0, 0, 0].tolist())
    assert grey(a) == grey(b) != grey(c)
    assert sorted(grey(a) + [round(v * 25.5) for v in a.train.x[:, 0, 0, 0].tolist()]) == list(range(20))


def test_non_images_skipped_with_warning(tree, tmp_path):
    (tree / "red" / "notes.txt").write_text("not an image")
    (tree / "red" / "broken.png").write_bytes((tree / "red" / "0.png").read_bytes()[:30])
    (tree / "red" / ".DS_Store").write_bytes(b"\0\1")  # hidden: ignored silently
    with pytest.warns(DataWarning, match="skipped 2 files") as w:
        ds = load(f"folder:{tree}", image_size=28)
    msg = str(w[0].message)
    assert "notes.txt" in msg and "broken.png" in msg and ".DS_Store" not in msg
    assert len(ds.train) + len(ds.test) == 10
    empty = tmp_path / "junk"
    empty.mkdir()
    (empty / "a.txt").write_text("x")
    with pytest.warns(DataWarning), pytest.raises(DataError, match="no readable images among 1 files"):
        load(f"folder:{empty}")
    with pytest.raises(DataError, match="not a folder"):
        load(f"folder:{tmp_path / 'nowhere'}")


def test_cache_reused_and_invalidated(tree, cache, monkeypatch):
    calls = []
    decode = folder._decode
    monkeypatch.setattr(folder, "_decode", lambda *a: calls.append(1) or decode(*a))
    first = load(f"folder:{tree}", image_size=32)
    second = load(f"folder:{tree}", image_size=32)
    assert len(calls) == 1 and len(list((cache / "folders").glob("*.npz"))) == 1
    assert np.array_equal(first.train.x.numpy(), second.train.x.numpy())
    assert first.train.y.tolist() == second.train.y.tolist()
    load(f"folder:{tree}", image_size=32, channels=1)  # another size or channels: another entry
    assert len(calls) == 2
    p = tree / "red" / "0.png"
    png(p, (0, 255, 0))  # a changed file (new mtime and content) is read again
    os.utime(p, ns=(time.time_ns(), time.time_ns() + 10**9))
    third = load(f"folder:{tree}", image_size=32)
    assert len(calls) == 3
    all_x = np.concatenate([third.train.x.numpy(), third.test.x.numpy()])
    assert any(np.allclose(img[1], 1.0) for img in all_x)  # the green one


def test_bad_arguments(tree):
    with pytest.raises(ValueError, match="channels"):
        load(f"folder:{tree}", channels=4)
    with pytest.raises(ValueError, match="image_size"):
        load(f"folder:{tree}", image_size=0)
    with pytest.raises(ValueError, match="folder:PATH"):
        load("digits", image_size=32)


def test_split_helper():
    tr, te = folder.split(10, 0.1, 0)
    assert len(te) == 1 and sorted(np.concatenate([tr, te]).tolist()) == list(range(10))
    assert [len(folder.split(n, 0.1, 0)[1]) for n in (1, 2, 5, 30)] == [0, 1, 1, 3]
