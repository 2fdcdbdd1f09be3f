"""The evaluation's human-readable outputs: the Markdown tables and the figures.

``markdown(results)`` turns ``EvaluationResult.results`` into ``results.md``; ``figures(result,
pack, images)`` draws every chart and example grid as ``{relative file name: PIL image}``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from PIL import Image

from ..engine.tuned import synthesize
from .codes import manipulation_codes, midpoints
from .plots import bar_chart, labelled_grid, line_chart, side_by_side
from .refinement import pti_markdown
from .suite import EvaluationResult

TABLE1_METRICS = (  # key, column title, better
    ("mse", "MSE", "↓"), ("psnr", "PSNR (dB)", "↑"), ("ssim", "SSIM", "↑"), ("lpips", "LPIPS", "↓"),
    ("identity", "ID", "↑"))
OTHER_MOVERS = 3  # other attributes listed per boundary in the Markdown table
DISTANCE_TITLES = (("fid", "FID"), ("kid", "KID ×1e3"), ("swd", "SWD ×1e3"))  # set distances, in table order
DISTANCES = tuple(key for key, _ in DISTANCE_TITLES)


def _num(value: Any, digits: int = 4) -> str:
    """A table cell: ``digits`` significant digits, "–" for a missing or non-finite value."""
    if value is None or not math.isfinite(float(value)):
        return "–"
    v = float(value)
    if v == 0:
        return "0"
    if abs(v) >= 10 ** digits:
        return f"{v:.0f}"
    if abs(v) < 1e-3:
        return f"{v:.{digits - 1}e}"
    return f"{v:.{digits}g}"


def _metric(row: dict, name: str) -> float | None:
    return ((row.get("metrics") or {}).get(name) or {}).get("mean")


def _dist(entry: dict | None, name: str) -> float | None:
    return (entry or {}).get(name)


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    return lines + [""]


def _skipped(part: dict) -> str | None:
    return part.get("skipped") if isinstance(part, dict) else None


def markdown(results: dict[str, Any]) -> str:
    """``results.md``: every table of the run, with the settings and notes needed to read it."""
    n = results["images"]["count"]
    res = results["images"]["resolution"]
    pack = (results.get("model") or {}).get("name", "?")
    env = results.get("environment") or {}
    lines = [f"# Evaluation of model pack `{pack}`", "",
             f"{n} real images at {res}×{res} px from `{results.get('source', '?')}`; "
             f"device {env.get('device', '?')} ({env.get('device_name', '?')}, {env.get('threads', '?')} threads).", ""]
    if results.get("command"):
        lines += ["Command:", "", "```", results["command"], "```", ""]
    lines += _table1_md(results) + _table2_md(results) + _ablation_md(results) + _edits_md(results) + _pr_md(results)
    lines += pti_markdown(results.get("pti") or {})
    notes = results.get("notes") or []
    if notes:
        lines += ["## Notes", ""] + [f"- {note}" for note in notes] + [""]
    return "\n".join(lines)


def _table1_md(results: dict) -> list[str]:
    t1 = results["table1"]
    rows = t1["rows"]
    n = t1["count"]
    present = [(k, title, better) for k, title, better in TABLE1_METRICS if any(_metric(r, k) is not None for r in rows)]
    distances = [(k, f"FID ↓ (n = {n})" if k == "fid" else f"{title} ↓") for k, title in DISTANCE_TITLES
                 if any((r.get("distribution") or {}).get(k) is not None for r in rows)]
    headers = ["Method", "Time / image (s)"] + [f"{title} {better}" for _, title, better in present] + \
        [title for _, title in distances]
    body = []
    for r in rows:
        d = r.get("distribution") or {}
        body.append([r["label"], _num(r["seconds_per_image"], 3)] + [_num(_metric(r, k)) for k, _, _ in present] +
                    [_num(d.get(k)) for k, _ in distances])
    devices = sorted({f"{r['device']} (batch {r['batch_size']})" for r in rows})
    return ["## Table 1 — reconstruction by inversion method", ""] + _table(headers, body) + [
        f"Times per image on {', '.join(devices)}. FID/KID/SWD compare the {n} reconstructions with the same {n} "
        f"real images; FID from fewer than a few thousand images is biased upwards, so compare rows with each "
        f"other, not with published values (KID is unbiased, but noisy on small sets).", ""]


def _table2_md(results: dict) -> list[str]:
    t2 = results["table2"]
    interp, manip = t2["interpolation"], t2["manipulation"]
    lines = ["## Table 2 — interpolation and manipulation (FID / KID / SWD against the real images)", ""]
    keys = list(dict.fromkeys(list((interp.get("methods") or {})) + list((manip.get("methods") or {}))))
    labels = {r["key"]: r["label"] for r in results["table1"]["rows"]}
    if not keys:
        reasons = {_skipped(interp), _skipped(manip)} - {None}
        return lines + [f"Not run ({'; '.join(sorted(reasons)) or 'needs the MSE baseline or in-domain codes'}).", ""]
    headers = ["Method", f"Interpolation FID ↓ ({interp.get('pairs', '–')} pairs)", "Interpolation KID ×1e3 ↓",
               "Interpolation SWD ↓", f"Manipulation FID ↓ (±{manip.get('distance', '–')})",
               "Manipulation KID ×1e3 ↓", "Manipulation SWD ↓"]
    body = []
    for k in keys:
        i = (interp.get("methods") or {}).get(k)
        m = ((manip.get("methods") or {}).get(k) or {}).get("all")
        body.append([labels.get(k, k)] + [_num(_dist(part, what)) for part in (i, m) for what in DISTANCES])
    lines += _table(headers, body)
    for part, name in ((interp, "interpolation"), (manip, "manipulation")):
        if _skipped(part):
            lines += [f"The {name} column was not run: {_skipped(part)}.", ""]
    if manip.get("methods"):
        names = manip["boundaries"]
        headers = ["Boundary"] + [f"{labels.get(k, k)} {what.upper()}" for k in manip["methods"]
                                  for what in DISTANCES]
        body = [[b] + [_num(_dist(manip["methods"][k]["per_boundary"].get(b), what))
                       for k in manip["methods"] for what in DISTANCES] for b in names]
        lines += ["Manipulation per boundary (each 2·N edited images):", ""] + _table(headers, body)
    return lines


def _ablation_md(results: dict) -> list[str]:
    ab = results["ablation"]
    lines = ["## λ_dom ablation (Fig. 9) — reconstruction vs interpolation", ""]
    if _skipped(ab):
        return lines + [f"Not run: {_skipped(ab)}.", ""]
    body = [[_num(r["lambda_dom"]), _num(_metric(r, "mse")), _num(_metric(r, "lpips"))] +
            [_num(_dist(r.get("interpolation"), what)) for what in DISTANCES] for r in ab["rows"]]
    headers = ["λ_dom", "MSE ↓", "LPIPS ↓", "Interpolation FID ↓", "Interpolation KID ×1e3 ↓",
               "Interpolation SWD ↓"]
    return lines + _table(headers, body) + [
        f"In-domain inversion, {ab['steps']} steps, {ab['pairs']} interpolation pairs. A larger λ_dom keeps the code "
        f"in the encoder's domain: reconstructions get worse, interpolations better.", ""]


def _ends(seq: list[float] | None) -> float | None:
    """The mean of a sweep's two extreme distances (None when not measured)."""
    return None if seq is None else (seq[0] + seq[-1]) / 2


def _lec_cell(q: dict) -> str:
    return "–" if q.get("lec") is None else f"{_num(q['lec'], 3)} ({_num(q['lec_relative'], 2)})"


def _edits_md(results: dict) -> list[str]:
    eq = results["edit_quality"]
    lines = ["## Edit quality", ""]
    if _skipped(eq):
        return lines + [f"Not run: {_skipped(eq)}.", ""]
    ds, labels, lec = eq["distances"], eq["methods"], eq["lec"]
    far = f"±{_num(max(abs(ds[0]), abs(ds[-1])))}"
    lec_title = "LEC (relative)" if not _skipped(lec) else "LEC"
    lec_line = f"LEC at d = {_num(lec['distance'])} on {lec['count']} images." if not _skipped(lec) else "LEC not run."
    lines += [f"Codes: {'; '.join(labels.values())}. Each boundary and direction is measured on each set of codes "
              f"(one row each); {lec_line}", ""]
    lines += _edits_summary_md(eq, far)
    if eq["attributes"]:
        headers = ["Boundary → output", "Codes", "Layers", "Δ per unit d",
                   f"Δ score ({_num(ds[0])} → {_num(ds[-1])})", "Spearman ρ", "Monotone", "Others moved most",
                   f"ID to G(z) at {far}", f"LPIPS to G(z) at {far}", lec_title]
        body = []
        for name, per_method in eq["attributes"].items():
            for key, q in per_method.items():
                movers = sorted(q["others"].items(), key=lambda kv: -kv[1])[:OTHER_MOVERS]
                monotone = q["monotone_fraction"]
                body.append([f"{name} → {q['output'] or '–'}", key, ",".join(map(str, q["layers"])),
                             _num(q["target_slope"], 3), _num(q["target_change"]), _num(q["spearman"], 3),
                             "–" if monotone is None or not math.isfinite(monotone) else f"{100 * monotone:.0f} %",
                             ", ".join(f"{k} {_num(v, 2)}" for k, v in movers) or "–",
                             _num(_ends(q.get("identity")), 3), _num(_ends(q.get("lpips")), 3), _lec_cell(q)])
        lines += ["### Boundaries", ""] + _table(headers, body)
    if eq["directions"]:
        headers = ["Direction", "Codes", "Layers", "Moves most (per unit d)", "Others moved most",
                   f"ID to G(z) at {far}", f"LPIPS to G(z) at {far}", lec_title]
        body = []
        for name, per_method in eq["directions"].items():
            for key, q in per_method.items():
                binary = sorted(((k, v) for k, v in q["slopes"].items() if k != "age"), key=lambda kv: -abs(kv[1]))
                moves = [f"{k} {v:+.3g}" for k, v in binary[:1]]
                moves += [f"age {q['slopes']['age']:+.3g} y"] if "age" in q["slopes"] else []
                movers = sorted(q["others"].items(), key=lambda kv: -kv[1])[:OTHER_MOVERS]
                body.append([name, key, ",".join(map(str, q["layers"])),
                             ", ".join(moves) or "–",
                             ", ".join(f"{k} {_num(v, 2)}" for k, v in movers) or "–",
                             _num(_ends(q.get("identity")), 3), _num(_ends(q.get("lpips")), 3), _lec_cell(q)])
        lines += ["### Directions found without labels", ""] + _table(headers, body)
    return lines + [
        "Δ per unit d: change of the target's predicted probability (years for age) per unit of edit distance, "
        "the least-squares slope over the sweep, in the boundary's direction; for a direction, the binary output "
        "with the largest slope, and age. Δ score: mean change of the target's logit (years for age) from the most "
        "negative to the most positive distance. Spearman ρ: rank correlation of distance and score per image, "
        "averaged. Monotone: images whose score never moves against the direction. Others: mean |change| of the "
        "other predicted probabilities (years for age) between G(z) and the two extreme edits. "
        "LEC: ‖inv(G(z + d·b)) − d·b − z‖, the code returned by re-inverting the edited image with the same "
        "method and edited back, against the original; in brackets divided by ‖d·b‖ (0: the edit is consistent "
        "with the inversion).", ""]


def _mean_binary(values: dict[str, float]) -> float | None:
    """The mean over the binary outputs (probabilities; age, in years, left out)."""
    binary = [v for k, v in values.items() if k != "age" and v is not None]
    return sum(binary) / len(binary) if binary else None


def _edits_summary_md(eq: dict, far: str) -> list[str]:
    """One row per set of codes: each measure averaged over every boundary and direction."""
    keys = list(eq["methods"])
    rows = [q for kind in ("attributes", "directions") for per in eq[kind].values() for q in per.items()]

    def mean(key: str, get) -> float | None:
        values = [v for k, q in rows if k == key for v in [get(q)] if v is not None and math.isfinite(v)]
        return sum(values) / len(values) if values else None

    body = [[eq["methods"][key], _num(mean(key, lambda q: q["target_slope"]), 3),
             _num(mean(key, lambda q: _mean_binary(q["others"])), 3),
             _num(mean(key, lambda q: _ends(q.get("identity"))), 3),
             _num(mean(key, lambda q: _ends(q.get("lpips"))), 3),
             _num(mean(key, lambda q: q.get("lec")), 3), _num(mean(key, lambda q: q.get("lec_relative")), 3)]
            for key in keys]
    headers = ["Codes", "Δ target per unit d ↑", "Others moved (probability) ↓", f"ID to G(z) at {far} ↑",
               f"LPIPS to G(z) at {far}", "LEC ↓", "LEC relative ↓"]
    return ["Averaged over every boundary (Δ target) or every boundary and direction (the rest):", ""] + \
        _table(headers, body)


def _pr_md(results: dict) -> list[str]:
    pr = results["attribute_pr"]
    lines = ["## Fig. 3 — attributes read off the codes (average precision)", ""]
    if _skipped(pr):
        return lines + [f"Not run: {_skipped(pr)}.", ""]
    if not pr["attributes"]:
        return lines + ["No attribute had labels.", ""]
    labels = {r["key"]: r["label"] for r in results["table1"]["rows"]}
    keys = list(dict.fromkeys(k for a in pr["attributes"].values() for k in a["methods"]))
    headers = ["Attribute → output", "Labels", "Positives / n"] + [f"AP: {labels.get(k, k)}" for k in keys]
    body = []
    for name, a in pr["attributes"].items():
        source = a["label_source"] + (f" (≥ {_num(a['threshold'], 3)})" if a.get("threshold") is not None else "")
        body.append([f"{name} → {a['output']}", source, f"{a['positives']} / {a['count']}"] +
                    [_num((a["methods"].get(k) or {}).get("average_precision"), 3) for k in keys])
    return lines + _table(headers, body) + [
        "Score of an image: the projection of its code on the boundary, summed over the boundary's layers. "
        "Chance level is the fraction of positives.", ""]


# --- figures ----------------------------------------------------------------------------------------

def figures(result: EvaluationResult, pack, images: torch.Tensor) -> dict[str, Image.Image]:
    """Every chart (``plots/``) and example grid (``grids/``) of a run."""
    out: dict[str, Image.Image] = {}
    out.update(_table1_charts(result.results))
    out.update(_table2_charts(result.results))
    ablation = _ablation_chart(result.results)
    if ablation is not None:
        out["plots/ablation.png"] = ablation
    out.update(_edit_charts(result.results))
    out.update(_pr_charts(result.results))
    out.update(_grids(result, pack, images))
    return out


def _table1_charts(results: dict) -> dict[str, Image.Image]:
    rows = results["table1"]["rows"]
    labels = [r["key"] for r in rows]
    charts = {"plots/table1_seconds_per_image.png": bar_chart(
        labels, [r["seconds_per_image"] for r in rows], title="Time per image (s)", ylabel="seconds")}
    for key, title, better in TABLE1_METRICS:
        values = [_metric(r, key) for r in rows]
        if any(v is not None for v in values):
            charts[f"plots/table1_{key}.png"] = bar_chart(labels, values, title=f"Table 1: {title} {better}")
    for key, title in DISTANCE_TITLES:
        values = [(r.get("distribution") or {}).get(key) for r in rows]
        if any(v is not None for v in values):
            charts[f"plots/table1_{key}.png"] = bar_chart(
                labels, values, title=f"Table 1: {title} ↓ (n = {results['table1']['count']})")
    return charts


def _table2_charts(results: dict) -> dict[str, Image.Image]:
    charts = {}
    for column in ("interpolation", "manipulation"):
        methods = results["table2"][column].get("methods") or {}
        for key, title in DISTANCE_TITLES:
            values = [(m.get("all", m) if column == "manipulation" else m).get(key) for m in methods.values()]
            if methods and any(v is not None for v in values):
                charts[f"plots/table2_{column}_{key}.png"] = bar_chart(
                    list(methods), values, title=f"Table 2, {column}: {title} ↓")
    return charts


def _ablation_chart(results: dict) -> Image.Image | None:
    ab = results["ablation"]
    if _skipped(ab) or not ab.get("rows"):
        return None
    xs = [r["lambda_dom"] for r in ab["rows"]]
    panels = []
    for title, getter in (("reconstruction MSE ↓", lambda r: _metric(r, "mse")),
                          ("reconstruction LPIPS ↓", lambda r: _metric(r, "lpips")),
                          ("interpolation FID ↓", lambda r: _dist(r.get("interpolation"), "fid")),
                          ("interpolation KID ↓", lambda r: _dist(r.get("interpolation"), "kid")),
                          ("interpolation SWD ↓", lambda r: _dist(r.get("interpolation"), "swd"))):
        ys = [getter(r) for r in ab["rows"]]
        if any(y is not None for y in ys):
            panels.append(line_chart({title.split()[0]: (xs, ys)}, title=title, xlabel="λ_dom"))
    return side_by_side(panels) if panels else None


def _edit_charts(results: dict) -> dict[str, Image.Image]:
    """Per boundary: the target score along the sweep and the similarity to G(z), one series per set of codes."""
    eq = results["edit_quality"]
    if _skipped(eq):
        return {}
    charts = {}
    ds = eq["distances"]
    for name, per_method in eq["attributes"].items():
        panels = []
        scored = {key: q for key, q in per_method.items() if q.get("target_mean") is not None}
        if scored:
            output = next(iter(scored.values()))["output"]
            panels.append(line_chart({key: (ds, q["target_mean"]) for key, q in scored.items()},
                                     title=f"{name}: predicted {output}", xlabel="edit distance d",
                                     ylabel="years" if output == "age" else "logit"))
        for measure in ("identity", "lpips"):
            series = {key: (ds, q[measure]) for key, q in per_method.items() if q.get(measure) is not None}
            if series:
                panels.append(line_chart(series, title=f"{name}: {measure} to G(z)", xlabel="edit distance d",
                                         legend="lower right" if measure == "identity" else "upper right"))
        if panels:
            charts[f"plots/edit_{name}.png"] = side_by_side(panels)
    return charts


def _pr_charts(results: dict) -> dict[str, Image.Image]:
    pr = results["attribute_pr"]
    if _skipped(pr):
        return {}
    charts = {}
    for name, a in pr["attributes"].items():
        series = {f"{k} (AP {_num(m['average_precision'], 2)})": (m["recall"], m["precision"])
                  for k, m in a["methods"].items()}
        charts[f"plots/pr_{name}.png"] = line_chart(series, title=f"Fig. 3: {name} from codes ({a['label_source']})",
                                                    xlabel="recall", ylabel="precision", x_range=(0, 1),
                                                    y_range=(0, 1), legend="lower left")
    return charts


def _grids(result: EvaluationResult, pack, images: torch.Tensor) -> dict[str, Image.Image]:
    k = min(result.results["settings"]["examples"], images.shape[0])
    if k == 0:
        return {}
    g = pack.generator
    render = lambda codes: synthesize(g, codes, batch_size=8).clamp(-1, 1).cpu()  # noqa: E731
    grids = {}
    rows = [("Real", list(images[:k]))]
    rows += [(spec.label, list(render(result.codes[spec.key][:k]))) for spec in result.methods]
    grids["grids/reconstructions.png"] = labelled_grid(rows, label_width=220)
    t2 = result.results["table2"]["interpolation"].get("methods") or {}
    if t2 and result.pairs is not None:
        pairs = result.pairs[:k]
        labels = {spec.key: spec.label for spec in result.methods}
        rows = [("Image A", list(images[pairs[:, 0]])), ("Image B", list(images[pairs[:, 1]]))]
        rows += [(f"{labels[key]}: midpoint", list(render(midpoints(result.codes[key], pairs)))) for key in t2]
        grids["grids/interpolation.png"] = labelled_grid(rows, label_width=300)
    eq = result.results["edit_quality"]
    if not _skipped(eq) and "in-domain" in result.codes:
        ds = eq["distances"]
        edits = {**{n: result.boundaries[n] for n in eq["attributes"]},
                 **{n: result.directions[n] for n in eq["directions"]}}
        for name, b in edits.items():
            edited = render(manipulation_codes(result.codes["in-domain"][:k], b, ds))  # [k, K, 3, R, R]
            grids[f"grids/edits_{name}.png"] = labelled_grid(
                [(f"image {i + 1}", list(edited[i])) for i in range(k)],
                header=[f"d = {_num(d, 2)}" for d in ds], label_width=90)
    return grids
