"""Commands on the coding side: compress, decompress, bench."""
from __future__ import annotations

import os
from pathlib import Path

import click

IMAGE_SUFFIXES = {".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".jpg", ".jpeg"}


def _expand(inputs):
    files = []
    for p in inputs:
        p = Path(p)
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES and q.is_file())
            if not found:
                raise click.ClickException(f"{p}: no images in this folder")
            files += found
        else:
            files.append(p)
    return files


def _safe_name(name: str, used: set) -> str:
    """A decoded image's file name: the recorded base name, never a path."""
    base = os.path.basename(name.replace("\\", "/")) or "image"
    if base in (".", ".."):
        base = "image"
    stem = base[:-4] if base.lower().endswith(".png") else base
    out, k = f"{stem}.png", 1
    while out in used:
        out, k = f"{stem}-{k}.png", k + 1
    used.add(out)
    return out


@click.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--out", default=None, help="output stream (default: INPUT.ddpmc, or images.ddpmc)")
@click.option("--model", "model_path", default="default", show_default=True)
@click.option("--steps", default=None, type=int, help="T_eval (default: the model's recommended chain)")
@click.option("--lossy", is_flag=True, help="progressive lossy stream (DDPM Algorithms 3-4)")
@click.option("--bpd", default=None, type=float, help="lossy: stop once this many bits/dim are sent")
@click.option("--stop-at", default=None, type=int, help="lossy: stop after the chain's latent index t")
@click.option("--no-encrypt", is_flag=True, help="lossless: switch the keystream XOR off (ablation)")
@click.option("--force", is_flag=True, help="overwrite OUT if it exists")
def compress(inputs, out, model_path, steps, lossy, bpd, stop_at, no_encrypt, force):
    """Compress images into one .ddpmc stream (lossless by default)."""
    from tqdm import tqdm
    from ddpm_codec import api
    from ddpm_codec.imageio import read_image, atomic_write_bytes

    files = _expand(inputs)
    if out is None:
        out = str(files[0].with_suffix(".ddpmc")) if len(files) == 1 else "images.ddpmc"
    if Path(out).exists() and not force:
        raise click.ClickException(f"{out} exists (use --force to overwrite)")
    images = [read_image(f) for f in files]
    codec = api.Codec(model_path)
    if lossy:
        data, rep = codec.compress_lossy(images, steps=steps, bpd=bpd, stop_at=stop_at)
    else:
        if bpd is not None or stop_at is not None:
            raise click.UsageError("--bpd and --stop-at apply to --lossy streams")
        with tqdm(total=codec.count_units(images), desc="compress", unit="plane") as bar:
            data, rep = codec.compress(images, steps=steps, encrypt=not no_encrypt, progress=bar.update)
    atomic_write_bytes(out, data, force=force)
    dims = sum(im.pixels.size for im in images)
    click.echo(f"{out}: {len(images)} image(s), {len(data)} bytes, {8 * len(data) / dims:.4f} bits/dim "
               f"(D = {dims}: all pixels x channels)")


@click.command()
@click.argument("stream", type=click.Path(dir_okay=False))
@click.option("-o", "--out", "out_dir", default=".", show_default=True, help="folder for the images")
@click.option("--model", "model_path", default="default", show_default=True)
@click.option("--stop-at", default=None, type=int, help="lossy: decode only down to latent index t")
@click.option("--max-bytes", default=None, type=int, help="lossy: decode only this prefix of the stream")
@click.option("--stochastic", is_flag=True, help="lossy: sample x from p(x|z_t) instead of x0_hat")
@click.option("--force", is_flag=True, help="overwrite existing images")
def decompress(stream, out_dir, model_path, stop_at, max_bytes, stochastic, force):
    """Decode a .ddpmc stream back to PNG images."""
    from tqdm import tqdm
    from ddpm_codec import api
    from ddpm_codec.imageio import write_png

    path = Path(stream)
    if not path.exists():
        raise click.ClickException(f"{stream}: no such file")
    data = path.read_bytes()
    out = Path(out_dir)
    used, targets = set(), []
    for name in api.stream_names(data):      # refuse before any decoding work
        target = out / _safe_name(name, used)
        if target.exists() and not force:
            raise click.ClickException(f"{target} exists (use --force to overwrite)")
        targets.append(target)
    codec = api.Codec(model_path)
    if api.stream_mode(data) == "lossy":
        images = codec.decompress_lossy(data, stop_at=stop_at, max_bytes=max_bytes, stochastic=stochastic)
    else:
        if stop_at is not None or max_bytes is not None or stochastic:
            raise click.UsageError("--stop-at, --max-bytes and --stochastic apply to lossy streams")
        with tqdm(total=None, desc="decompress", unit="plane") as bar:
            images = codec.decompress(data, progress=bar.update)
    out.mkdir(parents=True, exist_ok=True)
    for im, target in zip(images, targets):
        write_png(target, im.pixels if im.pixels.shape[2] > 1 else im.pixels[:, :, 0], im.mode, force=force)
    click.echo(f"{stream}: {len(images)} image(s) -> {out_dir}")


def register(group):
    group.add_command(compress)
    group.add_command(decompress)
