"""Give a pack the bundled ``utkface64`` attribute predictor, reading the matching crop of its framing.

    python scripts/dcgan_pack/add_predictor.py PACK

The predictor was trained at 64 px in the UTKFace framing (tight: the eyes 39 % of the width apart).
In a looser framing the same face fills a smaller square; ``input_crop`` (computed from the two
framings' eye and mouth positions) makes the predictor read exactly that square, resampled to 64 px.
Retraining in the looser framing is not possible with the same data: UTKFace's 200 px crops cut the
head off at the loose frame's borders, and UTKFace is the only source of age labels here.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from pathlib import Path

from idinvert.align import framing_from_config, utkface_framing
from idinvert.attributes import load_predictor, predictor_entry, save_predictor
from idinvert.attributes.predictor import crop_between
from idinvert.pack import load_pack, update_pack


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pack", type=Path)
    parser.add_argument("--source", default="utkface64", help="the pack whose predictor is reused")
    args = parser.parse_args(argv)
    source = load_pack(args.source)
    predictor = load_predictor(source)
    target = load_pack(args.pack)
    crop = crop_between(framing_from_config(target.config), framing_from_config(source.config) or utkface_framing())
    predictor.config = dataclasses.replace(predictor.config, input_crop=crop)
    report = dict(source.config["predictor"].get("report") or {})
    report["reused_from"] = {"pack": source.name, "input_crop": list(crop),
                             "note": "accuracy figures above are the source pack's, in its own framing"}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "attributes.safetensors"
        save_predictor(predictor, path)
        # the source's calibration (and any the target had) fits another framing: calibrate again
        # (calibrate_predictor.py); None, since update_pack merges the old entry's keys
        entry = predictor_entry(predictor, report) | {"calibration": None}
        update_pack(args.pack, config_updates={"predictor": entry},
                    files={"attributes.safetensors": path})
    print(f"predictor of {source.name} added to {args.pack} with input_crop {crop}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
