"""Commands on the model side: train, train-groups, nll, merge, sample, export, fit-chain."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from ddpm_codec.training.config import PIXEL_GROUPS_RECIPE, TrainConfig

from .options import MODEL_HELP, RECOMMENDED, model_option, recommended_steps, split_option


def _parse_shard(value):
    if value is None:
        return None
    try:
        i, n = (int(v) for v in value.split("/"))
    except ValueError:
        raise click.BadParameter("use the form i/n, e.g. 0/4")
    if not (n >= 1 and 0 <= i < n):
        raise click.BadParameter(f"shard {value}: need 0 <= i < n")
    return i, n


def _write_json(path, rec):
    from ddpm_codec.io.atomic import atomic_write_bytes
    atomic_write_bytes(path, (json.dumps(rec, indent=1) + "\n").encode(), force=True)


_TRAIN = TrainConfig()                               # the defaults of `train` ...
_GROUPS = TrainConfig(**PIXEL_GROUPS_RECIPE)         # ... and of `train-groups`: one source, the trainer's


def _run_options(d: TrainConfig):
    """The options `train` and `train-groups` share, their defaults read from `d`."""
    options = [
        click.option("--data", default=d.data, show_default=True, help="dataset name or path"),
        click.option("--out", default=d.out, show_default=True, help="run folder (checkpoints, log.jsonl)"),
        click.option("--steps", default=d.steps, show_default=True),
        click.option("--batch-size", default=d.batch_size, show_default=True, help="global batch, all ranks together"),
        click.option("--lr", default=d.lr, show_default=True),
        click.option("--warmup", default=d.warmup, show_default=True),
        click.option("--lr-decay-to", default=d.lr_decay_to, show_default=True,
                     help="cosine decay to lr * this at --steps"),
        click.option("--ema-decay", default=d.ema_decay, show_default=True),
        click.option("--grad-clip", default=d.grad_clip, show_default=True),
        click.option("--flips/--no-flips", default=d.flips, show_default=True, help="random horizontal flips"),
        click.option("--seed", default=d.seed, show_default=True),
        click.option("--eval-every", default=d.eval_every, show_default=True),
        click.option("--eval-n", default=d.eval_n, show_default=True),
        click.option("--ckpt-every", default=d.ckpt_every, show_default=True),
        click.option("--amp/--no-amp", default=d.amp, help="bf16 autocast on GPU"),
        click.option("--device", default=None, help="cpu / cuda (default: cuda if available)"),
        click.option("--resume/--no-resume", default=True, show_default=True,
                     help="continue from OUT/last if present"),
    ]

    def apply(f):
        for option in reversed(options):
            f = option(f)
        return f
    return apply


def _fit(cfg: TrainConfig, device, resume: bool, what: str):
    """Train `cfg` to its steps (resuming OUT/last when asked) on its dataset; returns the trainer."""
    from ddpm_codec.data.datasets import load_dataset
    from ddpm_codec.training import distributed as dist
    from ddpm_codec.training.trainer import Trainer

    device = dist.init_from_env(device)
    if cfg.batch_size % dist.world_size():
        raise click.BadParameter(f"global batch {cfg.batch_size} is not divisible by {dist.world_size()} ranks",
                                 param_hint="--batch-size")
    tr = load_dataset(cfg.data, "train")
    try:
        te = load_dataset(cfg.data, "test")
    except Exception:  # noqa: BLE001 - a dataset without a test split trains without eval
        te = None
    trainer = Trainer(cfg, tr, te, device=device)
    if resume and trainer.resume() and trainer.rank == 0:
        click.echo(f"resumed {cfg.out} at step {trainer.step}", err=True)
    if trainer.rank == 0:
        click.echo(f"training {what} on {cfg.data}: global batch {cfg.batch_size} = {trainer.world} rank(s) x "
                   f"{cfg.batch_size // trainer.world}, lr {cfg.lr}, objective {cfg.objective}, device {device}",
                   err=True)
    trainer.fit()
    return trainer


def _finish(trainer, export_to=None):
    """Rank 0: the final figure, then `export_to(trainer, figure)`; every rank: tear down."""
    from ddpm_codec.training import distributed as dist
    if trainer.rank == 0:
        ev = trainer.evaluate()
        click.echo(f"done at step {trainer.step}; {trainer.describe(ev)}" if ev is not None
                   else f"done at step {trainer.step}")
        if export_to:
            export_to(trainer, ev)
    world = trainer.world
    dist.barrier()          # rank 0 evaluates and exports alone; tear down together
    dist.shutdown()
    if world > 1:
        # torch 2.13 + gloo: a rank aborts now and then in C++ teardown at interpreter
        # exit ("terminate called without an active exception", SIGABRT), failing the
        # torchrun job after the work is done. Every file is closed: skip that teardown.
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        os._exit(0)


@click.command()
@click.option("--config", "model", default=_TRAIN.model, show_default=True,
              help="named model config (ddpm_codec.diffusion.configs)")
@_run_options(_TRAIN)
@click.option("--objective", type=click.Choice(["vlb", "simple"]), default=_TRAIN.objective, show_default=True)
@click.option("--time-sampler", type=click.Choice(["importance", "uniform"]), default=_TRAIN.time_sampler,
              show_default=True)
@click.option("--export", default=None, help="also write the final EMA model to this PATH(.safetensors/.json)")
def train(device, resume, export, **fields):
    """Train on the full VLB (or L_simple); checkpoints are resumable.

    \b
    Examples:
      ddpm-codec train --config tiny-vdm --out runs/tiny --steps 200 --export tiny
      ddpm-codec train --out runs/fmnist --steps 5000 --lr 4e-4 --lr-decay-to 0.1
      ddpm-codec train --out runs/fmnist --steps 11000 --lr 2e-4  # resumes runs/fmnist
    """
    from ddpm_codec.io.checkpoint import save_model

    cfg = TrainConfig(**fields)

    def write(trainer, ev):
        fp = save_model(trainer.ema.model, export, {"ema": True, "step": trainer.step})
        click.echo(f"exported {export} (fingerprint {fp[:16]})")
    _finish(_fit(cfg, device, resume, cfg.model), write if export else None)


@click.command("train-groups")
@click.option("--base", default=_GROUPS.base, show_default=True,
              help="the model the companion is fine-tuned from (and coded beside); " + MODEL_HELP)
@_run_options(_GROUPS)
@click.option("--export", default=None,
              help="then write the companion (EMA) to PATH(.safetensors/.json); beside BASE: BASE_groups")
@click.option("--refit-variance", is_flag=True,
              help="with --export: refit the reverse-variance table on the group chains (train images)")
def train_groups(device, resume, export, refit_variance, **fields):
    """Fine-tune the pixel-group companion of a model (one image alone as pixel
    groups); the trainer's checkpoints, resume and EMA.

    \b
    Examples:
      ddpm-codec train-groups --out runs/groups --steps 100 --eval-every 0
      ddpm-codec train-groups --base tiny --out runs/tiny-groups --export tiny_groups
    """
    from dataclasses import asdict

    import torch

    from ddpm_codec.training import groups

    cfg = TrainConfig(**{**PIXEL_GROUPS_RECIPE, **fields})

    def write(trainer, ev):
        refit = None
        if refit_variance:
            refit = torch.from_numpy(trainer.train_data[:groups.REFIT_IMAGES])
        evaluation = {"step": trainer.step, trainer.eval_key: ev, "eval_n": cfg.eval_n} if ev is not None else None
        fp = groups.export(trainer.ema.model, export, trainer.base_fingerprint, trainer.step, refit,
                           extra={"eval": evaluation, "train": asdict(cfg)})
        click.echo(f"exported {export} (fingerprint {fp[:16]}, base {trainer.base_fingerprint[:16]})")
    _finish(_fit(cfg, device, resume, f"the pixel-group companion of {cfg.base}"), write if export else None)


@click.command()
@split_option
@click.option("--data", default="fashion_mnist", show_default=True, help="dataset name or path")
@click.option("--n", "n", type=int, default=None, help="first N images of the split (default all)")
@click.option("--steps", type=int, default=None, help=f"T_eval: latent levels of the chain; {RECOMMENDED}")
@model_option
@click.option("--json", "json_path", default=None, help="write the full record (per-step terms) here")
@click.option("--batch", default=100, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--shard", default=None, help="i/n: evaluate only contiguous shard i of n (merge with `merge`)")
@click.option("--step-samples", default=0, show_default=True, type=click.IntRange(min=0),
              help="0: every transition; k: an unbiased stratified sample of k transitions per image")
def nll(split, data, n, steps, model_path, json_path, batch, seed, shard, step_samples):
    """Negative VLB in bits/dim, every term of the chain (or a stratified sample of its steps).

    \b
    Examples:
      ddpm-codec nll --n 100
      ddpm-codec nll --steps 1000 --step-samples 10 --json nll1000.json
      ddpm-codec nll --shard 0/2 --json s0.json     # then --shard 1/2, then merge
    """
    from ddpm_codec.data.datasets import load_dataset, shard_bounds
    from ddpm_codec.eval.evaluate import evaluate_nll, format_summary
    from ddpm_codec.io.checkpoint import load_model

    model, meta = load_model(model_path)
    if steps is None:
        steps = recommended_steps(meta, model_path)
    images = load_dataset(data, split, n=n)
    first = 0
    sh = _parse_shard(shard)
    if sh:
        a, b = shard_bounds(len(images), *sh)
        images, first = images[a:b], a
    rec = evaluate_nll(model, images, steps, batch=batch, seed=seed, first_index=first, step_samples=step_samples)
    rec.update({"model": str(model_path), "model_fingerprint": meta["fingerprint"], "split": split,
                "data": data, "weights": "EMA" if meta.get("ema") else "as saved", "shard": shard})
    click.echo(format_summary(rec))
    if json_path:
        _write_json(json_path, rec)


@click.command()
@click.argument("shards", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--json", "json_path", required=True, help="merged record")
def merge(shards, json_path):
    """Merge the JSON of `nll --shard` runs into one result.

    \b
    Examples:
      ddpm-codec merge s0.json s1.json --json nll.json
    """
    from ddpm_codec.eval.evaluate import format_summary, merge_shards
    recs = [json.loads(Path(p).read_text()) for p in shards]
    try:
        rec = merge_shards(recs)
    except (ValueError, KeyError) as e:
        raise click.ClickException(str(e))
    click.echo(format_summary(rec))
    _write_json(json_path, rec)


@click.command()
@model_option
@click.option("--n", default=8, show_default=True)
@click.option("--steps", type=int, default=None, help=f"chain steps; {RECOMMENDED}")
@click.option("--seed", default=0, show_default=True)
@click.option("--snapshots", default=8, show_default=True, help="x0_hat frames per sample (DDPM Fig. 6)")
@click.option("-o", "--out", default="samples.png", show_default=True)
@click.option("--force", is_flag=True, help="overwrite OUT")
def sample(model_path, n, steps, seed, snapshots, out, force):
    """Draw samples (Algorithm 2) and write a PNG: one row per sample, the
    progressive x0_hat estimates left to right, the sample last.

    \b
    Examples:
      ddpm-codec sample --n 8 -o samples.png
      ddpm-codec sample --n 4 --steps 1000 --snapshots 10 --seed 1 -o fig6.png
    """
    from ddpm_codec.eval.sampling import grid
    from ddpm_codec.eval.sampling import sample as draw
    from ddpm_codec.io.checkpoint import load_model
    from ddpm_codec.io.images import OutputExistsError, write_png

    if os.path.exists(out) and not force:       # refuse before sampling, not after
        raise OutputExistsError(f"{out}: output exists; pass --force to overwrite")
    model, meta = load_model(model_path)
    if steps is None:
        steps = recommended_steps(meta, model_path)
    _, frames = draw(model, n, steps, seed=seed, snapshots=snapshots)
    img = grid(frames)
    mode = "L" if img.shape[2] == 1 else "RGB"
    write_png(out, img[..., 0] if mode == "L" else img, mode, force=force)
    click.echo(f"wrote {out}: {n} samples x {frames.shape[1]} frames, {steps} steps")


@click.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--to", "dest", required=True, help="PATH for PATH.safetensors + PATH.json")
@click.option("--recommended-steps", default=100, show_default=True,
              help="T_eval that compress uses by default with this model")
def export(run_dir, dest, recommended_steps):
    """Export a training run's EMA weights as a model (safetensors + JSON).

    \b
    Examples:
      ddpm-codec export runs/tiny --to tiny --recommended-steps 20
    """
    from ddpm_codec.io.checkpoint import load_model, save_model
    src = Path(run_dir) / "last" / "model"
    model, meta = load_model(str(src))
    extra = {k: meta[k] for k in ("ema", "step", "train", "note", "base_fingerprint") if k in meta}
    fp = save_model(model, dest, {**extra, "recommended_steps": recommended_steps})
    click.echo(f"exported {src} -> {dest} (step {meta.get('step')}, fingerprint {fp[:16]})")


@click.command("fit-chain")
@model_option
@click.option("--to", "dest", required=True, help="PATH for the refitted model (PATH.safetensors + PATH.json)")
@click.option("--steps", default=100, show_default=True, help="T_eval the times are fitted for")
@click.option("--data", default="fashion_mnist", show_default=True, help="dataset name or path (train split)")
@click.option("--n", default=128, show_default=True, help="training images the network error is measured on")
@click.option("--time-grid", "time_grid", default=1000, show_default=True, type=click.IntRange(min=1),
              metavar="N", help="the chain's times are picked from 0, 1/N, ..., 1 (the network error is "
                                "measured at each)")
@click.option("--grid", "old_grid", default=None, type=click.IntRange(min=1), hidden=True,
              help="deprecated spelling of --time-grid")
@click.option("--seed", default=0, show_default=True)
@click.option("--variance/--no-variance", default=True, show_default=True,
              help="also the eps-error reverse variance (Analytic-DPM)")
@click.option("--bins", default=16, show_default=True, type=click.IntRange(1, 256),
              help="eps-error table per this many bins of the predicted x0 (1: one variance per step)")
@click.pass_context
def fit_chain(ctx, model_path, dest, steps, data, n, time_grid, old_grid, seed, variance, bins):
    """Fit the chain's times (and reverse variance) to the T-step VLB; weights unchanged.

    \b
    Examples:
      ddpm-codec fit-chain --to fitted --steps 50 --n 32
      ddpm-codec fit-chain --model tiny --to tiny --steps 20 --time-grid 200
    """
    import torch
    from tqdm import tqdm

    from ddpm_codec.bound.chain_times import fit_chain as fit_times
    from ddpm_codec.data.datasets import load_dataset
    from ddpm_codec.io.checkpoint import load_model, save_model

    if old_grid is not None:
        if ctx.get_parameter_source("time_grid") is click.core.ParameterSource.COMMANDLINE:
            raise click.UsageError("--grid is the old spelling of --time-grid; give only --time-grid")
        click.echo("ddpm-codec: warning: fit-chain --grid is deprecated; use --time-grid", err=True)
        time_grid = old_grid
    grid = time_grid
    model, meta = load_model(model_path)
    if not model.schedule.continuous:
        raise click.ClickException("fit-chain: this model has a discrete schedule; its chain is DDPM's own steps")
    model.schedule.set_time_warp(None)        # a refit starts from the plain model
    model.set_eps_error(None)
    pixels = torch.from_numpy(load_dataset(data, "train", n=n))
    with tqdm(total=grid + 1, desc="network error over t", disable=not sys.stderr.isatty()) as bar:
        fit = fit_times(model, pixels, steps, grid, seed, variance, progress=bar.update, bins=bins)
    model.schedule.set_time_warp(fit["knots"])
    model.set_eps_error(fit["eps_error"])
    extra = {k: meta[k] for k in ("ema", "step", "train", "note", "recommended_steps") if k in meta}
    info = {k: v for k, v in fit.items() if k not in ("knots", "eps_error")}
    fp = save_model(model, dest, {**extra, "chain_fit": {**info, "data": data, "seed": seed}})
    click.echo(f"diffusion term on {n} {data} train images at {steps} steps: even times "
               f"{fit['even_bpd']:.4f}, fitted times {fit['times_only_bpd']:.4f}, eps-error variance "
               f"{fit['variance_only_bpd']:.4f}, both {fit['fitted_bpd']:.4f} bits/dim; wrote {dest} "
               f"(fingerprint {fp[:16]})")


def register(group):
    for cmd in (train, train_groups, nll, merge, sample, export, fit_chain):
        group.add_command(cmd)
