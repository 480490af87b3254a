"""`ddpm-codec compress` / `decompress` through the real CLI: lossless round trips of every
input kind imageio accepts (the documented palette / 1-bit / colour-key conversions keep
every pixel's colour), and output safety (atomic writes, --force, inputs never changed).

A tiny untrained model (configs 'tiny') and 2 chain steps keep it fast.
"""
import errno
import hashlib
import os

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from ddpm_codec.diffusion.configs import get_config
from ddpm_codec.diffusion.model import DiffusionModel
from ddpm_codec.io import images as imageio
from ddpm_codec.io.checkpoint import save_model
from ddpm_codec_cli.main import cli


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], prog_name="ddpm-codec")


def ok(res):
    assert res.exit_code == 0, (res.output, res.exception)
    return res


def fails(res, fragment):
    assert res.exit_code == 2, (res.exit_code, res.output, res.exception)
    assert "Traceback" not in res.output
    last = [ln for ln in res.stderr.replace("\r", "\n").splitlines() if ln.strip()][-1]
    assert last.startswith("ddpm-codec: error: ") and fragment in last, last
    return last


def digest(folder):
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def no_temp_files(folder):
    stray = [p.name for p in folder.rglob("*") if ".tmp" in p.name]
    assert not stray, stray


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "tiny"
    save_model(DiffusionModel.from_config(get_config("tiny")), path)
    return path


def _palette(size, transparency=None, rgba_palette=False):
    im = Image.new("P", size)
    if rgba_palette:
        im.putpalette([255, 0, 0, 255, 0, 255, 0, 128, 0, 0, 255, 0, 9, 8, 7, 200], "RGBA")
    else:
        im.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255, 9, 8, 7])
    im.putdata([(i * 7) % 4 for i in range(size[0] * size[1])])
    if transparency is not None:
        im.info["transparency"] = transparency
    return im


def _inputs(d):
    """Files of every kind imageio reads; name -> (file, what its pixels must look like)."""
    rng = np.random.default_rng(0)
    made = {}
    g = rng.integers(0, 256, (5, 6), dtype=np.uint8)
    Image.fromarray(g).save(d / "grey.png")
    made["grey.png"] = "L"
    Image.fromarray(rng.integers(0, 256, (4, 5, 2), dtype=np.uint8), "LA").save(d / "la.png")
    made["la.png"] = "LA"
    Image.fromarray(rng.integers(0, 256, (4, 5, 3), dtype=np.uint8)).save(d / "rgb.png")
    made["rgb.png"] = "RGB"
    rgba = rng.integers(0, 256, (3, 4, 4), dtype=np.uint8)
    rgba[0, 0, 3] = 0                                    # fully transparent pixel keeps its colour
    Image.fromarray(rgba, "RGBA").save(d / "rgba.png")
    made["rgba.png"] = "RGBA"
    _palette((5, 3)).save(d / "pal.png")
    made["pal.png"] = "RGB"
    _palette((5, 3), transparency=2).save(d / "pal-trns.png", transparency=2)
    made["pal-trns.png"] = "RGBA"
    _palette((5, 3), rgba_palette=True).save(d / "pal-rgba.png")
    made["pal-rgba.png"] = "RGBA"
    _palette((6, 2)).save(d / "pal.gif")
    made["pal.gif"] = "RGB"
    Image.fromarray(rng.integers(0, 2, (5, 9), dtype=np.uint8).astype(bool)).save(d / "bits.png")
    made["bits.png"] = "L"
    Image.fromarray(rng.integers(0, 2, (4, 4), dtype=np.uint8) * 255).convert("1").save(d / "bits.bmp")
    made["bits.bmp"] = "L"
    key = g.copy()
    key[0, :3] = 17
    Image.fromarray(key).save(d / "grey-key.png", transparency=17)
    made["grey-key.png"] = "LA"
    rk = rng.integers(0, 256, (3, 3, 3), dtype=np.uint8)
    rk[1, 1] = (1, 2, 3)
    Image.fromarray(rk).save(d / "rgb-key.png", transparency=(1, 2, 3))
    made["rgb-key.png"] = "RGBA"
    Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)).save(d / "rgb.tif")
    made["rgb.tif"] = "RGB"
    Image.fromarray(rng.integers(0, 256, (3, 5), dtype=np.uint8)).save(d / "grey.pgm")
    made["grey.pgm"] = "L"
    return made


def _colours(path):
    """What a viewer shows: RGBA of every pixel (pillow applies palettes and colour keys)."""
    im = Image.open(path)
    return np.asarray(im.convert("RGBA"))


def test_every_input_kind_round_trips_to_identical_colours(tmp_path, model):
    src = tmp_path / "in"
    src.mkdir()
    kinds = _inputs(src)
    before = digest(src)
    stream = tmp_path / "all.ddpmc"
    res = ok(run("compress", src, "-o", stream, "--model", model, "--steps", 2))
    assert f"{len(kinds)} image(s)" in res.stdout
    out = tmp_path / "out"
    ok(run("decompress", stream, "-o", out, "--model", model))
    assert digest(src) == before
    for name, mode in kinds.items():
        back = out / (name if name.endswith(".png") else name + ".png")
        im = Image.open(back)
        assert im.mode == mode, (name, im.mode)
        assert im.format == "PNG"
        np.testing.assert_array_equal(_colours(back), _colours(src / name), err_msg=name)
        # and what imageio stores is exactly what comes back
        np.testing.assert_array_equal(imageio.read_image(back).pixels, imageio.read_image(src / name).pixels)
    # the 1-bit image becomes exactly 0 / 255 grey
    assert set(np.unique(np.asarray(Image.open(out / "bits.png")))) <= {0, 255}
    no_temp_files(tmp_path)


def test_compress_never_overwrites_without_force(tmp_path, model):
    Image.fromarray(np.arange(30, dtype=np.uint8).reshape(5, 6)).save(tmp_path / "a.png")
    out = tmp_path / "a.ddpmc"
    out.write_bytes(b"precious")
    before = digest(tmp_path)
    fails(run("compress", tmp_path / "a.png", "--model", model, "--steps", 2), "exists (use --force")
    fails(run("compress", tmp_path / "a.png", "-o", out, "--model", model, "--steps", 2), "exists (use --force")
    assert digest(tmp_path) == before
    ok(run("compress", tmp_path / "a.png", "-o", out, "--model", model, "--steps", 2, "--force"))
    assert out.read_bytes()[:5] == b"DDPMC"
    no_temp_files(tmp_path)


@pytest.mark.parametrize("force", [False, True])
def test_compress_never_writes_over_an_input(tmp_path, model, force):
    Image.fromarray(np.arange(30, dtype=np.uint8).reshape(5, 6)).save(tmp_path / "a.png")
    Image.fromarray(np.arange(30, dtype=np.uint8).reshape(6, 5)).save(tmp_path / "b.png")
    before = digest(tmp_path)
    args = ["compress", tmp_path / "a.png", tmp_path / "b.png", "-o", tmp_path / "b.png", "--model", model,
            "--steps", 2] + (["--force"] if force else [])
    fails(run(*args), "one of the inputs" if force else "b.png")
    # the same through a folder argument
    args = ["compress", tmp_path, "-o", tmp_path / "a.png", "--model", model] + (["--force"] if force else [])
    fails(run(*args), "one of the inputs" if force else "a.png")
    assert digest(tmp_path) == before


def test_decompress_never_overwrites_without_force(tmp_path, model):
    a = np.arange(30, dtype=np.uint8).reshape(5, 6)
    Image.fromarray(a).save(tmp_path / "a.png")
    Image.fromarray(a[::-1]).save(tmp_path / "b.png")
    stream = tmp_path / "s.ddpmc"
    ok(run("compress", tmp_path / "a.png", tmp_path / "b.png", "-o", stream, "--model", model, "--steps", 2))
    out = tmp_path / "out"
    out.mkdir()
    (out / "b.png").write_bytes(b"precious")
    before = digest(tmp_path)
    fails(run("decompress", stream, "-o", out, "--model", model), "b.png exists (use --force")
    assert digest(tmp_path) == before                  # and a.png was not written either
    ok(run("decompress", stream, "-o", out, "--model", model, "--force"))
    np.testing.assert_array_equal(np.asarray(Image.open(out / "b.png")), a[::-1])
    np.testing.assert_array_equal(np.asarray(Image.open(out / "a.png")), a)
    no_temp_files(tmp_path)


@pytest.mark.parametrize("force", [False, True])
def test_decompress_never_writes_over_its_stream(tmp_path, model, force):
    Image.fromarray(np.arange(30, dtype=np.uint8).reshape(5, 6)).save(tmp_path / "a.png")
    stream = tmp_path / "s.ddpmc"
    ok(run("compress", tmp_path / "a.png", "-o", stream, "--model", model, "--steps", 2))
    sub = tmp_path / "sub"
    sub.mkdir()
    disguised = sub / "a.png"                          # a stream whose image would be written onto it
    disguised.write_bytes(stream.read_bytes())
    before = digest(tmp_path)
    fails(run("decompress", disguised, "-o", sub, "--model", model, *(["--force"] if force else [])),
          "is the input stream")
    assert digest(tmp_path) == before


def test_decompress_into_a_file_is_refused(tmp_path, model):
    Image.fromarray(np.arange(30, dtype=np.uint8).reshape(5, 6)).save(tmp_path / "a.png")
    stream = tmp_path / "s.ddpmc"
    ok(run("compress", tmp_path / "a.png", "-o", stream, "--model", model, "--steps", 2))
    before = digest(tmp_path)
    fails(run("decompress", stream, "-o", tmp_path / "a.png", "--model", model), "is not a folder")
    fails(run("decompress", tmp_path / "nope.ddpmc", "-o", tmp_path / "o", "--model", model), "no such file")
    assert digest(tmp_path) == before


def test_compress_into_a_missing_folder_is_a_user_error(tmp_path, model):
    Image.fromarray(np.arange(30, dtype=np.uint8).reshape(5, 6)).save(tmp_path / "a.png")
    before = digest(tmp_path)
    fails(run("compress", tmp_path / "a.png", "-o", tmp_path / "no" / "x.ddpmc", "--model", model, "--steps", 2),
          "its folder does not exist")
    (tmp_path / "file").write_text("x")
    fails(run("compress", tmp_path / "a.png", "-o", tmp_path / "file" / "x.ddpmc", "--model", model, "--steps", 2),
          "its folder does not exist")
    assert digest(tmp_path) == {**before, "file": digest(tmp_path)["file"]}
    no_temp_files(tmp_path)


def test_decompress_is_all_or_nothing(tmp_path, model, monkeypatch):
    """A write that fails half-way (disk full) takes back the images this run wrote."""
    for k in range(3):
        Image.fromarray(np.full((4, 4), 40 * k, np.uint8)).save(tmp_path / f"i{k}.png")
    stream = tmp_path / "s.ddpmc"
    ok(run("compress", *[tmp_path / f"i{k}.png" for k in range(3)], "-o", stream, "--model", model, "--steps", 2))
    before = digest(tmp_path)
    real, calls = imageio.write_png, []

    def flaky(path, *a, **kw):
        calls.append(path)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real(path, *a, **kw)

    monkeypatch.setattr(imageio, "write_png", flaky)
    out = tmp_path / "out"
    fails(run("decompress", stream, "-o", out, "--model", model), "No space left on device")
    assert len(calls) == 3
    assert not out.exists()                            # both written images and the new folder are gone
    assert digest(tmp_path) == before


def test_small_images_then_a_large_one_round_trip(tmp_path, model):
    rng = np.random.default_rng(1)
    for k in range(3):
        Image.fromarray(rng.integers(0, 256, (4, 4), dtype=np.uint8)).save(tmp_path / f"a{k}.png")
    Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8)).save(tmp_path / "b.png")
    files = [tmp_path / f"a{k}.png" for k in range(3)] + [tmp_path / "b.png"]
    ok(run("compress", *files, "-o", tmp_path / "s.ddpmc", "--model", model, "--steps", 2))
    ok(run("decompress", tmp_path / "s.ddpmc", "-o", tmp_path / "out", "--model", model))
    for f in files:
        np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "out" / f.name)), np.asarray(Image.open(f)))


def test_grid_option_round_trips_and_is_recorded(tmp_path, model):
    from ddpm_codec.format import container
    rng = np.random.default_rng(4)
    for k in range(3):
        Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(tmp_path / f"i{k}.png")
    ins = [tmp_path / f"i{k}.png" for k in range(3)]
    out = tmp_path / "g.ddpmc"
    ok(run("compress", *ins, "-o", out, "--model", model, "--steps", 2, "--grid", 0.5, "--classical", "never"))
    assert container.parse(out.read_bytes()).header["grid_fraction"] == 0.5    # the default is left out
    ok(run("decompress", out, "-o", tmp_path / "dec", "--model", model))
    for p in ins:
        assert np.array_equal(np.asarray(Image.open(p)), np.asarray(Image.open(tmp_path / "dec" / p.name)))
    fails(run("compress", *ins, "-o", tmp_path / "bad.ddpmc", "--model", model, "--steps", 2, "--grid", 7),
          "grid fraction")
    assert not (tmp_path / "bad.ddpmc").exists()


def test_tiles_option_round_trips_and_is_recorded(tmp_path, model):
    from ddpm_codec.format import container
    img = np.random.default_rng(5).integers(0, 256, (61, 33, 3), dtype=np.uint8)
    Image.fromarray(img).save(tmp_path / "big.png")
    for mode, tiled in (("always", True), ("never", False)):
        out = tmp_path / f"{mode}.ddpmc"
        ok(run("compress", tmp_path / "big.png", "-o", out, "--model", model, "--steps", 2, "--tiles", mode, "--classical", "never"))
        assert ("tile" in container.parse(out.read_bytes()).header) == tiled
        ok(run("decompress", out, "-o", tmp_path / mode, "--model", model))
        assert np.array_equal(np.asarray(Image.open(tmp_path / mode / "big.png")), img)
    res = run("compress", tmp_path / "big.png", "-o", tmp_path / "x.ddpmc", "--model", model, "--tiles", "some")
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert not (tmp_path / "x.ddpmc").exists()


def test_usage_errors_are_one_line(tmp_path, model):
    """Issue 21: a missing argument or a wrong option ends in our one line, exit code 2, as any user error."""
    assert "Usage:" not in fails(run("compress"), "Missing argument 'INPUTS...'")
    fails(run("decompress"), "Missing argument 'STREAM'")
    Image.fromarray(np.arange(30, dtype=np.uint8).reshape(5, 6)).save(tmp_path / "a.png")
    before = digest(tmp_path)
    fails(run("compress", tmp_path / "a.png", "--model", model, "--steps", 2, "--bpd", 1),
          "--bpd and --stop-at apply to --lossy streams")
    fails(run("compress", tmp_path / "a.png", "--model", model, "--classical", "always"), "--classical")
    assert digest(tmp_path) == before
