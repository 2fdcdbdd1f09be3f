"""The engine: inversion, pivotal tuning, rendering, editing, label-free directions, semantic diffusion
and whole data sets, on tensors and model packs.

``inversion`` (the one optimisation loop) ← ``refine`` (PTI) ← ``tuned`` (rendering, by the pack's or
per-image tuned generators); ``editing``, ``directions`` and ``diffusion`` build on them;
``dataset_inversion`` streams a data set into an invert folder (``invert_folder``).
"""
