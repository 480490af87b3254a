"""Commands on the lossy side: rd-curve (rate-distortion of the progressive code)."""
from __future__ import annotations

import json

import click

from .options import RECOMMENDED, model_option, recommended_steps, split_option


def _write_json(path, rec):
    from ddpm_codec.io.atomic import atomic_write_bytes
    atomic_write_bytes(path, (json.dumps(rec, indent=1, allow_nan=False) + "\n").encode(), force=True)


@click.command("rd-curve")
@split_option
@click.option("--data", default="fashion_mnist", show_default=True, help="dataset name or path")
@click.option("--n", "n", type=int, default=None, help="first N images of the split (default all)")
@click.option("--steps", type=int, default=None, help=f"T_eval: schedule.chain(steps), as for nll; {RECOMMENDED}")
@model_option
@click.option("--json", "json_path", default=None, help="write the whole curve (every level) here")
@click.option("--plot", "plot_path", default=None, help="write the figure (PNG) here")
@click.option("--classical/--no-classical", default=True, show_default=True,
              help="measure JPEG, WebP and JPEG XL on the same images (per image and as a mosaic)")
@click.option("--latents", type=click.Choice(["topdown", "marginal"]), default="topdown", show_default=True,
              help="topdown: the receiver's latents, sampled down q(z_s|z_t,x); marginal: z_t ~ q(z_t|x) "
                   "with nll's draws (rates equal nll's terms)")
@click.option("--batch", default=100, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--points", default=10, show_default=True, help="rows of the printed table")
def rd_curve(split, data, n, steps, model_path, json_path, plot_path, classical, latents, batch, seed, points):
    """Rate (cumulative bits/dim) against distortion (RMSE [0, 255]) of the
    progressive lossy code over reverse time: DDPM Table 4 and Fig. 5.

    \b
    Examples:
      ddpm-codec rd-curve --n 10 --no-classical
      ddpm-codec rd-curve --n 100 --json rd.json --plot rd.png
      ddpm-codec rd-curve --n 100 --steps 1000 --latents marginal --no-classical
    """
    from ddpm_codec.data.datasets import load_dataset
    from ddpm_codec.eval.rd_curve import classical_compressai, classical_points, evaluate_rd, format_table
    from ddpm_codec.io.checkpoint import load_model

    images = load_dataset(data, split, n=n)
    model, meta = load_model(model_path)
    if steps is None:
        steps = recommended_steps(meta, model_path)
    rec = evaluate_rd(model, images, steps, batch=batch, seed=seed, latents=latents)
    rec.update({"model": str(model_path), "model_fingerprint": meta["fingerprint"], "split": split,
                "data": str(data), "weights": "EMA" if meta.get("ema") else "as saved"})
    click.echo(format_table(rec, points))
    rows = []
    if classical:
        rows, skipped = classical_points(images)
        rec["classical"] = rows
        rec["classical_compressai"] = classical_compressai(rows)
        rec["classical_skipped"] = skipped
        for s in skipped:
            click.echo(f"skipped {s}", err=True)
        click.echo(_classical_summary(rows))
    if json_path:
        _write_json(json_path, rec)
        click.echo(f"wrote {json_path}")
    if plot_path:
        from ddpm_codec.eval.plots import save_rd_figure
        save_rd_figure(plot_path, rec, rows)
        click.echo(f"wrote {plot_path} (distortion = RMSE over the set)")


def _classical_summary(rows) -> str:
    """One line per codec and layout: the settings' (bits/dim, RMSE) pairs."""
    out = {}
    for r in rows:
        out.setdefault((r["codec"], r["layout"]), []).append(f"{r['setting']:g}: {r['bpd']:.3f}/{r['rmse']:.2f}")
    return "\n".join(f"{c} {lay} (setting: bits/dim / RMSE): " + ", ".join(v) for (c, lay), v in out.items())


def register(group):
    group.add_command(rd_curve)
