"""Campaign figures (ISO/IEC 19795-2 scenario evaluation, ISO/IEC 30107-3 PAD test).

Transaction level: FRR, FAR (random and hard impostors apart, and together), FTA, under the
reader's own retry policy. Attempt level: FNMR and FMR from the reader's ``face`` events.
Attacks: APCER per species (worst first), BPCER, and each attack that got through.
Times: the reader's face screen to its decision, median / p90 / p95.

Every rate has an interval clustered by subject: the transactions of one card holder are
resampled together (bootstrap over subjects), because one person's attempts are correlated.
The reported bounds are the wider of that bootstrap and the exact binomial (Clopper-Pearson)
bounds, so a handful of subjects never gives a falsely narrow interval; with zero errors the
upper bound is the rule of 3 (harness.measure.rate_bounds). The design effect (bootstrap
variance over binomial variance) is reported beside each rate.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from harness.biometrics.metrics import ScoreSet, det_curve, equal_error_rate
from harness.campaign.limits import CampaignLimit, judge
from harness.measure import rate_bounds

N_BOOT = 2000
LEVEL = 0.95  # two-sided intervals shown in reports
IMPOSTOR_KINDS = ("impostor_random", "impostor_hard")
NO_SCORES = ("The reader reports no comparison scores: only its one operating point (the rates above) "
             "can be measured, not a DET curve.")


@dataclass(frozen=True)
class Rate:
    name: str
    errors: int
    trials: int
    subjects: int
    value: float
    ci: tuple[float, float]  # two-sided at LEVEL
    design_effect: float | None

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ci"] = list(self.ci)
        return d


Cluster = tuple[str, bool]  # (subject, error)


def _by_subject(obs: Iterable[Cluster]) -> tuple[np.ndarray, np.ndarray]:
    e: dict[str, int] = defaultdict(int)
    n: dict[str, int] = defaultdict(int)
    for subject, error in obs:
        n[subject] += 1
        e[subject] += int(bool(error))
    keys = sorted(n)
    return np.array([e[k] for k in keys], float), np.array([n[k] for k in keys], float)


def _boot(e: np.ndarray, n: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, e.size, size=(N_BOOT, e.size))
    tot = n[idx].sum(axis=1)
    return e[idx].sum(axis=1) / np.where(tot > 0, tot, 1)


def bounds(obs: Sequence[Cluster], confidence: float, seed: int = 0) -> tuple[float, float]:
    """One-sided (lower, upper) bounds at ``confidence``, clustered by subject."""
    e, n = _by_subject(obs)
    errors, trials = int(e.sum()), int(n.sum())
    lo, hi = rate_bounds(errors, trials, confidence)  # exact; rule of 3 at zero errors
    if errors == 0 or e.size < 2:
        return lo, hi
    reps = _boot(e, n, seed)
    return min(lo, float(np.quantile(reps, 1 - confidence))), max(hi, float(np.quantile(reps, confidence)))


def rate(name: str, obs: Sequence[Cluster], seed: int = 0) -> Rate:
    e, n = _by_subject(obs)
    errors, trials = int(e.sum()), int(n.sum())
    value = errors / trials if trials else math.nan
    lo, hi = bounds(obs, (1 + LEVEL) / 2, seed)
    deff = None
    if trials and 0 < errors < trials and e.size >= 2:
        var_boot = float(np.var(_boot(e, n, seed)))
        var_bin = value * (1 - value) / trials
        deff = round(var_boot / var_bin, 3) if var_bin > 0 else None
    return Rate(name, errors, trials, int(e.size), value, (lo, hi), deff)


# -- which transactions count for which figure ---------------------------------------------------

def _decided(rows: Iterable[dict]) -> list[dict]:
    return [r for r in rows if r["decision"] != "error"]


def observations(rows: Sequence[dict]) -> dict[str, list[Cluster]]:
    """figure name -> (subject, error) per transaction or attempt. The subject is the card holder
    (the enrolled person), the unit that correlates a card's transactions."""
    ok = _decided(rows)
    gen = [r for r in ok if r["kind"] == "genuine"]
    imp = [r for r in ok if r["kind"] in IMPOSTOR_KINDS]
    out: dict[str, list[Cluster]] = {
        "frr": [(r["holder"], r["decision"] != "accept") for r in gen],
        "far": [(r["holder"], r["decision"] == "accept") for r in imp],
        "far_random": [(r["holder"], r["decision"] == "accept") for r in imp if r["kind"] == "impostor_random"],
        "far_hard": [(r["holder"], r["decision"] == "accept") for r in imp if r["kind"] == "impostor_hard"],
        "fta": [(r["holder"], r["decision"] == "fta") for r in gen + imp],
        "fnmr": [(r["holder"], a["outcome"] == "no_match") for r in gen for a in r["attempt_events"] or ()
                 if a["outcome"] in ("match", "no_match")],
        "fmr": [(r["holder"], a["outcome"] == "match") for r in imp for a in r["attempt_events"] or ()
                if a["outcome"] in ("match", "no_match")],
        "bpcer": [(r["holder"], bool(r["attack_detected"])) for r in gen],
    }
    for species in sorted({r["species"] for r in ok if r["kind"] == "attack"}):
        out[f"apcer_{species}"] = [(r["holder"], r["decision"] == "accept") for r in ok
                                   if r["kind"] == "attack" and r["species"] == species]
    return out


def _times(values: list[float], subjects: list[str], seed: int = 0) -> dict[str, Any]:
    if not values:
        return {"n": 0}
    arr = np.array(values, float)
    out: dict[str, Any] = {"n": int(arr.size), "median_ms": float(np.median(arr)),
                           "p90_ms": float(np.quantile(arr, 0.9)), "p95_ms": float(np.quantile(arr, 0.95)),
                           "values_ms": [round(v, 1) for v in values]}
    # median's interval, clustered by subject
    groups: dict[str, list[float]] = defaultdict(list)
    for v, s in zip(values, subjects):
        groups[s].append(v)
    keys = sorted(groups)
    if len(keys) >= 2:
        rng = np.random.default_rng(seed)
        meds = [float(np.median(np.concatenate([groups[keys[i]] for i in rng.integers(0, len(keys), len(keys))])))
                for _ in range(500)]
        out["median_ci_ms"] = [float(np.quantile(meds, (1 - LEVEL) / 2)), float(np.quantile(meds, (1 + LEVEL) / 2))]
    return out


def _det(rows: Sequence[dict]) -> dict[str, Any]:
    ok = _decided(rows)
    gen = [a["score"] for r in ok if r["kind"] == "genuine" for a in r["attempt_events"] or ()
           if a.get("score") is not None and a["outcome"] in ("match", "no_match")]
    imp = [a["score"] for r in ok if r["kind"] in IMPOSTOR_KINDS for a in r["attempt_events"] or ()
           if a.get("score") is not None and a["outcome"] in ("match", "no_match")]
    if not gen or not imp:
        return {"available": False, "note": NO_SCORES, "genuine_scores": len(gen), "impostor_scores": len(imp)}
    scores = ScoreSet(np.array(gen, float), np.array(imp, float))
    thresholds, fmr, fnmr = det_curve(scores)
    eer = equal_error_rate(scores)
    return {"available": True, "genuine_scores": len(gen), "impostor_scores": len(imp), "eer": eer.eer,
            "eer_threshold": eer.threshold, "fmr": fmr.tolist(), "fnmr": fnmr.tolist(),
            "threshold": [float(t) if math.isfinite(t) else None for t in thresholds]}


def summarize(rows: Sequence[dict], limits: dict[str, CampaignLimit] | None = None, seed: int = 0) -> dict[str, Any]:
    """Every figure of a campaign as JSON-ready values (rows: campaign transaction dicts)."""
    obs = observations(rows)
    rates = {name: rate(name, o, seed).as_dict() for name, o in obs.items()}
    apcer = sorted((r for n, r in rates.items() if n.startswith("apcer_")), key=lambda r: -(r["value"]
                                                                                        if r["trials"] else -1))
    ok = _decided(rows)
    gen = [r for r in ok if r["kind"] == "genuine" and r["transaction_ms"] is not None]
    per_condition = {}
    for cond in sorted({r["condition"] for r in ok if r["kind"] == "genuine"}):
        per_condition[cond] = rate(f"frr[{cond}]", [(r["holder"], r["decision"] != "accept") for r in ok
                                                    if r["kind"] == "genuine" and r["condition"] == cond], seed).as_dict()
    counts: dict[str, int] = defaultdict(int)
    for r in rows:
        counts[r["kind"]] += 1
    out = {
        "transactions": len(rows), "errors": sum(1 for r in rows if r["decision"] == "error"),
        "error_reasons": sorted({(r.get("error") or r.get("reason") or "")[:200] for r in rows
                                 if r["decision"] == "error"}),
        "counts": dict(counts), "rates": rates, "apcer_by_species": apcer,
        "per_condition": per_condition,
        "attacks_through": [{"seq": r["seq"], "card": r["card"], "species": r["species"], "score": r["score"]}
                            for r in ok if r["kind"] == "attack" and r["decision"] == "accept"],
        "times": {"genuine": _times([r["transaction_ms"] for r in gen], [r["holder"] for r in gen], seed),
                  "all": _times([r["transaction_ms"] for r in ok if r["transaction_ms"] is not None],
                                [r["holder"] for r in ok if r["transaction_ms"] is not None], seed)},
        "det": _det(rows),
        "verdicts": verdicts(obs, limits or {}, seed),
    }
    return out


def verdicts(obs: dict[str, list[Cluster]], limits: dict[str, CampaignLimit], seed: int = 0) -> list[dict[str, Any]]:
    out = []
    for name, limit in sorted(limits.items()):
        names = [n for n in obs if n.startswith("apcer_")] if name == "apcer" else [name]
        results = []
        for n in names:
            lo, hi = bounds(obs.get(n, []), limit.confidence, seed)
            results.append((n, lo, hi, judge(lo, hi, limit.max)))
        if not results:  # nothing measured for this figure: nothing supports the claim
            results = [(name, 0.0, 1.0, "INCONCLUSIVE")]
        worst = next((r for v in ("FAIL", "INCONCLUSIVE", "PASS") for r in results if r[3] == v))
        out.append({"name": name, "limit": limit.max, "confidence": limit.confidence, "figure": worst[0],
                    "bound_low": worst[1], "bound_high": worst[2], "verdict": worst[3]})
    return out


def summarize_run(store, run_id: int) -> dict[str, Any]:
    from harness.campaign.records import load_campaign

    run, camp, rows = load_campaign(store, run_id)
    limits = {k: CampaignLimit(**v) for k, v in (camp.limits or {}).items()}
    out = summarize(rows, limits, seed=camp.seed)
    missing = (camp.plan or {}).get("missing_shards") or []
    if missing:  # a merged fleet campaign without some rigs' cards cannot support a claim over all of them
        for v in out["verdicts"]:
            if v["verdict"] == "PASS":
                v["verdict"] = "INCONCLUSIVE"
            v["note"] = f"{len(missing)} shard(s) missing"
    out.update(missing_shards=missing, run_id=run_id, seed=camp.seed, plan=camp.plan, scheduled=len(camp.schedule),
               stopped_by=camp.stopped_by, resumed=camp.resumed, firmware=run.reader_firmware,
               station=run.station_name, status=run.status,
               started_at=run.started_at.isoformat() if run.started_at else None,
               ended_at=run.ended_at.isoformat() if run.ended_at else None)
    return out

