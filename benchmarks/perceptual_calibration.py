"""How much the perceptual term weighs against the pixel term, per VGG convention.

For face photos and degraded copies of them (blur, noise, JPEG, a 2-pixel shift, and a
mixture of two faces), prints the pixel MSE, the feature MSE and the ratio
``λ_vgg·MSE_vgg / MSE_pix`` with the offline torchvision-convention VGG16 and its calibrated
λ_vgg = 0.166; with ``--caffe-vgg vgg16.pth`` (the official file) the Caffe column with the
paper's 5e-5 is added, and ``calibrate_lambda_vgg`` gives the directly measured λ.

    python benchmarks/perceptual_calibration.py --images DIR_OR_TAR [--caffe-vgg vgg16.pth]
"""

from __future__ import annotations

import argparse
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from idinvert.networks.config import PerceptualConfig
from idinvert.images import pil_to_tensor, resize_square
from idinvert.formats.official import load_official_vgg
from idinvert.perceptual import (PAPER_LAMBDA_VGG, TORCHVISION_LAMBDA_VGG, build_perceptual,
                                 calibrate_lambda_vgg, feature_mse)


def load_faces(source: Path, n: int, size: int, labels: Path | None) -> torch.Tensor:
    keep = None
    if labels is not None:  # train split only
        import csv

        keep = {r["file"] for r in csv.DictReader(open(labels)) if r.get("split") == "train"}
    images = []
    with tarfile.open(source) as tar:
        for m in tar:
            if not m.isfile() or (keep is not None and Path(m.name).name not in keep):
                continue
            img = Image.open(io.BytesIO(tar.extractfile(m).read())).convert("RGB")
            images.append(pil_to_tensor(resize_square(img, size)))
            if len(images) == n:
                break
    return torch.stack(images)


def jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    out = []
    for img in x:
        arr = ((img.permute(1, 2, 0) + 1) * 127.5).clamp(0, 255).round().byte().numpy()
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="JPEG", quality=quality)
        out.append(pil_to_tensor(Image.open(buf)))
    return torch.stack(out)


def degradations(x: torch.Tensor) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    k = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0])
    k = (torch.outer(k, k) / 256).expand(3, 1, 5, 5)
    blur = F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), k, groups=3)
    return {"blur 5x5": blur, "noise σ=0.1": (x + 0.1 * torch.randn(x.shape, generator=g)).clamp(-1, 1),
            "JPEG q=20": jpeg(x, 20), "shift 2 px": torch.roll(x, 2, dims=3),
            "half another face": 0.5 * (x + x.roll(1, dims=0))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, required=True, help="a tar of face photos (UTKFace images.tar)")
    parser.add_argument("--labels", type=Path, help="labels.csv: use only its train split")
    parser.add_argument("--count", type=int, default=64)
    parser.add_argument("--sizes", default="64,256")
    parser.add_argument("--caffe-vgg", type=Path)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "perceptual_calibration.json")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    tv = build_perceptual(PerceptualConfig("torchvision", TORCHVISION_LAMBDA_VGG))
    caffe = load_official_vgg(args.caffe_vgg) if args.caffe_vgg else None
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        x = load_faces(args.images, args.count, size, args.labels)
        for name, y in degradations(x).items():
            pix = float((x - y).square().mean())
            row = {"size": size, "degradation": name, "pixel_mse": pix,
                   "vgg_mse_torchvision": float(feature_mse(tv, x, y).mean())}
            row["ratio_torchvision"] = TORCHVISION_LAMBDA_VGG * row["vgg_mse_torchvision"] / pix
            if caffe is not None:
                row["vgg_mse_caffe"] = float(feature_mse(caffe, x, y).mean())
                row["ratio_caffe"] = PAPER_LAMBDA_VGG * row["vgg_mse_caffe"] / pix
                row["measured_lambda_torchvision"] = calibrate_lambda_vgg(caffe, PAPER_LAMBDA_VGG, tv, x, y)
            rows.append(row)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"images": str(args.images), "count": args.count, "rows": rows}, indent=2) + "\n")
    cols = [c for c in rows[0] if c not in ("size", "degradation")]
    print("| size | degradation | " + " | ".join(cols) + " |")
    print("|---|---|" + "---|" * len(cols))
    for r in rows:
        print(f"| {r['size']} | {r['degradation']} | " + " | ".join(f"{r[c]:.4g}" for c in cols) + " |")


if __name__ == "__main__":
    main()
