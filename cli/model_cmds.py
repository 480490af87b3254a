"""Commands on the model side: train, nll, merge, sample, export, fit-chain."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click


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
    from ddpm_codec.io.images import atomic_write_bytes
    atomic_write_bytes(path, (json.dumps(rec, indent=1) + "\n").encode(), force=True)


@click.command()
@click.option("--config", "model_name", default="fmnist", show_default=True,
              help="named model config (ddpm_codec.diffusion.configs)")
@click.option("--data", default="fashion_mnist", show_default=True, help="dataset name or path")
@click.option("--out", default="runs/fmnist", show_default=True, help="run folder (checkpoints, log.jsonl)")
@click.option("--steps", default=20000, show_default=True)
@click.option("--batch-size", default=64, show_default=True, help="global batch, all ranks together")
@click.option("--lr", default=2e-4, show_default=True)
@click.option("--warmup", default=200, show_default=True)
@click.option("--lr-decay-to", default=1.0, show_default=True, help="cosine decay to lr * this at --steps")
@click.option("--ema-decay", default=0.999, show_default=True)
@click.option("--grad-clip", default=1.0, show_default=True)
@click.option("--flips/--no-flips", default=False, show_default=True, help="random horizontal flips")
@click.option("--objective", type=click.Choice(["vlb", "simple"]), default="vlb", show_default=True)
@click.option("--time-sampler", type=click.Choice(["importance", "uniform"]), default="importance",
              show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--eval-every", default=1000, show_default=True)
@click.option("--eval-n", default=500, show_default=True)
@click.option("--ckpt-every", default=500, show_default=True)
@click.option("--amp/--no-amp", default=False, help="bf16 autocast on GPU")
@click.option("--device", default=None, help="cpu / cuda (default: cuda if available)")
@click.option("--resume/--no-resume", default=True, show_default=True, help="continue from OUT/last if present")
@click.option("--export", default=None, help="also write the final EMA model to this PATH(.safetensors/.json)")
def train(model_name, data, out, steps, batch_size, lr, warmup, lr_decay_to, ema_decay, grad_clip, flips,
          objective, time_sampler, seed, eval_every, eval_n, ckpt_every, amp, device, resume, export):
    """Train on the full VLB (or L_simple); checkpoints are resumable."""
    from ddpm_codec.data.datasets import load_dataset
    from ddpm_codec.io.checkpoint import save_model
    from ddpm_codec.training import distributed as dist
    from ddpm_codec.training.trainer import TrainConfig, Trainer

    device = dist.init_from_env(device)
    if batch_size % dist.world_size():
        raise click.BadParameter(f"global batch {batch_size} is not divisible by {dist.world_size()} ranks",
                                 param_hint="--batch-size")
    cfg = TrainConfig(model=model_name, data=data, out=out, steps=steps, batch_size=batch_size, lr=lr,
                      warmup=warmup, lr_decay_to=lr_decay_to, ema_decay=ema_decay, grad_clip=grad_clip,
                      flips=flips, objective=objective, time_sampler=time_sampler, seed=seed,
                      eval_every=eval_every, eval_n=eval_n, ckpt_every=ckpt_every, amp=amp)
    tr = load_dataset(data, "train")
    try:
        te = load_dataset(data, "test")
    except Exception:  # noqa: BLE001 - a dataset without a test split trains without eval
        te = None
    trainer = Trainer(cfg, tr, te, device=device)
    if resume and trainer.resume() and trainer.rank == 0:
        click.echo(f"resumed {out} at step {trainer.step}", err=True)
    if trainer.rank == 0:
        click.echo(f"training {model_name} on {data}: global batch {batch_size} = {trainer.world} rank(s) x "
                   f"{batch_size // trainer.world}, lr {lr}, objective {objective}, device {device}", err=True)
    trainer.fit()
    if trainer.rank == 0:
        ev = trainer.evaluate()
        click.echo(f"done at step {trainer.step}; test -VLB (MC, EMA) {ev:.4f} bits/dim" if ev is not None
                   else f"done at step {trainer.step}")
        if export:
            fp = save_model(trainer.ema.model, export, {"ema": True, "step": trainer.step})
            click.echo(f"exported {export} (fingerprint {fp[:16]})")
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
@click.option("--split", default="test", show_default=True)
@click.option("--data", default="fashion_mnist", show_default=True, help="dataset name or path")
@click.option("--n", "n", type=int, default=None, help="first N images of the split (default all)")
@click.option("--steps", default=1000, show_default=True, help="T_eval: latent levels of the chain")
@click.option("--model", "model_path", default="default", show_default=True)
@click.option("--json", "json_path", default=None, help="write the full record (per-step terms) here")
@click.option("--batch", default=100, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--shard", default=None, help="i/n: evaluate only contiguous shard i of n (merge with `merge`)")
@click.option("--step-samples", default=0, show_default=True, type=click.IntRange(min=0),
              help="0: every transition; k: an unbiased stratified sample of k transitions per image")
def nll(split, data, n, steps, model_path, json_path, batch, seed, shard, step_samples):
    """Negative VLB in bits/dim, every term of the chain (or a stratified sample of its steps)."""
    from ddpm_codec.data.datasets import load_dataset, shard_bounds
    from ddpm_codec.eval.evaluate import evaluate_nll, format_summary
    from ddpm_codec.io.checkpoint import load_model

    model, meta = load_model(model_path)
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
    """Merge the JSON of `nll --shard` runs into one result."""
    from ddpm_codec.eval.evaluate import format_summary, merge_shards
    recs = [json.loads(Path(p).read_text()) for p in shards]
    try:
        rec = merge_shards(recs)
    except (ValueError, KeyError) as e:
        raise click.ClickException(str(e))
    click.echo(format_summary(rec))
    _write_json(json_path, rec)


@click.command()
@click.option("--model", "model_path", default="default", show_default=True)
@click.option("--n", default=8, show_default=True)
@click.option("--steps", default=1000, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--snapshots", default=8, show_default=True, help="x0_hat frames per sample (DDPM Fig. 6)")
@click.option("-o", "--out", default="samples.png", show_default=True)
@click.option("--force", is_flag=True, help="overwrite OUT")
def sample(model_path, n, steps, seed, snapshots, out, force):
    """Draw samples (Algorithm 2) and write a PNG: one row per sample, the
    progressive x0_hat estimates left to right, the sample last."""
    from ddpm_codec.eval.sampling import grid
    from ddpm_codec.eval.sampling import sample as draw
    from ddpm_codec.io.checkpoint import load_model
    from ddpm_codec.io.images import OutputExistsError, write_png

    if os.path.exists(out) and not force:       # refuse before sampling, not after
        raise OutputExistsError(f"{out}: output exists; pass --force to overwrite")
    model, _ = load_model(model_path)
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
    """Export a training run's EMA weights as a model (safetensors + JSON)."""
    from ddpm_codec.io.checkpoint import load_model, save_model
    src = Path(run_dir) / "last" / "model"
    model, meta = load_model(str(src))
    extra = {k: meta[k] for k in ("ema", "step", "train", "note") if k in meta}
    fp = save_model(model, dest, {**extra, "recommended_steps": recommended_steps})
    click.echo(f"exported {src} -> {dest} (step {meta.get('step')}, fingerprint {fp[:16]})")


@click.command("fit-chain")
@click.option("--model", "model_path", default="default", show_default=True)
@click.option("--to", "dest", required=True, help="PATH for the refitted model (PATH.safetensors + PATH.json)")
@click.option("--steps", default=100, show_default=True, help="T_eval the times are fitted for")
@click.option("--data", default="fashion_mnist", show_default=True, help="dataset name or path (train split)")
@click.option("--n", default=128, show_default=True, help="training images the network error is measured on")
@click.option("--grid", default=1000, show_default=True, help="candidate times 0, 1/grid, ..., 1")
@click.option("--seed", default=0, show_default=True)
@click.option("--variance/--no-variance", default=True, show_default=True,
              help="also the eps-error reverse variance (Analytic-DPM)")
@click.option("--bins", default=16, show_default=True, type=click.IntRange(1, 256),
              help="eps-error table per this many bins of the predicted x0 (1: one variance per step)")
def fit_chain(model_path, dest, steps, data, n, grid, seed, variance, bins):
    """Fit the chain's times (and reverse variance) to the T-step VLB; weights unchanged."""
    import torch
    from tqdm import tqdm

    from ddpm_codec.bound.chain_times import fit_chain as fit_times
    from ddpm_codec.data.datasets import load_dataset
    from ddpm_codec.io.checkpoint import load_model, save_model

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
    for cmd in (train, nll, merge, sample, export, fit_chain):
        group.add_command(cmd)
