"""The header's compact forms: image list as runs, packed integer lists, bare VP8L seeds."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ddpm_codec.codec import classical_seed
from ddpm_codec.format import compact, container, image_table
from ddpm_codec.io import classical


def _records(names, geoms=None):
    geoms = geoms or [("L", 28, 28, 1)] * len(names)
    return [[n, *g] for n, g in zip(names, geoms)]


@pytest.mark.parametrize("names, runs", [
    ([f"image{k}.png" for k in range(100)], 1),
    ([f"fashion_{k:05d}.png" for k in range(7, 1007)], 1),
    ([""] * 100, 1),
    (["a.png"], 1),
    (["img9.png", "img10.png", "img11.png"], 1),
    (["img09.png", "img10.png", "img11.png"], 1),            # zero-padded to width 2
    (["img099.png", "img100.png", "img101.png"], 1),
    (["x1", "x2", "y3", "y4", "", ""], 3),
    (["img1.png", "img10.png", "img11.png", "img2.png"], 3),  # lexicographic order: short runs
    (["007", "008", "9"], 2),                                # width 3, then an unpadded name
    (["a", "a", "b", "b", "b"], 2),
    (["1", "01", "001"], 3),
])
def test_name_runs_round_trip(names, runs):
    recs = _records(names)
    packed = image_table.pack(recs)
    assert len(packed["names"]) == runs
    assert image_table.unpack(packed["names"], packed["geoms"]) == recs


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.text(alphabet="ab0123456789.\n_", max_size=8),
                          st.sampled_from([("L", 28, 28, 1), ("RGB", 5, 7, 3), ("LA", 1, 1, 2)])),
                max_size=40))
def test_any_image_list_round_trips(items):
    recs = [[n, *g] for n, g in items]
    packed = image_table.pack(recs)
    assert image_table.unpack(packed["names"], packed["geoms"]) == recs
    # and through the container: the codec sees the list it wrote
    blob = container.pack(container.Container("lossless", "00" * 8, {"images": recs, "groups": [1, 2]}, b"", False))
    assert container.parse(blob).header == {"images": recs, "groups": [1, 2]}


def test_numbered_list_costs_a_few_bytes():
    """100 numbered names of one geometry: one run each side, < 48 bytes (record by
    record it was ~2.4 kB raw, ~250 deflated)."""
    recs = _records([f"image{k}.png" for k in range(100)])
    assert len(compact.dumps(image_table.pack(recs))) < 48


@pytest.mark.parametrize("names, geoms, fragment", [
    (["a"], [[2, "L", 1, 1, 1]], "disagree"),
    (["a", "b"], [[1, "L", 1, 1, 1]], "disagree"),
    ([["a", 0]], [[1, "L", 1, 1, 1]], "bad name run"),
    ([["a", 1, 1, 99, ""]], [[1, "L", 1, 1, 1]], "bad name run"),        # width beyond 20
    ([["a", -1, 1, 0, ""]], [[1, "L", 1, 1, 1]], "bad name run"),
    ([7], [[1, "L", 1, 1, 1]], "bad name run"),
    (["a"], [[0, "L", 1, 1, 1]], "bad geometry run"),
    (["a"], [[1, "L", 1, 1]], "bad geometry run"),
    ([["", 1 << 20]], [[1 << 20, "L", 1, 1, 1], [1, "L", 1, 1, 1]], "out of range"),
    ("a", [], "bad image list"),
    ([["x" * 60000, 0, 1 << 20, 0, ""]], [[1 << 20, "L", 1, 1, 1]], "names too long"),   # ~60 GB of names
    ([["x" * 60000, 1 << 20]], [[1 << 20, "L", 1, 1, 1]], "names too long"),
])
def test_malformed_tables_are_refused(names, geoms, fragment):
    """Refused before anything is expanded (the run lists are a few bytes; the last
    two cases would expand to gigabytes of names)."""
    with pytest.raises(image_table.ImageTableError, match=fragment):
        image_table.unpack(names, geoms)


def test_raw_image_list_in_a_stored_header_is_refused():
    """Version 3 writes runs only; a record-by-record list is not ours."""
    head = compact.dumps({"images": [["a", "L", 1, 1, 1]]})
    with pytest.raises(container.StreamError, match="bad image list"):
        container.parse(container.pack_raw(0, b"\0" * 8, head, b""))
    head = compact.dumps({"names": ["a"]})
    with pytest.raises(container.StreamError, match="bad image list"):
        container.parse(container.pack_raw(0, b"\0" * 8, head, b""))


@pytest.mark.parametrize("value", [[0, 1], [5, 300, 1 << 40], [0] * 1000, [1, True], [1, -1], [1], []])
def test_integer_lists_round_trip(value):
    data = compact.dumps(value)
    assert compact.loads(data) == value
    assert [type(v) for v in compact.loads(data)] == [type(v) for v in value]
    packed = len(value) >= 2 and all(type(v) is int and v >= 0 for v in value)
    assert (data[0] == compact.UINTS) == packed


def test_packed_integer_list_cut_short_is_refused():
    data = compact.dumps([1, 2, 300])
    for cut in range(1, len(data)):
        with pytest.raises(compact.CompactError):
            compact.loads(data[:cut])


@pytest.mark.parametrize("shape", [(28, 28), (3, 5), (17, 9, 3), (6, 6, 4)])
def test_bare_vp8l_restores_the_webp_file(shape):
    if not classical.codec_status("webp")[0]:
        pytest.skip("no WebP in this Pillow")
    rng = np.random.default_rng(sum(shape))
    px = rng.integers(0, 256, shape, dtype=np.uint8)
    webp = classical.encode_lossless("webp", px)
    bits = classical_seed.bare_vp8l(webp)
    assert bits is not None and len(bits) == len(webp) - 20 - (len(bits) & 1)
    assert classical_seed.riff_vp8l(bits) == webp
    unit = np.zeros((px.shape[2] if px.ndim == 3 else 1, *px.shape[:2]), np.uint8)
    classical_seed.decode_unit("vp8l", bits, unit)
    assert np.array_equal(unit, px.reshape(*px.shape[:2], -1).transpose(2, 0, 1))


def test_bare_vp8l_refuses_other_files():
    assert classical_seed.bare_vp8l(b"RIFF\x00\x00\x00\x00WEBPVP8X" + b"\0" * 20) is None
    assert classical_seed.bare_vp8l(b"\x89PNG\r\n\x1a\n" + b"\0" * 30) is None
    webp = classical.encode_lossless("webp", np.zeros((4, 4), np.uint8))
    assert classical_seed.bare_vp8l(webp + b"\0\0") is None                 # sizes disagree
    unit = np.zeros((1, 5, 4), np.uint8)                        # wrong size: refused before decoding
    with pytest.raises(container.StreamError, match="wrong size"):
        classical_seed.decode_unit("vp8l", classical_seed.bare_vp8l(webp), unit)
