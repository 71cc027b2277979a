"""`facehil bench accuracy|latency|acquisition`: how accurate and how fast a face matcher is, how often it finds the face."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

app = typer.Typer(no_args_is_help=True)
console = Console()


def _pct(x) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x * 100:.2f}%"


def _ci(c) -> str:
    return "-" if not c else f"[{_pct(c[0])}, {_pct(c[1])}]"


def _json_default(o):
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "item"):
        return o.item()
    raise TypeError(type(o).__name__)


def _clean(o):
    """JSON has no inf/nan: write them as null."""
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if isinstance(o, dict):
        return {k: _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    return o


@app.command("accuracy")
def accuracy(
    dataset: Path = typer.Option(..., "--dataset", help="Face dataset folder (LFW layout, ORL, or identity folders)."),
    pairs: Optional[Path] = typer.Option(None, "--pairs", help="LFW View-2 pairs file (default: DATASET/pairs.txt if present)."),
    backend: str = typer.Option("dlib", "--backend", help="dlib or insightface."),
    model_pack: Optional[Path] = typer.Option(None, "--model-pack", help="insightface model pack folder."),
    condition: List[str] = typer.Option(["nominal"], "--condition", help="Capture condition applied to probes (repeatable)."),
    workers: int = typer.Option(1, "--workers", min=1, help="Embedding processes."),
    json_out: Path = typer.Option(..., "--json", help="Write the figures here (JSON)."),
    html_out: Optional[Path] = typer.Option(None, "--html", help="Write an HTML page with DET curves and histograms."),
    limit: Optional[int] = typer.Option(None, "--limit", min=2, help="Use only the first N pairs (half genuine, half impostor)."),
    seed: int = typer.Option(0, "--seed", help="Seed for generated pairs, conditions and bootstrap."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Embedding cache (default ~/.cache/facehil or FACEHIL_CACHE)."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Embed everything afresh; write no cache."),
    policy: str = typer.Option("largest_central", "--policy", help="Face choice when several: largest_central, largest, central, single."),
    bootstrap: int = typer.Option(1000, "--bootstrap", min=0, help="Bootstrap replicates for the 95% CIs (0: none)."),
    calibrate_out: Optional[Path] = typer.Option(None, "--calibrate-out", help="Also store the threshold at --target-fmr (JSON)."),
    target_fmr: float = typer.Option(1e-3, "--target-fmr", help="FMR for --calibrate-out."),
) -> None:
    """Accuracy on a dataset's pairs: FTA, EER, FNMR at FMR 1e-2 / 1e-3 with 95% CIs."""
    from harness.biometrics import calibration, report
    from harness.biometrics.backend import BackendError
    from harness.biometrics.datasets import PairsError, pairs_for
    from harness.biometrics.evaluate import EvalConfig, evaluate
    from harness.biometrics.metrics import fnmr_at_fmr

    if not dataset.is_dir():
        console.print(f"[red]dataset folder does not exist:[/red] {dataset}")
        raise typer.Exit(2)
    try:
        pair_list, source = pairs_for(dataset, pairs, seed=seed)
    except PairsError as exc:
        console.print(f"[red]bad pairs:[/red] {exc}", soft_wrap=True)  # paths unbroken, one per line
        raise typer.Exit(2)
    if limit:
        gen = [p for p in pair_list if p.genuine][: limit // 2]
        imp = [p for p in pair_list if not p.genuine][: limit - limit // 2]
        pair_list = gen + imp
    cfg = EvalConfig(backend=backend, model_pack=model_pack, conditions=list(condition), seed=seed, workers=workers,
                     cache_dir=cache_dir, use_cache=not no_cache, policy=policy, n_boot=bootstrap)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=console, transient=True) as progress:
        tasks: dict[str, int] = {}

        def on_progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = progress.add_task(stage, total=total)
            progress.update(tasks[stage], completed=done)

        try:
            result = evaluate(pair_list, cfg, on_progress, pairs_source=source)
        except (BackendError, ValueError) as exc:
            console.print(f"[red]evaluation failed:[/red] {exc}")
            raise typer.Exit(2)
    result["dataset"] = str(dataset.resolve())
    scores = result.pop("_scores")  # raw scores: for calibration, never written out
    table = Table("condition", "pairs", "FTA", "EER", "EER 95% CI", "FNMR@FMR=1e-2", "FNMR@FMR=1e-3", "95% CI",
                  "threshold@1e-3", title=f"{backend} on {dataset.name} ({source})")
    for name, r in result["conditions"].items():
        ci = r.get("ci95", {})
        table.add_row(name, str(r["pairs"]), _pct(r["fta_rate"]), _pct(r["eer"]), _ci(ci.get("eer")),
                      _pct(r["fnmr_at_fmr"]["0.01"]), _pct(r["fnmr_at_fmr"]["0.001"]),
                      _ci(ci.get("fnmr_at_fmr", {}).get("0.001")), f"{r['threshold_at_fmr']['0.001']:.4f}")
    console.print(table)
    run = result["run"]
    console.print(f"{run['images']} embeddings ({run['cache_hits']} cached) in {run['elapsed_s']:.1f} s "
                  f"({run['cpu_s']:.0f} CPU-s), "
                  f"{run['workers']} worker(s); peak RSS main {run['peak_rss_mb']['main']:.0f} MB, "
                  f"largest worker {run['peak_rss_mb']['largest_worker']:.0f} MB")
    json_out.parent.mkdir(parents=True, exist_ok=True)
    json_out.write_text(json.dumps(_clean(result), indent=1, default=_json_default) + "\n")
    console.print(f"JSON: {json_out}")
    if html_out:
        report.write(result, html_out)
        console.print(f"HTML: {html_out}")
    if calibrate_out:
        first = result["conditions"][cfg.conditions[0]]
        op = fnmr_at_fmr(scores[cfg.conditions[0]], target_fmr)
        cal = calibration.Calibration(backend=backend, model_version=result["model_version"], target_fmr=target_fmr,
                                      threshold=op.threshold, fmr_achieved=op.fmr, fnmr=op.fnmr,
                                      impostors=first["impostor_scored"], genuine=first["genuine_scored"],
                                      dataset=f"{dataset.resolve()} ({source})", dataset_hash=result["dataset_hash"])
        cal.save(calibrate_out)
        console.print(f"calibration: threshold {op.threshold:.4f} at FMR {op.fmr:.5f} (target {target_fmr}) "
                      f"-> {calibrate_out}")


@app.command("latency")
def latency(
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the timings here (JSON)."),
    backend: str = typer.Option("dlib", "--backend", help="dlib or insightface."),
    model_pack: Optional[Path] = typer.Option(None, "--model-pack", help="insightface model pack folder."),
    dataset: Optional[Path] = typer.Option(None, "--dataset", help="Where the test portrait comes from (else FACEHIL_FACES, else samples)."),
    iterations: int = typer.Option(30, "--iterations", min=3, help="Timed runs per stage."),
    face_scale: float = typer.Option(1.6, "--face-scale", help="Portrait scale in the 640x480 frame (1.0: a 250 px LFW crop, ~110 px face)."),
    baseline: bool = typer.Option(True, "--baseline/--no-baseline", help="Also time the face_recognition pipeline."),
) -> None:
    """Per-stage timings on one thread (p50/p95/p99) and frame-to-decision end to end."""
    import cv2

    from harness.biometrics import latency as lat
    from harness.biometrics import scene
    from harness.biometrics.backend import BackendError
    from harness.biometrics.matcher import load_backend
    from harness.facedata import FaceDataError, list_identities, resolve_faces

    cv2.setNumThreads(1)  # one thread, as FRTE-style timing asks; this process only
    try:
        source = resolve_faces(dataset)
        idents = list_identities(source)
        ident = next((i for i in idents if len(i.images) >= 2), idents[0])
        card_img = cv2.imread(str(ident.images[0]))
        live_img = cv2.imread(str(ident.images[-1]))
        opts = {"threads": 1} if backend == "insightface" else {}
        be = load_backend(backend, model_pack, **opts)
    except (FaceDataError, BackendError) as exc:
        console.print(f"[red]latency bench cannot start:[/red] {exc}")
        raise typer.Exit(2)
    if card_img is None or live_img is None:
        console.print(f"[red]cannot read the test portraits of {ident.name}[/red]")
        raise typer.Exit(2)
    frame = scene.live_frame(live_img, face_scale=face_scale)
    with console.status(f"timing {backend}: {iterations} runs per stage"):
        try:
            out = lat.measure(be, scene.card_photo(card_img), frame, iterations=iterations, with_baseline=baseline)
        except RuntimeError as exc:
            console.print(f"[red]latency bench failed:[/red] {exc}")
            raise typer.Exit(1)
    out["identity_source"] = source.kind
    out["face_scale"] = face_scale
    out["engine"] = getattr(be, "engine", None)
    engine = f" ({out['engine']} embedding)" if out["engine"] else ""
    table = Table("stage", "p50 ms", "p95 ms", "p99 ms", title=f"{backend}{engine} latency, one thread, 640x480")
    for name, s in out["stages"].items():
        table.add_row(name, f"{s['p50_ms']:.1f}", f"{s['p95_ms']:.1f}", f"{s['p99_ms']:.1f}")
    if out.get("baseline"):
        for label, s in (("end_to_end, alternating with baseline", out["baseline"]["ours_interleaved"]),
                         ("baseline end_to_end (face_recognition)", out["baseline"]["end_to_end"])):
            table.add_row(label, f"{s['p50_ms']:.1f}", f"{s['p95_ms']:.1f}", f"{s['p99_ms']:.1f}")
    console.print(table)
    if out.get("baseline"):
        console.print(f"speed-up over face_recognition at p50: {out['baseline']['speedup_p50']:.2f}x")
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(_clean(out), indent=1, default=_json_default) + "\n")
        console.print(f"JSON: {json_out}")


@app.command("acquisition")
def acquisition(
    dataset: Path = typer.Option(..., "--dataset", help="Face dataset folder (LFW layout with pairs.txt, ORL, or identity folders)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the figures here (JSON)."),
    baseline: bool = typer.Option(True, "--baseline/--no-baseline", help="Also run face_recognition's detector."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Use only the first N pairs."),
) -> None:
    """Failure to acquire, ours against face_recognition, and the time of each detection pass."""
    import cv2

    from harness.biometrics import acquisition as acq
    from harness.biometrics.backend import BackendError
    from harness.biometrics.datasets import PairsError, pairs_for
    from harness.biometrics.matcher import load_backend

    cv2.setNumThreads(1)
    if not dataset.is_dir():
        console.print(f"[red]dataset folder does not exist:[/red] {dataset}")
        raise typer.Exit(2)
    try:
        pair_list, source = pairs_for(dataset)
        be = load_backend("dlib")
    except (PairsError, BackendError) as exc:
        console.print(f"[red]acquisition bench cannot start:[/red] {exc}", soft_wrap=True)
        raise typer.Exit(2)
    pair_list = pair_list[:limit] if limit else pair_list
    with console.status(f"detecting faces in the images of {len(pair_list)} pairs"):
        r = acq.compare(be, pair_list, dataset.name, with_baseline=baseline)
    table = Table("detector", "FTA pairs", "FTA images", "time s", title=f"acquisition on {dataset.name} ({source})")
    table.add_row("facehil (dlib)", f"{r.ours_fta_pairs}/{r.pairs} ({_pct(r.ours_fta_rate)})",
                  f"{r.ours_fta_images}/{r.images}", f"{sum(p['total_ms'] for p in r.passes.values()) / 1000:.1f}")
    if r.baseline_fta_pairs is not None:
        table.add_row("face_recognition (HOG, upsample 1)", f"{r.baseline_fta_pairs}/{r.pairs} "
                      f"({_pct(r.baseline_fta_rate)})", f"{r.baseline_fta_images}/{r.images}",
                      f"{r.baseline_ms / 1000:.1f}")
    console.print(table)
    passes = Table("pass", "runs", "found a face", "mean ms", "total s", title="detection passes (in order)")
    for name, p in r.passes.items():
        passes.add_row(name, str(p["runs"]), str(p["found"]), f"{p['mean_ms']:.1f}", f"{p['total_ms'] / 1000:.1f}")
    console.print(passes)
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(_clean(r.as_dict()), indent=1, default=_json_default) + "\n")
        console.print(f"JSON: {json_out}")
