"""The real progressive lossy codec against its evaluator (rd_curve) on Fashion-MNIST.

For each of N test images (default 3) and the default model, one
single-image stream is encoded (defaults of `ddpm_codec.codec.lossy`) and decoded
at every truncation point (frame end) in one progressive pass. Per point:

- codec rate: payload bits/dim up to the frame end (unit length prefix
  included), and the same with the file header (container and compact header) --
  the header is a fixed cost, reported apart and included;
- evaluator (rd_curve.rd_terms, topdown latents, `--seeds` draws per image):
  the rate L_T + KLs at the same chain level, the RMSE of x0_hat there, and
  the evaluator rate needed for the codec's decoded RMSE (interpolated);
- decoded RMSE (the decoder's x0_hat, rounded pixels) vs the evaluator's RMSE
  at the same level (mean and s.d. over draws: the sampling noise);
- what each coded step really delivered: sum of log q/p at the sent samples
  (bitsback.rcc.step's lean) beside the chain's KLs.

Then encoder time against the number of RCC candidates (a few settings of
bits_per_chunk / margin_bits on the first image), and the codec's bits at
equal RMSE against the best classical mosaic codec of
benchmarks/results/rd_classical.json (whole test split) and, on the same N
images, WebP / JPEG mosaics.

    OMP_NUM_THREADS=1 python benchmarks/bench_lossy.py [--n 3] [--steps 100] [--quick]

Writes benchmarks/results/lossy.json (CompressAI-style records under
"compressai"), lossy.md and lossy_rd.png; prints the markdown tables.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ddpm_codec.codec import lossy
from ddpm_codec.codec.lossless import ImageRecord
from ddpm_codec.data.datasets import load_dataset
from ddpm_codec.eval import rd_curve
from ddpm_codec.io.checkpoint import load_model

RESULTS = Path(__file__).resolve().parent / "results"
SWEEP = [(8.0, 2.0), (10.0, 2.0), (10.0, 4.0), (12.0, 4.0)]       # (bits_per_chunk, margin_bits)
RMSE_TARGETS = (3.0, 5.06, 10.7, 20.0)


def _interp_rate(rmse_curve, rate_curve, target):
    """Rate where a curve (RMSE falling as rate grows) reaches `target` (linear in between);
    None outside the curve."""
    r = np.asarray(rmse_curve, float)
    b = np.asarray(rate_curve, float)
    for i in range(1, len(r)):
        lo, hi = min(r[i - 1], r[i]), max(r[i - 1], r[i])
        if lo <= target <= hi and r[i - 1] != r[i]:
            f = (r[i - 1] - target) / (r[i - 1] - r[i])
            return float(b[i - 1] + f * (b[i] - b[i - 1]))
    return None


def _rmse(a, b) -> float:
    return float(np.sqrt(np.mean((np.asarray(a, float) - np.asarray(b, float)) ** 2)))


def evaluator(model, img, steps, seeds):
    """Per level (top-down curve order): mean rate (bits/dim), mean and s.d. of RMSE over draws."""
    bits, rm = [], []
    for s in range(seeds):
        tr = rd_curve.rd_terms(model, img[None], steps, seed=s)
        bits.append(tr.cumulative_bits()[0].numpy() / img.size)
        rm.append((tr.sq.flip(1)[0] / img.size).sqrt().numpy())
    bits, rm = np.array(bits), np.array(rm)
    return bits.mean(0), rm.mean(0), rm.std(0, ddof=1) if seeds > 1 else np.zeros(rm.shape[1])


def code_image(model, fp, img, steps, name, params=None):
    rec = ImageRecord(pixels=np.ascontiguousarray(img.transpose(1, 2, 0)), name=name, mode="L")
    t0 = time.perf_counter()
    with torch.no_grad():
        data, rep = lossy.encode([rec], model, fp, steps=steps, params=params)
    enc_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    with torch.no_grad():
        pts = lossy.progressive(data, model, fp)[0]
    dec_s = time.perf_counter() - t0
    return data, rep[0], pts, enc_s, dec_s


def image_rows(model, fp, img, k, steps, seeds):
    D = img.size
    data, rep, pts, enc_s, dec_s = code_image(model, fp, img, steps, f"test{k}.png")
    payload_start = _payload_start(data)              # container fields + header before the payload
    header_bytes = len(data) - (rep["frames"][-1]["end_byte"] + rep["offset"])
    K = model.schedule.chain(steps).numel()
    rate, rm, rm_sd = evaluator(model, img, steps, seeds)
    rows, cum_kl, cum_lr = [], 0.0, 0.0
    for f, p in zip(rep["frames"], pts):
        assert p["level"] == f["level"]
        cum_kl += f["kl_bits"]
        cum_lr += f["log_ratio_bits"]
        i = K - 1 - f["level"]                        # curve index of this level
        dec_rmse = _rmse(p["pixels"], img)
        need = _interp_rate(rm, rate, dec_rmse)
        payload_bpd = 8 * (p["end"] - payload_start) / D
        rows.append({
            "image": k, "level": f["level"], "steps_in_frame": len(f["levels"]),
            "codec_bpd": payload_bpd, "codec_bpd_with_header": 8 * p["end"] / D,
            "eval_bpd": float(rate[i]), "ratio_same_level": payload_bpd / float(rate[i]),
            "codec_rmse": dec_rmse, "eval_rmse": float(rm[i]), "eval_rmse_sd": float(rm_sd[i]),
            "eval_bpd_at_codec_rmse": need, "ratio_equal_rmse": None if not need else payload_bpd / need,
            "chain_kl_bpd": cum_kl / D, "log_ratio_bpd": cum_lr / D,
            "encoder_reported_rmse": f["rmse"]})
    summary = {"image": k, "dims": D, "file_bytes": len(data), "header_bytes": header_bytes,
               "payload_bits": 8 * (rep["frames"][-1]["end_byte"] + rep["offset"]),
               "frames": len(rep["frames"]), "coded_steps": len(rep["steps"]), "chain_levels": K,
               "network_calls_encode": rep["network_calls"], "encode_s": enc_s, "decode_s": dec_s,
               "candidates": int(sum(s["n_candidates"] for s in rep["steps"])),
               "side_bits": float(sum(s["side_bits"] for s in rep["steps"])),
               "index_bits": float(sum(s["index_bits"] for s in rep["steps"])),
               "chain_kl_bits": float(sum(s["kl_bits"] for s in rep["steps"])),
               "log_ratio_bits": float(sum(s["log_ratio_bits"] for s in rep["steps"])),
               "eval_final_bpd": float(rate[-1]), "eval_curve_bpd": rate.tolist(), "eval_curve_rmse": rm.tolist(),
               "eval_curve_rmse_sd": rm_sd.tolist()}
    return rows, summary


def _payload_start(data: bytes) -> int:
    from ddpm_codec.format import container, varint
    end = container.header_end(data)
    return end + len(varint.encode(len(container.parse(data).payload)))


def sweep(model, fp, img, steps, settings):
    out = []
    for B, m in settings:
        data, rep, pts, enc_s, dec_s = code_image(model, fp, img, steps, "sweep.png",
                                                  {"bits_per_chunk": B, "margin_bits": m})
        st = rep["steps"]
        out.append({"bits_per_chunk": B, "margin_bits": m, "encode_s": enc_s, "decode_s": dec_s,
                    "candidates": int(sum(s["n_candidates"] for s in st)),
                    "rcc_search_s": float(sum(s["seconds"] for s in st)),
                    "payload_bpd": 8 * (rep["frames"][-1]["end_byte"] + rep["offset"]) / img.size,
                    "chain_kl_bpd": float(sum(s["kl_bits"] for s in st)) / img.size,
                    "log_ratio_bpd": float(sum(s["log_ratio_bits"] for s in st)) / img.size,
                    "frames": len(rep["frames"]), "coded_steps": len(st)})
    return out


def classical_best(path=RESULTS / "rd_classical.json"):
    """Best classical mosaic codec (bits/dim) at each RMSE target, from the classical bench."""
    if not path.exists():
        return {}
    rows = json.loads(path.read_text())["rows"]
    out = {}
    for t in RMSE_TARGETS:
        best = None
        for codec in {r["codec"] for r in rows}:
            pts = sorted((r for r in rows if r["codec"] == codec and r["layout"] == "mosaic"), key=lambda r: r["bpd"])
            b = _interp_rate([r["rmse"] for r in pts], [r["bpd"] for r in pts], t)
            if b is not None and (best is None or b < best[1]):
                best = (codec, b)
        if best:
            out[str(t)] = {"codec": best[0], "bpd": best[1]}
    return out


def codec_at_targets(rows, n):
    """Mean over images of the codec's payload bits/dim at each RMSE target (interpolated
    between its truncation points; images whose points do not bracket the target are skipped)."""
    out = {}
    for t in RMSE_TARGETS:
        vals = []
        for k in range(n):
            r = [x for x in rows if x["image"] == k]
            b = _interp_rate([x["codec_rmse"] for x in r], [x["codec_bpd"] for x in r], t)
            if b is not None:
                vals.append(b)
        out[str(t)] = {"bpd": float(np.mean(vals)) if vals else None, "images": len(vals)}
    return out


def markdown(rec) -> str:
    L = [f"## Progressive lossy codec vs evaluator: {rec['n_images']} Fashion-MNIST test images, "
         f"T_eval = {rec['steps']}, model {rec['model']}", "",
         f"RCC {rec['rcc']}, min_step_bits {rec['min_step_bits']}, frame_bits {rec['frame_bits']}; "
         f"D = {rec['dims']} per image; bits/dim are payload bits unless 'with header'. "
         f"threads {rec['threads']}", "",
         "| img | level | codec bpd | with header | eval bpd (same level) | ratio | codec RMSE | eval RMSE "
         "(+-sd) | eval bpd at codec RMSE | ratio | chain KL bpd | log q/p bpd |",
         "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rec["points"]:
        need = "-" if r["eval_bpd_at_codec_rmse"] is None else f"{r['eval_bpd_at_codec_rmse']:.3f}"
        ratio = "-" if r["ratio_equal_rmse"] is None else f"{r['ratio_equal_rmse']:.2f}"
        L.append(f"| {r['image']} | {r['level']} | {r['codec_bpd']:.3f} | {r['codec_bpd_with_header']:.3f} |"
                 f" {r['eval_bpd']:.3f} | {r['ratio_same_level']:.2f} | {r['codec_rmse']:.2f} |"
                 f" {r['eval_rmse']:.2f} +- {r['eval_rmse_sd']:.2f} | {need} | {ratio} |"
                 f" {r['chain_kl_bpd']:.3f} | {r['log_ratio_bpd']:.3f} |")
    L += ["", "| img | file bytes | header bytes | header bits/dim | payload bits/dim | eval rate (L_T + KLs) |"
          " frames | coded steps / levels | encode s | decode s | candidates | network calls (enc) |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in rec["images"]:
        L.append(f"| {s['image']} | {s['file_bytes']} | {s['header_bytes']} | {8 * s['header_bytes'] / s['dims']:.3f} |"
                 f" {s['payload_bits'] / s['dims']:.3f} | {s['eval_final_bpd']:.3f} | {s['frames']} |"
                 f" {s['coded_steps']} / {s['chain_levels']} | {s['encode_s']:.1f} | {s['decode_s']:.1f} |"
                 f" 2^{np.log2(s['candidates']):.1f} | {s['network_calls_encode']} |")
    a = rec["agreement"]
    L += ["", f"Mean ratio codec/evaluator at the same level, eval rate >= 0.1 bpd: {a['same_level_mean']:.3f} "
          f"(range {a['same_level_min']:.2f}-{a['same_level_max']:.2f}); at equal RMSE (3-20): "
          f"{a['equal_rmse_mean']:.3f}; decoded minus evaluator RMSE at the same level, in evaluator s.d.: "
          f"mean {a['rmse_z_mean']:+.2f}", "",
          "| bits_per_chunk | margin | candidates | encode s | RCC search s | decode s | payload bpd | chain KL bpd |"
          " log q/p bpd | coded steps |", "|---|---|---|---|---|---|---|---|---|---|"]
    for s in rec["sweep"]:
        L.append(f"| {s['bits_per_chunk']:g} | {s['margin_bits']:g} | 2^{np.log2(s['candidates']):.1f} |"
                 f" {s['encode_s']:.1f} | {s['rcc_search_s']:.1f} | {s['decode_s']:.1f} | {s['payload_bpd']:.3f} |"
                 f" {s['chain_kl_bpd']:.3f} | {s['log_ratio_bpd']:.3f} | {s['coded_steps']} |")
    L += ["", "| RMSE | codec payload bpd (these images) | best classical mosaic, test split | same images: "
          "best of WebP/JPEG mosaic |", "|---|---|---|---|"]
    def fmt(v):
        if not v or v.get("bpd") is None:
            return "-"
        return f"{v['bpd']:.3f}" + (f" ({v['codec']})" if "codec" in v else "")
    for t in RMSE_TARGETS:
        c = rec["at_rmse"][str(t)]
        L.append(f"| {t:g} | {fmt(c)} ({c['images']} img) | {fmt(rec['classical_split'].get(str(t)))} |"
                 f" {fmt(rec['classical_same'].get(str(t)))} |")
    return "\n".join(L)


def classical_same(images):
    try:
        rows, skipped = rd_curve.classical_points(images, {"webp": (5, 10, 25, 50, 75, 90, 100),
                                                           "jpeg": (5, 10, 20, 30, 50, 75, 90, 95)}, ("mosaic",))
    except Exception as e:  # noqa: BLE001 -- an optional overlay
        return {}, [], [f"classical: {type(e).__name__}: {e}"]
    out = {}
    for t in RMSE_TARGETS:
        best = None
        for codec in {r["codec"] for r in rows}:
            pts = sorted((r for r in rows if r["codec"] == codec), key=lambda r: r["bpd"])
            b = _interp_rate([r["rmse"] for r in pts], [r["bpd"] for r in pts], t)
            if b is not None and (best is None or b < best[1]):
                best = (codec, b)
        if best:
            out[str(t)] = {"codec": best[0], "bpd": best[1]}
    return out, rows, skipped


IMAGE_COLOURS = ("black", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan", "tab:gray")


def plot(rec, path, classical=RESULTS / "rd_classical.json"):
    """Per image: the evaluator's curve (ideal KL rate) and the codec's truncation points
    (payload), with the classical mosaic codecs on the whole test split (headers amortized)."""
    from ddpm_codec.eval import plots
    fig, (ax,) = plots.new_figure(1, 6.5, 4.8)
    for s in rec["images"]:
        k = s["image"]
        colour = IMAGE_COLOURS[k % len(IMAGE_COLOURS)]
        ax.plot(s["eval_curve_bpd"], s["eval_curve_rmse"], "-", lw=1, color=colour,
                label=f"image {k}: evaluator (ideal KL rate)")
        pts = [r for r in rec["points"] if r["image"] == k]
        ax.plot([r["codec_bpd"] for r in pts], [r["codec_rmse"] for r in pts], "o--", ms=3, lw=0.8,
                color=colour, label=f"image {k}: codec, payload")
    if Path(classical).exists():
        rows = [dict(r, layout="mosaic, test split") for r in json.loads(Path(classical).read_text())["rows"]
                if r["layout"] == "mosaic"]
        plots.plot_points(ax, rows)
    ax.set_xlim(0, 4)
    ax.set_ylim(0, 40)
    ax.set_xlabel("rate (bits/dim, D = 784 per image)")
    ax.set_ylabel("RMSE [0, 255]")
    ax.set_title(f"lossy codec vs evaluator, T_eval = {rec['steps']}, {rec['model']} model", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6)
    plots.save(fig, path)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=3)
    ap.add_argument("--first", type=int, default=0)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--seeds", type=int, default=6, help="evaluator draws per image")
    ap.add_argument("--model", default="default")
    ap.add_argument("--quick", action="store_true", help="1 image, 25 steps, 2 sweep settings")
    ap.add_argument("--no-sweep", action="store_true")
    ap.add_argument("--out", default=str(RESULTS / "lossy.json"))
    ap.add_argument("--plot-only", action="store_true", help="redraw the figure from --out's JSON")
    args = ap.parse_args(argv)
    out = Path(args.out)
    if args.plot_only:
        plot(json.loads(out.read_text()), out.with_name(out.stem + "_rd.png"))
        return
    if args.quick:
        args.n, args.steps, args.seeds = 1, 25, 3
    torch.set_num_threads(1)
    model, meta = load_model(args.model)
    fp = meta["fingerprint"]
    images = load_dataset("fashion_mnist", "test", n=args.first + args.n)[args.first:]
    points, summaries = [], []
    for k, img in enumerate(images):
        rows, s = image_rows(model, fp, img, k, args.steps, args.seeds)
        points += rows
        summaries.append(s)
        print(f"image {k}: {s['payload_bits'] / s['dims']:.3f} bits/dim payload "
              f"(+{8 * s['header_bytes'] / s['dims']:.3f}"
              f" header) vs evaluator {s['eval_final_bpd']:.3f}; encode {s['encode_s']:.1f} s, decode "
              f"{s['decode_s']:.1f} s", file=sys.stderr, flush=True)
    settings = [] if args.no_sweep else (SWEEP[1:3] if args.quick else SWEEP)
    sw = sweep(model, fp, images[0], args.steps, settings)
    same = [r["ratio_same_level"] for r in points if r["eval_bpd"] >= 0.1]
    eq = [r["ratio_equal_rmse"] for r in points if r["ratio_equal_rmse"] and 3.0 <= r["codec_rmse"] <= 20.0]
    z = [(r["codec_rmse"] - r["eval_rmse"]) / r["eval_rmse_sd"] for r in points if r["eval_rmse_sd"] > 0]
    cs, crows, skipped = classical_same(np.asarray(images))
    rec = {
        "name": "ddpm-codec lossy (real RCC stream)",
        "description": "single-image streams; rate = payload bits up to each frame end / (C*H*W); "
                       "header reported apart and included; evaluator = rd_curve topdown, mean over draws",
        "model": args.model, "model_fingerprint": fp, "steps": args.steps, "n_images": len(images),
        "first_index": args.first, "dims": int(images[0].size), "seeds": args.seeds,
        "rcc": lossy.RCC_PARAMS, "min_step_bits": lossy.MIN_STEP_BITS, "frame_bits": lossy.FRAME_BITS,
        "threads": torch.get_num_threads(), "omp_threads": os.environ.get("OMP_NUM_THREADS"),
        "machine": platform.platform(), "load_average": os.getloadavg(),
        "points": points, "images": summaries, "sweep": sw,
        "agreement": {"same_level_mean": float(np.mean(same)), "same_level_min": float(np.min(same)),
                      "same_level_max": float(np.max(same)), "equal_rmse_mean": float(np.mean(eq)) if eq else None,
                      "rmse_z_mean": float(np.mean(z)) if z else 0.0},
        "at_rmse": codec_at_targets(points, len(images)), "classical_split": classical_best(),
        "classical_same": cs, "classical_skipped": skipped,
        "compressai": [{"name": f"ddpm-codec lossy, image {s['image']}",
                        "results": {"bpp": [r["codec_bpd"] for r in points if r["image"] == s["image"]],
                                    "bpp_with_header": [r["codec_bpd_with_header"] for r in points
                                                        if r["image"] == s["image"]],
                                    "rmse": [r["codec_rmse"] for r in points if r["image"] == s["image"]],
                                    "psnr": [20 * np.log10(255 / r["codec_rmse"]) if r["codec_rmse"] > 0 else None
                                             for r in points if r["image"] == s["image"]],
                                    "encoding_time": s["encode_s"], "decoding_time": s["decode_s"]}}
                       for s in summaries],
    }
    md = markdown(rec)
    print(md)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rec, indent=1) + "\n")
    out.with_suffix(".md").write_text(md + "\n")
    try:
        plot(rec, out.with_name(out.stem + "_rd.png"))
    except Exception as e:  # noqa: BLE001 -- the figure is optional
        print(f"(no figure: {type(e).__name__}: {e})", file=sys.stderr)


if __name__ == "__main__":
    main()
