import gzip

import numpy as np
import pytest
from PIL import Image

from training.data import DataError, load_dataset
from training.data import avatars as av
from training.data.celeba import load_celeba
from training.data.fashion_mnist import read_idx
from training.data.folder import load_folder


def opts(**kw) -> av.AvatarOptions:
    base = dict(
        top_kind="hair",
        top="SHORT_FLAT",
        hair_color="BLACK",
        accessory="NONE",
        facial_hair="NONE",
        mouth="SERIOUS",
        skin="LIGHT",
        eyes="DEFAULT",
        eyebrows="DEFAULT",
        nose="DEFAULT",
        clothing="HOODIE",
        clothing_color="BLUE_01",
        hat_color="RED",
        graphic="SKULL",
    )
    return av.AvatarOptions(**{**base, **kw})


def drawn_differs(a: av.AvatarOptions, b: av.AvatarOptions) -> bool:
    return not np.array_equal(av.render(a, 64, "head"), av.render(b, 64, "head"))


def test_glasses_on_long_hair_curly_are_not_drawn_and_not_labelled():
    with_glasses = opts(top="LONG_HAIR_CURLY", accessory="ROUND")
    assert not drawn_differs(with_glasses, opts(top="LONG_HAIR_CURLY"))
    assert av.attributes_for(with_glasses)["Eyeglasses"] == 0
    # On other hair the same glasses are drawn and labelled.
    assert drawn_differs(opts(accessory="ROUND"), opts())
    assert av.attributes_for(opts(accessory="ROUND"))["Eyeglasses"] == 1


def test_facial_hair_dropped_by_some_tops_follows_the_pixels():
    bearded = opts(top="LOOSE_HAIR", facial_hair="BEARD_MEDIUM")
    assert not drawn_differs(bearded, opts(top="LOOSE_HAIR"))
    assert av.attributes_for(bearded)["No_Beard"] == 1
    assert drawn_differs(opts(facial_hair="BEARD_MEDIUM"), opts())
    assert av.attributes_for(opts(facial_hair="BEARD_MEDIUM"))["No_Beard"] == 0
    assert av.attributes_for(opts(facial_hair="MOUSTACHE_FANCY")) == {**av.attributes_for(opts()), "Mustache": 1}


def test_hair_colour_under_a_hat_is_not_drawn_and_not_labelled():
    hat = opts(top_kind="hat", top="WINTER_HAT_1", hair_color="BLONDE_GOLDEN")
    assert not drawn_differs(hat, opts(top_kind="hat", top="WINTER_HAT_1", hair_color="BLACK"))
    a = av.attributes_for(hat)
    assert a["Wearing_Hat"] == 1 and a["Blond_Hair"] == 0 and a["Black_Hair"] == 0
    assert drawn_differs(opts(hair_color="BLONDE_GOLDEN"), opts())
    assert av.attributes_for(opts(hair_color="BLONDE_GOLDEN"))["Blond_Hair"] == 1


def test_sampled_options_never_use_excluded_ambiguous_parts():
    for i in range(300):
        o = av.sample_options(5, i)
        assert o.top not in av.EXCLUDED_HAIR | {"HIJAB", "JEDI", "GLADIATOR_HELMET"}
        assert o.mouth in av.SMILING and o.accessory != "EYEPATCH"


def test_same_seed_same_data_and_cache_is_reused(monkeypatch, tmp_path):
    a = load_dataset("avatars", n=24, seed=3, workers=1)
    b = load_dataset("avatars", n=24, seed=3, workers=1)  # from the cache
    monkeypatch.setenv("LCS_CACHE", str(tmp_path / "fresh"))
    c = load_dataset("avatars", n=24, seed=3, workers=2)  # re-rendered in worker processes
    assert np.array_equal(a.images, b.images) and np.array_equal(a.images, c.images)
    assert np.array_equal(a.attrs, c.attrs)
    assert a.images.shape == (24, 3, 64, 64) and a.images.dtype == np.uint8
    d = load_dataset("avatars", n=24, seed=4, workers=1)
    assert not np.array_equal(a.images, d.images)
    assert list(a.label_sets["faces"].attrs)[:3] == ["Smiling", "Eyeglasses", "Wearing_Hat"]
    # the baselines' hold-one-out serves faces_no_hair_colour, then adds hair_colour: together exactly faces, no overlap
    kept, hair = a.label_sets["faces_no_hair_colour"].attrs, a.label_sets["hair_colour"].attrs
    assert sorted(kept + hair) == sorted(a.label_sets["faces"].attrs) and not set(kept) & set(hair)
    assert set(np.unique(a.split)) <= {0, 1, 2}


def test_idx_parsing_and_errors(tmp_path):
    from tests.conftest import write_idx

    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "x.gz", arr)
    assert np.array_equal(read_idx(tmp_path / "x.gz"), arr)
    with gzip.open(tmp_path / "bad.gz", "wb") as f:
        f.write(b"\x01\x02\x08\x01" + b"\x00" * 8)
    with pytest.raises(DataError, match="bad magic"):
        read_idx(tmp_path / "bad.gz")
    with gzip.open(tmp_path / "short.gz", "wb") as f:
        f.write(bytes([0, 0, 8, 1]) + (10).to_bytes(4, "big") + b"\x00" * 3)
    with pytest.raises(DataError, match="need 10"):
        read_idx(tmp_path / "short.gz")


def test_fashion_mnist_splits_and_derived_label_sets(fashion_root):
    d = load_dataset("fashion-mnist", root=str(fashion_root))
    assert d.images.shape == (900, 1, 28, 28)
    assert d.label_sets["category"].kind == "categorical"
    cat = d.columns(d.label_sets["category"].attrs)
    assert (cat.sum(1) == 1).all()
    cls = cat.argmax(1)
    assert np.array_equal(d.columns(["footwear"])[:, 0], np.isin(cls, [5, 7, 9]).astype(np.int8))
    assert np.array_equal(d.columns(["upper_body"])[:, 0], np.isin(cls, [0, 2, 4, 6]).astype(np.int8))
    # The last 1/12 of the training files is validation (5,000 of 60,000 for the real data).
    assert d.split.tolist() == [0] * 642 + [1] * 58 + [2] * 200


def test_fashion_mnist_missing_names_the_debian_package(tmp_path):
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fashion-mnist", root=str(tmp_path))


CELEBA_NAMES = ["5_o_Clock_Shadow", "Eyeglasses", "Smiling", "Male"]


def write_celeba(root, rows, partitions, names=CELEBA_NAMES):
    (root / "img_align_celeba").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, _ in rows:
        img = rng.integers(0, 255, size=(218, 178, 3), dtype=np.uint8)
        img[45:173, 25:153] = 200  # the centre crop region is flat grey
        Image.fromarray(img).save(root / "img_align_celeba" / name, quality=95)
    lines = [str(len(rows)), " ".join(names)]
    lines += [f"{name} " + " ".join(f"{v:2d}" for v in vals) for name, vals in rows]
    (root / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    (root / "list_eval_partition.txt").write_text(
        "".join(f"{n} {p}\n" for (n, _), p in zip(rows, partitions, strict=True))
    )


def test_celeba_fixture_in_the_distributed_format(tmp_path):
    rows = [(f"{i + 1:06d}.jpg", [1 if (i >> k) & 1 else -1 for k in range(4)]) for i in range(6)]
    write_celeba(tmp_path, rows, [0, 0, 0, 1, 2, 2])
    d = load_celeba(str(tmp_path))
    assert d.images.shape == (6, 3, 64, 64)
    # the one CelebA name that starts with a digit is served under another: requests name identifiers
    assert d.attr_names == ["Five_o_Clock_Shadow", *CELEBA_NAMES[1:]] and d.ids[0] == "000001.jpg"
    assert d.attrs[3].tolist() == [1, 1, 0, 0]  # 3 = 0b0011 -> first two attributes set
    assert d.split.tolist() == [0, 0, 0, 1, 2, 2]
    # The 128x128 centre crop is the flat grey square: no noise survives.
    assert abs(int(d.images[0].astype(int).mean()) - 200) <= 2 and d.images[0].std() < 3


def test_celeba_malformed_attribute_file_names_line(tmp_path):
    write_celeba(tmp_path, [("000001.jpg", [1, -1, 1, -1])], [0])
    (tmp_path / "list_attr_celeba.txt").write_text("1\n" + " ".join(CELEBA_NAMES) + "\n000001.jpg 1 0 1 -1\n")
    with pytest.raises(DataError, match=r"list_attr_celeba.txt:3"):
        load_celeba(str(tmp_path))


def test_folder_dataset_and_bad_files_are_named(tmp_path):
    for i in range(4):
        Image.new("RGB", (40, 30), (60 * i, 0, 0)).save(tmp_path / f"img{i}.png")
    (tmp_path / "attributes.csv").write_text(
        "file,Red,Big,split\nimg0.png,0,1,train\nimg1.png,1,0,train\nimg2.png,1,1,val\nimg3.png,true,-1,test\n"
    )
    d = load_folder(str(tmp_path), size=32)
    assert d.images.shape == (4, 3, 32, 32) and d.attrs.tolist() == [[0, 1], [1, 0], [1, 1], [1, 0]]
    assert d.split.tolist() == [0, 0, 1, 2]
    (tmp_path / "img2.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="img2.png"):
        load_folder(str(tmp_path), size=32)
    (tmp_path / "attributes.csv").write_text("file,Red\nmissing.png,1\n")
    with pytest.raises(DataError, match="missing.png"):
        load_folder(str(tmp_path))
    (tmp_path / "attributes.csv").write_text("file,Red\nimg0.png,maybe\n")
    with pytest.raises(DataError, match=r"attributes.csv:2.*Red"):
        load_folder(str(tmp_path))


def test_unknown_dataset_and_parameter_are_clear():
    with pytest.raises(DataError, match="unknown dataset"):
        load_dataset("imagenet")
    with pytest.raises(DataError, match="takes no parameter"):
        load_dataset("avatars", colour="blue")
