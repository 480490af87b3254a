"""Commands on the coding side: compress, decompress, bench."""
from __future__ import annotations

import os
from pathlib import Path

import click

from .options import model_option, split_option

IMAGE_SUFFIXES = {".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".jpg", ".jpeg"}


def _expand(inputs):
    files = []
    for p in inputs:
        p = Path(p)
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES and q.is_file())
            if not found:
                from ddpm_codec.io.images import UnsupportedImageError
                raise UnsupportedImageError(f"{p}: no images in this folder", "missing")
            files += found
        else:
            files.append(p)
    return files


def _safe_name(name: str, used: dict) -> str:
    """A decoded image's file name: the recorded base name, never a path.
    `used` maps names given so far (and, under (stem,), a stem's next suffix), so that
    many equal names cost linear time."""
    base = os.path.basename(name.replace("\\", "/"))
    base = "".join(ch for ch in base if ch.isprintable())[:120] or "image"   # no NUL, control chars, surrogates
    if base in (".", ".."):
        base = "image"
    stem = base[:-4] if base.lower().endswith(".png") else base
    out, k = f"{stem}.png", used.get((stem,), 1)
    while out in used:
        out, k = f"{stem}-{k}.png", k + 1
    used[(stem,)] = k
    used[out] = True
    return out


@click.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--out", default=None, help="output stream (default: INPUT.ddpmc, or images.ddpmc)")
@model_option
@click.option("--steps", default=None, type=int, help="T_eval (default: the model's recommended chain)")
@click.option("--lossy", is_flag=True, help="progressive lossy stream (DDPM Algorithms 3-4; float conditionals, not portable yet)")
@click.option("--bpd", default=None, type=float, help="lossy: stop once this many bits/dim are sent")
@click.option("--stop-at", default=None, type=int, help="lossy: stop after the chain's latent index t")
@click.option("--no-encrypt", is_flag=True, help="lossless: switch the keystream XOR off (ablation)")
@click.option("--grid", default=None, type=float,
              help="lossless: latent bin width / noise scale (default 0.25; 0.5 is ~0.1% larger on "
                   "large streams, needs ~1 bit/dim less in flight)")
@click.option("--tiles", type=click.Choice(["auto", "always", "never"]), default="auto", show_default=True,
              help="lossless: cut images larger than the model's training size into tiles, so that one "
                   "large image funds its own chain (auto: a stream of fewer than 8 planes tries tiles of "
                   "that size, of twice it and whole planes, and keeps the smallest; always: tiles of that "
                   "size; never: whole planes)")
@click.option("--classical", type=click.Choice(["auto", "never"]), default="auto", show_default=True,
              help="lossless: auto stores an image (or tile) with its best classical code where that is "
                   "smaller than its estimated chain code; never codes every one the chain can fund by the "
                   "chain (to measure the chain)")
@click.option("--float", "float_path", is_flag=True,
              help="lossless: float conditionals, faster, but the stream decodes only where torch's kernels "
                   "repeat bit for bit (the same machine, torch and thread count); default: a portable stream "
                   "that decodes on any machine")
@click.option("--fast", is_flag=True,
              help="lossless: a 25-step chain (or the classical code where the estimate favours it): about "
                   "4x faster than the recommended 100 steps, and larger (T_eval 25 costs ~8% more bits/dim)")
@click.option("--force", is_flag=True, help="overwrite OUT if it exists")
def compress(inputs, out, model_path, steps, lossy, bpd, stop_at, no_encrypt, grid, tiles, classical, float_path,
             fast, force):
    """Compress images into one .ddpmc stream (lossless by default).

    INPUTS are image files or folders of images; the stream keeps their names,
    sizes and modes.

    \b
    Examples:
      ddpm-codec compress examples/*.png -o examples.ddpmc
      ddpm-codec compress examples/fashion_test_0.png   # examples/fashion_test_0.ddpmc
      ddpm-codec compress examples -o small.ddpmc --steps 25
      ddpm-codec compress examples --lossy --bpd 1 -o lossy.ddpmc
    """
    from tqdm import tqdm

    from ddpm_codec import api
    from ddpm_codec.io.images import OutputExistsError, atomic_write_bytes, read_image

    files = _expand(inputs)
    if out is None:
        out = str(files[0].with_suffix(".ddpmc")) if len(files) == 1 else "images.ddpmc"
    if any(_same_file(out, f) for f in files):
        raise OutputExistsError(f"{out}: output is one of the inputs; refusing to overwrite it")
    if Path(out).exists() and not force:
        raise OutputExistsError(f"{out} exists (use --force to overwrite)")
    if not Path(out).absolute().parent.is_dir():      # refuse before coding, not after
        raise FileNotFoundError(f"{out}: its folder does not exist")
    images = [read_image(f) for f in files]
    codec = api.Codec(model_path)
    if lossy:
        data, rep = codec.compress_lossy(images, steps=steps, bpd=bpd, stop_at=stop_at)
    else:
        if bpd is not None or stop_at is not None:
            raise click.UsageError("--bpd and --stop-at apply to --lossy streams")
        # one bar for the whole job, in pixels over every layout the encoder tries
        with tqdm(total=None, desc="compress", unit="px", unit_scale=True) as bar:
            def announce(total):
                bar.total = total
                bar.refresh()
            if fast and steps is not None:
                raise click.UsageError("--fast picks the chain length itself: leave out --steps")
            data, rep = codec.compress(images, steps=codec.fast_steps() if fast else steps,
                                       encrypt=not no_encrypt, progress=bar.update,
                                       grid=grid, tiles=tiles, classical=classical, announce_total=announce,
                                       portable=False if float_path else "auto")
    atomic_write_bytes(out, data, force=force)
    dims = sum(im.pixels.size for im in images)
    click.echo(f"{out}: {len(images)} image(s), {len(data)} bytes, {8 * len(data) / dims:.4f} bits/dim "
               f"(D = {dims}: all pixels x channels)")


@click.command()
@click.argument("stream", type=click.Path(dir_okay=False))
@click.option("-o", "--out", "out_dir", default=".", show_default=True, help="folder for the images")
@model_option
@click.option("--stop-at", default=None, type=int, help="lossy: decode only down to latent index t")
@click.option("--max-bytes", default=None, type=int, help="lossy: decode only this prefix of the stream")
@click.option("--stochastic", is_flag=True, help="lossy: sample x from p(x|z_t) instead of x0_hat")
@click.option("--force", is_flag=True, help="overwrite existing images")
def decompress(stream, out_dir, model_path, stop_at, max_bytes, stochastic, force):
    """Decode a .ddpmc stream back to PNG images.

    \b
    Examples:
      ddpm-codec decompress examples.ddpmc -o decoded
      ddpm-codec decompress lossy.ddpmc -o coarse --max-bytes 300 --force
      ddpm-codec decompress lossy.ddpmc -o coarse --stop-at 50 --force
    """
    from tqdm import tqdm

    from ddpm_codec import api
    from ddpm_codec.io.images import OutputExistsError, write_png

    path = Path(stream)
    if not path.exists():
        raise FileNotFoundError(f"{stream}: no such file")
    data = path.read_bytes()
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"{out}: exists and is not a folder")
    used, targets = {}, []
    for name in api.stream_names(data):      # refuse before any decoding work
        target = out / _safe_name(name, used)
        if _same_file(target, path):
            raise OutputExistsError(f"{target}: output is the input stream; refusing to overwrite it")
        if target.exists() and not force:
            raise OutputExistsError(f"{target} exists (use --force to overwrite)")
        targets.append(target)
    codec = api.Codec(model_path)
    if api.stream_mode(data) == "lossy":
        images = codec.decompress_lossy(data, stop_at=stop_at, max_bytes=max_bytes, stochastic=stochastic)
    else:
        if stop_at is not None or max_bytes is not None or stochastic:
            raise click.UsageError("--stop-at, --max-bytes and --stochastic apply to lossy streams")
        with tqdm(total=codec.decode_work(data), desc="decompress", unit="px", unit_scale=True) as bar:
            images = codec.decompress(data, progress=bar.update)
    made_dir = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    written = []
    try:
        for im, target in zip(images, targets):
            new = not target.exists()
            c = im.pixels.shape[2]
            mode = im.mode if im.mode == api.MODES_BY_CHANNELS.get(c) else api.MODES_BY_CHANNELS[c]
            write_png(target, im.pixels if c > 1 else im.pixels[:, :, 0], mode, force=force)
            if new:
                written.append(target)
    except BaseException:            # all or nothing: take back the images this run created
        for t in written:
            t.unlink(missing_ok=True)
        if made_dir and not any(out.iterdir()):
            out.rmdir()
        raise
    click.echo(f"{stream}: {len(images)} image(s) -> {out_dir}")


@click.command()
@split_option
@click.option("--data", default="fashion_mnist", show_default=True)
@click.option("--n", "n", default=100, show_default=True, help="images (one stream)")
@click.option("--steps", default="10,25,50,100", show_default=True, help="comma-separated T_eval values")
@click.option("--single", default=0, show_default=True, help="also compress this many images alone each")
@model_option
@click.option("--json", "json_path", default=None)
@click.option("--markdown", "md_path", default=None, help="write the table here too")
@click.option("--classical/--no-classical", default=True, show_default=True)
@click.option("--plot", "plot_path", default=None, help="PNG: bits/dim against T_eval")
@click.option("--grid", default=None, type=float, help="latent bin width / noise scale (default 0.25)")
def bench(split, data, n, steps, single, model_path, json_path, md_path, classical, plot_path, grid):
    """Real bits/dim against -VLB per T_eval, with PNG / WebP / JPEG XL beside.

    \b
    Examples:
      ddpm-codec bench --n 20 --steps 25,100
      ddpm-codec bench --n 100 --steps 100 --json bench.json --markdown bench.md
      ddpm-codec bench --n 10 --steps 100 --single 5 --no-classical
    """
    import json as _json

    import torch

    from ddpm_codec.data.datasets import load_dataset
    from ddpm_codec.eval import bench as benchmark
    from ddpm_codec.io.atomic import atomic_write_bytes
    from ddpm_codec.io.checkpoint import load_companion, load_model

    model, meta = load_model(model_path)
    groups_model = load_companion(model_path, meta["fingerprint"]) if single else None
    images = load_dataset(data, split, n=n)
    try:
        step_list = [int(s) for s in steps.split(",") if s.strip()]
    except ValueError:
        raise click.BadParameter("--steps takes comma-separated integers")
    records, singles = [], []
    for st in step_list:
        with torch.no_grad():
            r = benchmark.lossless_record(model, meta["fingerprint"], images, st, grid=grid)
        records.append(r)
        click.echo(f"T_eval {st}: -VLB {r['neg_vlb_bpd']:.4f}  net {r['net_bpd']:.4f} ({r['net_gap_pct']:+.3f}%)"
                   f"  file {r['file_bpd']:.4f} ({r['file_gap_pct']:+.3f}%)  bits/dim, D = {r['dims']}", err=True)
        if single:
            with torch.no_grad():
                singles.append(benchmark.single_image_record(model, meta["fingerprint"], images[:single], st,
                                                     groups_model))
    cl = benchmark.classical_records(images) if classical else []
    table = benchmark.markdown(records, cl)
    if singles:
        table += "\n\nEach image alone (bits/dim, mean over images):\n\n" + benchmark.single_markdown(singles)
    click.echo(table)
    out = {"model": model_path, "model_fingerprint": meta["fingerprint"], "split": split, "data": data,
           "n_images": len(images), "threads": torch.get_num_threads(), "records": records,
           "single_image": singles, "classical": cl,
           "conventions": {"bits_per_dim": "bits / (N * C * H * W) of the original images"}}
    if json_path:
        atomic_write_bytes(json_path, (_json.dumps(out, indent=1) + "\n").encode(), force=True)
    if md_path:
        atomic_write_bytes(md_path, (table + "\n").encode(), force=True)
    if plot_path:
        benchmark.plot(records, cl, plot_path, f"{data} {split}: {len(images)} images in one stream")


def _same_file(a, b) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def register(group):
    group.add_command(compress)
    group.add_command(decompress)
    group.add_command(bench)
