"""rosinality ``stylegan2-pytorch`` checkpoints (``train.py`` files; also the form pSp, e4e, ReStyle use).

A checkpoint is a ``torch.save`` dict with ``g_ema`` (generator state_dict), optionally ``d``, ``g``,
optimiser states, ``args`` (an ``argparse.Namespace``) and ``latent_avg``. Every layout rosinality writes
is read: ``train.py``'s ``{g, d, g_ema, g_optim, d_optim, args, ada_aug_p}``, ``convert_weight.py``'s
``{g_ema, latent_avg [w_dim]}`` (optionally with ``g`` and ``d``), and pSp-style files whose
``latent_avg`` is ``[1, w_dim]`` or one row repeated. ``g`` and the optimiser states are not used; a
``d`` that cannot be read is left out with a note (``info["discriminator_skipped"]``), never stopping
the generator. Files are read with ``formats.common.read_torch_file`` (a bounded scan, then
``torch.load(weights_only=True)``), allowing ``argparse.Namespace`` as the only extra global: no code
from the file runs. The configuration is inferred from the tensor shapes; the key names map one to
one onto ``StyleGAN2Generator`` / ``StyleGAN2Discriminator`` (``KEY MAP`` below), so the same table
writes a rosinality file back (``save_rosinality``).

Not stored in the files: the mapping network's lr multiplier (rosinality's ``lr_mlp``, 0.01 in every
published model) and, without ``latent_avg``, the mean of w, which is then estimated from 4096 samples.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
from pathlib import Path
from typing import Any, Iterator

import torch

from ..errors import CheckpointError, ConfigError
from ..fileio import atomic_path
from ..networks.stylegan2 import StyleGAN2Config, StyleGAN2Generator, channel_layout
from ..networks.stylegan2_discriminator import StyleGAN2Discriminator
from ..networks.stylegan2_layers import fir_filter
from .common import first_line, load_strict, read_torch_file

CHECKPOINT_FORMAT = "rosinality-stylegan2"
LR_MLP = 0.01  # rosinality Generator(lr_mlp=0.01): not saved in checkpoints
W_AVG_SAMPLES = 4096  # as rosinality's mean_latent(4096)


# --- KEY MAP: (rosinality key, our key) ----------------------------------------------------------------
def generator_key_pairs(config: StyleGAN2Config) -> Iterator[tuple[str, str]]:
    for i in range(config.mapping_layers):
        yield from ((f"style.{i + 1}.{p}", f"mapping.fc{i}.{p}") for p in ("weight", "bias"))
    yield "input.input", "synthesis.b4.const"
    convs = [("conv1", "synthesis.b4.conv1")]
    rgbs = [("to_rgb1", "synthesis.b4.torgb")]
    for k, res in enumerate(config.block_resolutions[1:]):
        convs += [(f"convs.{2 * k}", f"synthesis.b{res}.conv0"), (f"convs.{2 * k + 1}", f"synthesis.b{res}.conv1")]
        rgbs.append((f"to_rgbs.{k}", f"synthesis.b{res}.torgb"))
    for i, (ros, ours) in enumerate(convs):
        yield f"{ros}.conv.weight", f"{ours}.weight"
        yield f"{ros}.conv.modulation.weight", f"{ours}.affine.weight"
        yield f"{ros}.conv.modulation.bias", f"{ours}.affine.bias"
        yield f"{ros}.noise.weight", f"{ours}.noise_strength"
        yield f"{ros}.activate.bias", f"{ours}.bias"
        yield f"noises.noise_{i}", f"{ours}.noise_const"
    for ros, ours in rgbs:
        yield f"{ros}.conv.weight", f"{ours}.weight"
        yield f"{ros}.conv.modulation.weight", f"{ours}.affine.weight"
        yield f"{ros}.conv.modulation.bias", f"{ours}.affine.bias"
        yield f"{ros}.bias", f"{ours}.bias"


def discriminator_key_pairs(config: StyleGAN2Config) -> Iterator[tuple[str, str]]:
    top = config.resolution
    yield "convs.0.0.weight", f"b{top}.fromrgb.weight"
    yield "convs.0.1.bias", f"b{top}.fromrgb.bias"
    for j, res in enumerate(config.block_resolutions[:0:-1], start=1):  # ResBlock j works at R / 2^(j−1)
        yield f"convs.{j}.conv1.0.weight", f"b{res}.conv0.weight"
        yield f"convs.{j}.conv1.1.bias", f"b{res}.conv0.bias"
        yield f"convs.{j}.conv2.1.weight", f"b{res}.conv1.weight"
        yield f"convs.{j}.conv2.2.bias", f"b{res}.conv1.bias"
        yield f"convs.{j}.skip.1.weight", f"b{res}.skip.weight"
    yield from (("final_conv.0.weight", "b4.conv.weight"), ("final_conv.1.bias", "b4.conv.bias"),
                ("final_linear.0.weight", "b4.fc.weight"), ("final_linear.0.bias", "b4.fc.bias"),
                ("final_linear.1.weight", "b4.out.weight"), ("final_linear.1.bias", "b4.out.bias"))


def generator_fir_keys(config: StyleGAN2Config) -> list[str]:
    """rosinality's fixed FIR buffers (filter × 4, the upsampling gain)."""
    ups = range(len(config.block_resolutions) - 1)
    return [f"convs.{2 * k}.conv.blur.kernel" for k in ups] + [f"to_rgbs.{k}.upsample.kernel" for k in ups]


def discriminator_fir_keys(config: StyleGAN2Config) -> list[str]:
    blocks = range(1, len(config.block_resolutions))
    return [f"convs.{j}.conv2.0.kernel" for j in blocks] + [f"convs.{j}.skip.0.kernel" for j in blocks]


def rosinality_shape(key: str, value: torch.Tensor) -> torch.Tensor:
    """Our generator tensor under rosinality ``key`` in rosinality's shape (leading unit dimensions)."""
    if key.endswith(".conv.weight") or key == "input.input":
        return value.unsqueeze(0)  # [1, O, I, k, k] and [1, C, 4, 4]
    if key.startswith("noises."):
        return value.reshape(1, 1, *value.shape)
    if key.endswith(".noise.weight"):
        return value.reshape(1)
    if re.fullmatch(r"to_rgb(1|s\.\d+)\.bias", key):
        return value.reshape(1, -1, 1, 1)
    return value


# --- reading -------------------------------------------------------------------------------------------
def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint dict (``argparse.Namespace`` is the one extra global allowed, for ``args``)."""
    path = Path(path)
    ckpt = read_torch_file(path, extra_globals=[argparse.Namespace], kind="rosinality checkpoint")
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("g_ema"), dict):
        raise CheckpointError(f"{path}: not a rosinality stylegan2-pytorch checkpoint (no 'g_ema' state_dict)")
    return ckpt


def _state_dict(state: Any, source: str) -> dict[str, torch.Tensor]:
    """A state_dict of named tensors, or one line that says what the file holds instead."""
    if not isinstance(state, dict):
        raise CheckpointError(f"{source}: a {type(state).__name__}, not a state_dict")
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            shown = key[:80] if isinstance(key, str) else f"a {type(key).__name__} key"
            raise CheckpointError(f"{source}: {shown} holds a {type(value).__name__}, not a tensor; the file is "
                                  f"damaged or not a rosinality checkpoint")
    return state


def _shape(state: dict[str, torch.Tensor], key: str, ndim: int, source: str) -> tuple[int, ...]:
    """The shape of ``state[key]``, which must exist and have ``ndim`` dimensions."""
    if key not in state:
        raise CheckpointError(f"{source}: missing key {key}")
    if state[key].ndim != ndim:
        raise CheckpointError(f"{source}: {key} has shape {list(state[key].shape)}, expected {ndim} dimensions")
    return tuple(state[key].shape)


def _fail(source: str, what: str) -> CheckpointError:
    return CheckpointError(f"{source}: {what} is not supported (IDInvert reads rosinality StyleGAN2 "
                           f"checkpoints with 3-channel output and the [1, 3, 3, 1] blur kernel)")


def _channel_base(widths: dict[int, int], source: str) -> tuple[int, int]:
    layout = channel_layout(widths)
    if layout is None:
        raise _fail(source, f"a channel layout that is not min(base // r, max) ({widths})")
    return layout


def infer_generator_config(g: dict[str, torch.Tensor], source: str = "g_ema") -> StyleGAN2Config:
    """The configuration of a rosinality ``Generator`` state_dict, from its shapes."""
    if any(k.endswith(".iwt.ll") or "dwt" in k for k in g):
        raise _fail(source, "SWAGAN (wavelet) architecture")
    styles = sorted(int(m.group(1)) for k in g if (m := re.fullmatch(r"style\.(\d+)\.weight", k)))
    rgbs = sorted(int(m.group(1)) for k in g if (m := re.fullmatch(r"to_rgbs\.(\d+)\.conv\.weight", k)))
    if not styles or styles != list(range(1, len(styles) + 1)) or rgbs != list(range(len(rgbs))) \
            or "input.input" not in g or "conv1.conv.weight" not in g:
        raise CheckpointError(f"{source}: not a rosinality StyleGAN2 generator state_dict")
    rgb_channels = _shape(g, "to_rgb1.conv.weight", 5, source)[1]
    if rgb_channels != 3:
        raise _fail(source, f"a generator with {rgb_channels} image channels")
    w_dim, z_dim = _shape(g, "style.1.weight", 2, source)
    resolution = 2 ** (len(rgbs) + 2)
    widths = {4: _shape(g, "conv1.conv.weight", 5, source)[1]}
    widths.update({2 ** (k + 3): _shape(g, f"to_rgbs.{k}.conv.weight", 5, source)[2] for k in rgbs})
    base, cmax = _channel_base(widths, source)
    try:
        return StyleGAN2Config(resolution=resolution, z_dim=z_dim, w_dim=w_dim,
                               mapping_layers=len(styles), mapping_lr_mul=LR_MLP, channel_base=base, channel_max=cmax)
    except ConfigError as exc:
        raise CheckpointError(f"{source}: unsupported generator ({exc})") from None


def _check_fir(state: dict[str, torch.Tensor], keys: list[str], gain: float, source: str) -> None:
    fir = fir_filter() * gain
    for key in keys:
        value = state.get(key)
        if value is None:
            raise CheckpointError(f"{source}: missing key {key}")
        if value.shape != fir.shape or not torch.allclose(value.float(), fir, atol=1e-6):
            raise _fail(source, f"a blur kernel other than [1, 3, 3, 1] ({key})")


def _convert(state: dict[str, torch.Tensor], pairs: list[tuple[str, str]], fir_keys: list[str],
             model: torch.nn.Module, source: str) -> dict[str, torch.Tensor]:
    """rosinality keys → ours, reshaped to our shapes; anything left over is named."""
    expected = model.state_dict()
    unexpected = sorted(set(state) - {r for r, _ in pairs} - set(fir_keys))
    if unexpected:
        raise CheckpointError(f"{source}: unexpected keys {unexpected[:6]} for the inferred architecture")
    out = {}
    for ros, ours in pairs:
        if ros not in state:
            raise CheckpointError(f"{source}: missing key {ros}")
        value, shape = state[ros], rosinality_shape(ros, expected[ours]).shape
        if value.shape != shape:
            raise CheckpointError(f"{source}: {ros} has shape {list(value.shape)}, expected {list(shape)} "
                                  f"for the inferred architecture")
        out[ours] = value.reshape(expected[ours].shape)
    return out


def _w_avg(ckpt: dict[str, Any], generator: StyleGAN2Generator, source: str) -> tuple[torch.Tensor, str]:
    avg = ckpt.get("latent_avg")
    if avg is None:
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():
            w = generator.mapping(torch.randn(W_AVG_SAMPLES, generator.z_dim, generator=gen))
        return w.mean(dim=0), f"estimated from {W_AVG_SAMPLES} samples (no latent_avg in the file)"
    if not isinstance(avg, torch.Tensor) or avg.ndim not in (1, 2) or avg.shape[-1] != generator.w_dim \
            or (avg.ndim == 2 and not torch.equal(avg, avg[:1].expand_as(avg))):
        shape = list(avg.shape) if isinstance(avg, torch.Tensor) else f"(a {type(avg).__name__})"
        raise CheckpointError(f"{source}: latent_avg of shape {shape} is not one {generator.w_dim}-d mean w")
    if not avg.is_floating_point() or not torch.isfinite(avg).all():
        raise CheckpointError(f"{source}: latent_avg holds NaN/inf or is not floating-point; the file is damaged "
                              f"(remove 'latent_avg' to have it estimated from samples)")
    return avg.reshape(-1, generator.w_dim)[0].float(), "latent_avg"


def load_rosinality_checkpoint(path: str | Path, *, with_discriminator: bool = True
                               ) -> tuple[StyleGAN2Generator, StyleGAN2Discriminator | None, dict[str, Any]]:
    """``(g_ema, d or None, info)`` from a rosinality checkpoint, eval mode, CPU. ``mapping.w_avg`` is the
    file's ``latent_avg`` (so truncation and ``mean_code`` use it), else an estimate."""
    source = str(path)
    ckpt = read_checkpoint(path)
    arch = getattr(ckpt.get("args"), "arch", "stylegan2")
    if arch != "stylegan2":
        raise _fail(source, f"the {arch[:40]!r} architecture" if isinstance(arch, str)
                    else f"an args.arch that is a {type(arch).__name__}")
    g = _state_dict(ckpt["g_ema"], f"{source} [g_ema]")
    config = infer_generator_config(g, f"{source} [g_ema]")
    _check_fir(g, generator_fir_keys(config), 4.0, f"{source} [g_ema]")
    generator = StyleGAN2Generator(config)
    state = _convert(g, list(generator_key_pairs(config)), generator_fir_keys(config), generator, f"{source} [g_ema]")
    state["mapping.w_avg"] = torch.zeros(config.w_dim)  # set below: an estimate needs the mapping weights
    load_strict(generator, state, f"{source} [g_ema]").eval()
    w_avg, origin = _w_avg(ckpt, generator, source)
    generator.mapping.w_avg.copy_(w_avg)
    info: dict[str, Any] = {"format": CHECKPOINT_FORMAT, "generator": "g_ema", "w_avg": origin,
                            "mapping_lr_mul": f"{LR_MLP} (rosinality's default; not stored in the file)",
                            "ignored": sorted(k for k in ckpt if k not in ("g_ema", "d", "latent_avg"))}
    discriminator = None
    if with_discriminator and ckpt.get("d") is not None:
        try:
            discriminator = _load_discriminator(_state_dict(ckpt["d"], f"{source} [d]"), config, f"{source} [d]")
        except CheckpointError as exc:  # the generator is what a pack needs; say why d was left out
            info["discriminator_skipped"] = first_line(exc)
        else:
            info["discriminator"] = "d"
    return generator, discriminator, info


def _load_discriminator(d: dict[str, torch.Tensor], g_config: StyleGAN2Config, source: str) -> StyleGAN2Discriminator:
    """rosinality's ``Discriminator(size)`` (minibatch std: group 4, 1 channel) for ``g_config``'s size."""
    resolutions = g_config.block_resolutions[:0:-1]
    keys = [f"convs.{j}.conv1.1.bias" for j in range(1, len(resolutions) + 1)] + ["final_conv.1.bias"]
    if any(k not in d for k in keys):
        raise CheckpointError(f"{source}: not a {g_config.resolution}px rosinality discriminator")
    widths = {r: _shape(d, k, 1, source)[0] for r, k in zip(resolutions + [4], keys)}
    base, cmax = _channel_base(widths, source)
    config = dataclasses.replace(g_config, channel_base=base, channel_max=cmax)
    _check_fir(d, discriminator_fir_keys(config), 1.0, source)
    discriminator = StyleGAN2Discriminator(config)
    state = _convert(d, list(discriminator_key_pairs(config)), discriminator_fir_keys(config), discriminator, source)
    return load_strict(discriminator, state, source).eval()


# --- writing -------------------------------------------------------------------------------------------
def rosinality_state_dicts(generator: StyleGAN2Generator, discriminator: StyleGAN2Discriminator | None = None
                           ) -> dict[str, dict[str, torch.Tensor]]:
    """``{'g_ema': …, 'd': …}`` state_dicts in rosinality's key names, shapes and FIR buffers."""
    ours = {k: v.detach().cpu().float() for k, v in generator.state_dict().items()}
    g = {ros: rosinality_shape(ros, ours[mine]).clone() for ros, mine in generator_key_pairs(generator.config)}
    g.update({k: fir_filter() * 4.0 for k in generator_fir_keys(generator.config)})
    out = {"g_ema": g}
    if discriminator is not None:
        ours = {k: v.detach().cpu().float() for k, v in discriminator.state_dict().items()}
        d = {ros: ours[mine].clone() for ros, mine in discriminator_key_pairs(discriminator.config)}
        d.update({k: fir_filter() for k in discriminator_fir_keys(discriminator.config)})
        out["d"] = d
    return out


def save_rosinality(generator: StyleGAN2Generator, path: str | Path, *, latent_avg: torch.Tensor | None = None,
                    discriminator: StyleGAN2Discriminator | None = None) -> Path:
    """Write ``{'g_ema', 'latent_avg'[, 'd']}`` with ``torch.save`` for rosinality-based tools (pSp, e4e …).

    ``latent_avg`` ``[w_dim]`` defaults to the generator's ``w_avg``. rosinality's ``Generator(size,
    style_dim, n_mlp, channel_multiplier)`` loads it when the widths are its own (channel_base
    32768 · multiplier / 2 with channel_max 512, e.g. NVIDIA's config F) and ``mapping_lr_mul`` = 0.01.
    """
    if generator.config.mapping_lr_mul != LR_MLP:
        raise ConfigError(f"rosinality's generator has a mapping lr multiplier of {LR_MLP}, this one "
                          f"{generator.config.mapping_lr_mul}: the file would give other images")
    d = discriminator.config if discriminator is not None else None
    if generator.config.conv_clamp is not None or (d is not None and (
            d.conv_clamp is not None or (d.mbstd_group_size, d.mbstd_channels) != (4, 1))):
        raise ConfigError("rosinality's networks have no conv_clamp and a minibatch-std group of 4 with one "
                          "channel; these differ, so the file would give other results")
    ckpt: dict[str, Any] = rosinality_state_dicts(generator, discriminator)
    avg = generator.mapping.w_avg if latent_avg is None else latent_avg
    ckpt["latent_avg"] = avg.detach().cpu().float().reshape(generator.w_dim).clone()
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(ckpt, tmp)
    return path
