"""Derived weights remembered inside ``frozen`` blocks: same outputs, recomputed whenever a source changes."""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from idinvert.networks.derived import frozen
from idinvert.networks import StyleGANGenerator
from idinvert.networks.derived import derived, remembering

from conftest import tiny_generator_config, tiny_networks


class Counting(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(3, 3))
        self.made = 0

    def scaled(self) -> torch.Tensor:
        def make():
            self.made += 1
            return self.weight * 2.0

        return derived(self, "scaled", make, self.weight)


def test_made_once_per_block_and_again_when_the_source_changes():
    m = Counting().requires_grad_(False)
    m.scaled(), m.scaled()
    assert m.made == 2  # outside a block: every call
    with remembering(m):
        first = m.scaled()
        assert m.scaled() is first and m.made == 3
        with torch.no_grad():
            m.weight.add_(1.0)  # in place: the version counter moves
        assert torch.equal(m.scaled(), m.weight * 2.0) and m.made == 4
        m.weight.data = torch.zeros(3, 3)  # new storage
        assert torch.equal(m.scaled(), torch.zeros(3, 3)) and m.made == 5
        m.weight.requires_grad_(True)  # trainable parameters are never remembered
        assert m.scaled().requires_grad and m.made == 6
        m.scaled()
        assert m.made == 7
    assert "_derived_weights" not in m.__dict__


def test_nested_blocks_share_and_the_outer_block_keeps_its_memory():
    m = Counting().requires_grad_(False)
    with remembering(m):
        first = m.scaled()
        with remembering(m):
            assert m.scaled() is first
        assert m.scaled() is first and m.made == 1
    m.scaled()
    assert m.made == 2


def test_frozen_networks_compute_the_same_outputs():
    g, e = tiny_networks()
    g_fused = StyleGANGenerator(replace(tiny_generator_config(), fused_min_resolution=8)).eval()
    codes = torch.randn(2, *g.code_shape)
    with torch.no_grad():
        expected = [g.synthesize(codes), g_fused.synthesize(codes), e(g.synthesize(codes))]
    with frozen(g, g_fused, e):
        for _ in range(2):  # the second pass reads the remembered weights
            with torch.no_grad():
                got = [g.synthesize(codes), g_fused.synthesize(codes), e(g.synthesize(codes))]
            assert all(torch.equal(a, b) for a, b in zip(got, expected))
            z = codes.clone().requires_grad_(True)
            e(g.synthesize(z)).square().sum().backward()
            assert z.grad is not None and torch.isfinite(z.grad).all()


def test_weights_substituted_by_functional_call_are_used_not_the_remembered_ones():
    g, _ = tiny_networks()
    codes = torch.randn(1, *g.code_shape)
    with torch.no_grad():  # plain tensors without gradients, as pivotal tuning's vmap passes them
        doubled = {k: v * 2 for k, v in g.synthesis.named_parameters() if k.endswith("conv.weight")}
        plain = g.synthesis(codes)
        expected = torch.func.functional_call(g.synthesis, doubled, (codes,))
    with frozen(g), torch.no_grad():
        assert torch.equal(g.synthesis(codes), plain)  # fills the memory
        changed = torch.func.functional_call(g.synthesis, doubled, (codes,))
        assert torch.equal(g.synthesis(codes), plain)
    assert not torch.equal(expected, plain) and torch.equal(changed, expected)
