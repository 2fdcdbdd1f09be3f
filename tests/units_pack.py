"""A tiny pack whose attribute predictor reads a known quantity, for the tests of edits in units.

The predictor is an ``AttributePredictor`` with hand-set weights: it reads the mean brightness b of the
image (in [-1, 1]) and answers age = 50·(b + 1) years and P(Male) = P(Smiling) = sigmoid(4·b),
P(Eyeglasses) = sigmoid(−4·b). The boundaries age, gender, smile move the codes along the gradient of
the brightness on the generator's last layers (so every reading rises monotonically along them),
eyeglasses the opposite way; ``pose`` is a boundary the predictor does not read.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from idinvert.attributes import predictor_entry, save_predictor
from idinvert.attributes.predictor import AttributePredictor, PredictorConfig
from idinvert.boundaries import save_boundary
from idinvert.pack import load_pack, update_pack

MEASURED = ("age", "gender", "smile", "eyeglasses")


def brightness_predictor(resolution: int = 32) -> AttributePredictor:
    p = AttributePredictor(PredictorConfig(resolution=resolution, binary=("Male", "Smiling", "Eyeglasses"),
                                           channels=(4, 4))).eval()
    with torch.no_grad():
        for t in p.parameters():
            t.zero_()
        for m in p.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.fill_(1.0)
        p.stem[0].weight[0, :, 1, 1] = 1 / 3  # channel 0: the mean of R, G, B
        p.stem[1].bias[0] = 1.0  # brightness in [-1, 1] → [0, 2] before the ReLU
        for stage in p.stages:
            stage.skip.weight[0, 0, 0, 0] = 1.0  # carried through every stage unchanged
        p.age_head.weight[0, 0] = 1.0  # age = 50 · (b + 1) years
        p.binary_head.weight[:, 0] = torch.tensor([4.0, 4.0, -4.0])
        p.binary_head.bias[:] = torch.tensor([-4.0, -4.0, 4.0])  # logits ±4·b
    return p


def make_units_pack(source: Path, folder: Path, *, predictor: bool = True) -> Path:
    """A copy of the tiny StyleGAN pack at ``source`` with the boundaries above (and the predictor)."""
    shutil.copytree(source, folder)
    g = load_pack(folder).generator
    code = g.mean_code()[None].clone().requires_grad_(True)
    g.synthesize(code).mean().backward()
    grad = code.grad[0].clone()
    grad[:-2] = 0  # the last two layers: a steady, monotone change of brightness
    brighter = grad / grad.norm()
    files, entries = {}, {}
    pose = torch.randn(g.code_shape, generator=torch.Generator().manual_seed(3))
    for name, direction in [*((n, brighter if n != "eyeglasses" else -brighter) for n in MEASURED),
                            ("pose", pose / pose.norm())]:
        path = folder.parent / f"{folder.name}-{name}.npy"
        save_boundary(path, direction[None])
        files[f"boundaries/{name}.npy"] = path
        entries[name] = f"boundaries/{name}.npy"
    updates = {"boundaries": entries}
    if predictor:
        model = brightness_predictor(g.resolution)
        save_predictor(model, folder.parent / f"{folder.name}-attributes.safetensors")
        files["attributes.safetensors"] = folder.parent / f"{folder.name}-attributes.safetensors"
        updates["predictor"] = predictor_entry(model)
    update_pack(folder, config_updates=updates, files=files)
    return folder
