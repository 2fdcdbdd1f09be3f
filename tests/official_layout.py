"""The official state_dict layouts, written from idinvert-spec.md §1.7, §2.2 and §4 (not from our modules)."""

from __future__ import annotations

import torch

G_CHANNELS_256 = [512] * 8 + [256, 256, 128, 128, 64, 64]  # per synthesis layer 0..13
RGB_CHANNELS_256 = [512, 512, 512, 512, 256, 128, 64]  # output0..6


def generator_shapes(*, with_truncation_buffer: bool = False) -> dict[str, tuple[int, ...]]:
    s: dict[str, tuple[int, ...]] = {}
    for i in range(8):
        out = 7168 if i == 7 else 512
        s[f"mapping.dense{i}.fc.weight"] = (out, 512)
        s[f"mapping.dense{i}.wscale.bias"] = (out,)
    s["truncation.w_avg"] = (512,)
    if with_truncation_buffer:
        s["truncation.truncation"] = (1, 14, 1)
    s["synthesis.lod"] = ()
    s["synthesis.layer0.const"] = (1, 512, 4, 4)
    for i in range(14):
        c, r = G_CHANNELS_256[i], 4 * 2 ** (i // 2)
        prefix = f"synthesis.layer{i}"
        s[f"{prefix}.epilogue.bias"] = (c,)
        s[f"{prefix}.epilogue.apply_noise.weight"] = (c,)
        s[f"{prefix}.epilogue.apply_noise.noise"] = (1, 1, r, r)
        s[f"{prefix}.epilogue.style_mod.dense.fc.weight"] = (2 * c, 512)
        s[f"{prefix}.epilogue.style_mod.dense.wscale.bias"] = (2 * c,)
        if i == 0:
            continue
        cin = G_CHANNELS_256[i - 1]
        if i in (10, 12):
            s[f"{prefix}.weight"] = (3, 3, cin, c)
        else:
            s[f"{prefix}.conv.weight"] = (c, cin, 3, 3)
        if i % 2 == 0:
            s[f"{prefix}.blur.kernel"] = (c, 1, 3, 3)
    for k, c in enumerate(RGB_CHANNELS_256):
        s[f"synthesis.output{k}.conv.weight"] = (3, c, 1, 1)
        s[f"synthesis.output{k}.bias"] = (3,)
    return s


GENERATOR_BUFFERS = ("apply_noise.noise", "blur.kernel", "truncation.w_avg", "truncation.truncation")


def _bn(s: dict, prefix: str, c: int) -> None:
    for name in ("weight", "bias", "running_mean", "running_var"):
        s[f"{prefix}.bn.{name}"] = (c,)
    s[f"{prefix}.bn.num_batches_tracked"] = ()


def encoder_shapes() -> dict[str, tuple[int, ...]]:
    s: dict[str, tuple[int, ...]] = {"block0.conv.weight": (64, 3, 3, 3)}
    _bn(s, "block0.bn", 64)
    widths = [64, 128, 256, 512, 1024, 1024, 1024]
    for b in range(1, 7):
        cin, cout = widths[b - 1], widths[b]
        if cin != cout:
            s[f"block{b}.conv.weight"] = (cout, cin, 1, 1)
            _bn(s, f"block{b}.bn", cout)
        s[f"block{b}.conv1.weight"] = (cin, cin, 3, 3)
        s[f"block{b}.wscale1.bias"] = (cin,)
        _bn(s, f"block{b}.bn1", cin)
        s[f"block{b}.conv2.weight"] = (cout, cin, 3, 3)
        s[f"block{b}.wscale2.bias"] = (cout,)
        _bn(s, f"block{b}.bn2", cout)
    s["block7.fc.weight"] = (7168, 16384)
    _bn(s, "block7.bn", 7168)
    return s


def vgg_shapes() -> dict[str, tuple[int, ...]]:
    convs = {0: (64, 3), 2: (64, 64), 5: (128, 64), 7: (128, 128), 10: (256, 128), 12: (256, 256),
             14: (256, 256), 17: (512, 256), 19: (512, 512), 21: (512, 512), 24: (512, 512),
             26: (512, 512), 28: (512, 512)}
    s = {}
    for idx, (cout, cin) in convs.items():
        s[f"layer{idx}.weight"] = (cout, cin, 3, 3)
        s[f"layer{idx}.bias"] = (cout,)
    return s


def random_state(shapes: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    state = {}
    for k, shape in shapes.items():
        if k.endswith("num_batches_tracked"):
            state[k] = torch.tensor(100)
        elif k.endswith("running_var"):
            state[k] = torch.rand(shape, generator=g) + 0.5
        elif k == "synthesis.lod":
            state[k] = torch.tensor(0.0)
        else:
            state[k] = torch.randn(shape, generator=g)
    return state
