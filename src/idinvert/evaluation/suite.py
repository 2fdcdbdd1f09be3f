"""The paper's evaluation of one model pack on one set of held-out real images, resumable.

``Evaluation(pack, images, config, ...).run()`` produces, on the same images:

1. **Table 1** — for each inversion method (conventional encoder, domain-guided encoder,
   MSE-based optimisation from a random code for each step count, in-domain inversion): time per
   image, MSE, PSNR, SSIM, LPIPS (VGG), identity similarity (dlib), and FID/SWD of the
   reconstructions against the real images.
2. **Table 2** — FID/SWD of codes halfway between the inverted codes of random pairs
   (interpolation) and of codes moved by ±d along each boundary (manipulation), for the
   MSE-based baseline with the most steps vs in-domain inversion.
3. **λ_dom ablation (Fig. 9)** — in-domain inversion with each λ_dom: reconstruction MSE/LPIPS
   vs interpolation FID/SWD.
4. **Edit quality** — ``editquality.edit_quality`` for each boundary and each direction of the pack
   (``idinvert directions``), on the in-domain codes and the codes of the MSE baseline with the most
   steps side by side, with LEC (edit, re-invert with the same method, edit back) on the first
   ``lec_count`` images.
5. **Fig. 3** — precision–recall of attributes read off the codes (``codes.boundary_projection``)
   against ground-truth labels, or the predictor's labels of the real photos.

Each part is a small function of one ``Evaluation`` (the shared context), registered under its key in
``results.json`` (``PARTS``, in the order they run: the registry of stylegan2-ada's ``metric_main``).
Every expensive part goes through a ``cache.Cache`` under a fingerprint of everything it depends on
(pack weights, images, settings), so an interrupted run resumes where it stopped and parts
shared between tables (the in-domain codes of Table 1 and of λ_dom = 2) run once. The library
never touches paths: the command line supplies a cache backed by the output folder.
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterator

import torch

from ..attributes import boundary_sign
from ..attributes.predictor import EDIT_NAMES, AttributePredictor
from ..boundaries import Boundary
from ..engine.inversion import InversionConfig, invert
from ..engine.refine import pack_refine_config
from ..engine.tuned import synthesize
from ..errors import ConfigError, IdinvertError
from ..metrics.fid import GaussianStatistics
from ..metrics.identity import require_dlib
from .cache import Cache, MemoryCache, ProgressFactory, digest, module_digest, no_progress, tensor_digest
from .codes import boundary_layers, boundary_projection, manipulation_codes, midpoints, random_pairs
from .distances import FeatureExtractor, RealReference, SetComparison
from .editquality import attribute_scores, edit_quality, latent_editing_consistency
from .labels import binarize, labels_from_rows, predictor_labels
from .ranking import precision_recall_curve
from .reconstruction import PairScores, available_pair_metrics, pair_metrics
from .refinement import pti_comparison

METHOD_KINDS = ("conventional", "encoder", "mse", "in-domain")
METRIC_SKIPS = ("fid", "swd", "lpips", "id")  # metrics that --skip can leave out
PART_SKIPS = ("interpolation", "manipulation", "ablation", "edits", "directions", "lec", "pr")  # --skip parts
SKIPPABLE = METRIC_SKIPS + PART_SKIPS
RESULTS_FORMAT = "idinvert-evaluation"
DISTANCES_VERSION = 2  # in the fingerprints of cached FID/SWD parts; 2 added KID (older entries are recomputed)


@dataclass(frozen=True)
class EvaluationConfig:
    """What ``idinvert evaluate`` runs; the defaults are the paper's settings."""

    methods: tuple[str, ...] = METHOD_KINDS  # Table 1 rows (conventional only when the pack has that encoder)
    steps: int = 100  # T of in-domain inversion (the paper's 100-step speed setting)
    steps_mse: tuple[int, ...] = (100, 1000)  # T of the MSE-based baseline, one Table 1 row each
    lr: float = 0.01  # Adam learning rate of every optimisation
    lambda_dom: float = 2.0  # λ_dom of Eq. 4 in the in-domain rows
    lambda_dom_ablation: tuple[float, ...] = (0.0, 2.0, 40.0)  # λ_dom values of Fig. 9
    pairs: int = 100  # random pairs of the interpolation column
    edit_distance: float = 3.0  # d of the manipulation column (edits at −d and +d)
    edit_distances: tuple[float, ...] = (-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0)  # the edit-quality sweep
    lec_count: int = 8  # images of LEC (each boundary and direction re-inverts them once per method)
    boundaries: tuple[str, ...] | None = None  # boundary names to use; None = every one in the pack
    skip: frozenset[str] = frozenset()  # metrics and parts left out (SKIPPABLE)
    batch_size: int = 1  # images inverted together (random initial codes are drawn per batch)
    metric_batch: int = 8  # images per batch when synthesising and measuring (LPIPS-VGG memory at 256 px)
    seed: int = 0  # random initial codes, pairs, SWD patches and directions
    examples: int = 8  # images shown in the example grids
    refine_steps: int = 0  # PTI steps of the pivotal-tuning rows (0 = no PTI rows; PTI's own default is 350)
    refine_batch: int = 8  # images tuned together in the PTI rows

    def __post_init__(self) -> None:
        bad = [m for m in self.methods if m not in METHOD_KINDS]
        if bad or not self.methods:
            raise ConfigError(f"methods must be some of {', '.join(METHOD_KINDS)}; got {', '.join(bad) or 'none'}")
        unknown = sorted(set(self.skip) - set(SKIPPABLE))
        if unknown:
            raise ConfigError(f"cannot skip {', '.join(unknown)}; choose from {', '.join(SKIPPABLE)}")
        if self.steps < 0 or any(t < 0 for t in self.steps_mse) or ("mse" in self.methods and not self.steps_mse):
            raise ConfigError("step counts must be ≥ 0, with at least one for the MSE baseline")
        if self.refine_steps < 0 or self.refine_batch < 1:
            raise ConfigError("refine_steps must be ≥ 0 and refine_batch ≥ 1")
        if self.pairs < 1 or self.batch_size < 1 or self.metric_batch < 1 or self.examples < 0 or self.lec_count < 1:
            raise ConfigError("pairs, batch sizes and the LEC count must be ≥ 1 and examples ≥ 0")
        if len(self.edit_distances) < 2 or len(set(self.edit_distances)) != len(self.edit_distances):
            raise ConfigError("the edit-quality sweep needs at least two different distances")
        if not (math.isfinite(self.edit_distance) and self.edit_distance > 0):
            raise ConfigError("the edit distance d (edits at ±d, LEC at +d) must be a positive number")
        if any(v < 0 for v in self.lambda_dom_ablation) or self.lambda_dom < 0:
            raise ConfigError("λ_dom values must be ≥ 0")

    def uses(self, name: str) -> bool:
        return name not in self.skip


# --- what runs --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class MethodSpec:
    """One Table 1 row: a results key, its label and the inversion it runs."""

    key: str  # e.g. "mse-1000"
    label: str  # e.g. "MSE optimisation (1000 steps)"
    config: InversionConfig


def table1_methods(pack, config: EvaluationConfig) -> tuple[list[MethodSpec], list[str]]:
    """The Table 1 rows this pack can run, and notes on the ones it cannot."""
    rows, notes = [], []
    for kind in (k for k in METHOD_KINDS if k in config.methods):  # the paper's row order
        if kind == "conventional":
            if pack.conventional_encoder is None:
                notes.append("conventional encoder: the pack has none (train one with `idinvert train-conventional`)")
                continue
            rows.append(MethodSpec("conventional", "Conventional encoder", InversionConfig(method="conventional")))
        elif kind == "encoder":
            if pack.encoder is None:
                notes.append("domain-guided encoder: the pack has none")
                continue
            rows.append(MethodSpec("encoder", "Domain-guided encoder", InversionConfig(method="encoder")))
        elif kind == "mse":
            for t in config.steps_mse:
                rows.append(MethodSpec(f"mse-{t}", f"MSE optimisation ({t} steps)",
                                       InversionConfig(method="mse", steps=t, lr=config.lr)))
        else:
            if pack.encoder is None:
                notes.append("in-domain inversion: the pack has no encoder")
                continue
            rows.append(MethodSpec("in-domain", f"In-domain inversion ({config.steps} steps)",
                                   InversionConfig(method="in-domain", steps=config.steps, lr=config.lr,
                                                   lambda_dom=config.lambda_dom)))
    return rows, notes


def load_pack_boundaries(pack, names: tuple[str, ...] | None = None) -> dict[str, Boundary]:
    """The pack's boundaries by name (all, or ``names``): ``ModelPack.boundaries``."""
    return pack.boundaries(names)


def load_pack_directions(pack, names: tuple[str, ...] | None = None) -> dict[str, Boundary]:
    """The pack's label-free directions by name (all, or ``names``): ``ModelPack.directions``."""
    return pack.directions(names)


def boundary_output(name: str, boundary: Boundary) -> str:
    """The predictor output a boundary moves: its file's ``predictor_output``, else the edit name's."""
    output = boundary.meta.get("predictor_output")
    return str(output) if isinstance(output, str) and output else EDIT_NAMES.get(name, name)


@dataclass
class EvaluationResult:
    """``results`` is JSON-ready (``results.json``); the tensors feed the figures."""

    results: dict[str, Any]
    codes: dict[str, torch.Tensor]  # method key → [N, L, C] on the CPU
    methods: list[MethodSpec]
    pairs: torch.Tensor | None  # [P, 2] interpolation pairs
    boundaries: dict[str, Boundary] = field(default_factory=dict)
    directions: dict[str, Boundary] = field(default_factory=dict)

class Evaluation:
    """One evaluation run (see the module docstring).

    images ``[N, 3, R, R]`` in [-1, 1] at the pack's resolution; ``label_rows`` one dict per image
    (ground-truth labels, optional); ``predictor``/``boundaries`` enable the attribute parts;
    ``directions`` (label-free, ``ModelPack.directions``) join the edit-quality part;
    ``feature_extractor`` replaces the Inception of FID (tests).

    It is the context every part (``PARTS``) measures with: the images, the cache, the inversions, the
    real set of FID/SWD, and what earlier parts left (``methods``, ``codes``, ``notes``).
    """

    def __init__(self, pack, images: torch.Tensor, config: EvaluationConfig = EvaluationConfig(), *,
                 label_rows: list[dict] | None = None, predictor: AttributePredictor | None = None,
                 boundaries: dict[str, Boundary] | None = None,
                 directions: dict[str, Boundary] | None = None, cache: Cache | None = None,
                 progress: ProgressFactory | None = None, feature_extractor: FeatureExtractor | None = None,
                 log: Callable[[str], None] | None = None) -> None:
        res = pack.resolution
        if images.ndim != 4 or images.shape[1:] != (3, res, res):
            raise ValueError(f"expected images [N, 3, {res}, {res}] in [-1, 1], got {list(images.shape)}")
        if images.shape[0] < 2:
            raise ConfigError("the evaluation needs at least 2 images (FID, SWD and pairs compare sets)")
        if label_rows is not None and len(label_rows) != images.shape[0]:
            raise ValueError(f"{len(label_rows)} label rows for {images.shape[0]} images")
        self.pack, self.images, self.config = pack, images.detach().cpu().float(), config
        self.n = images.shape[0]
        self.label_rows, self.predictor = label_rows, predictor
        self.boundaries = dict(boundaries or {})
        self.directions = dict(directions or {})
        self.cache = cache or MemoryCache()
        self.progress = progress or no_progress
        self.feature_extractor = feature_extractor
        self.log = log or (lambda message: None)
        self.notes: list[str] = []
        self.methods: list[MethodSpec] = []  # the Table 1 rows this pack can run (set by run)
        self.codes: dict[str, torch.Tensor] = {}  # method key → [N, L, C] inverted codes (set by table1)
        self._inversions: dict[str, dict[str, Any]] = {}  # inversion fingerprint → cached entry
        self._reference: RealReference | None = None
        self._warmed = False
        self.data_digest = tensor_digest(self.images)
        self.pack_digest = module_digest(*pack.networks().values())
        self.attr_digest = digest(module_digest(predictor) if predictor is not None else None,
                                  {k: [tensor_digest(b.direction), b.layers] for k, b in self.boundaries.items()},
                                  label_rows)
        self.identity = config.uses("id") and self._identity_available()

    def _identity_available(self) -> bool:
        try:
            require_dlib()
        except IdinvertError as exc:
            self.notes.append(f"identity similarity skipped: {exc}")
            return False
        return True

    def cached(self, key: str, fingerprint: str, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        value = self.cache.load(key, fingerprint)
        if value is not None:
            self.log(f"{key}: reused from an earlier run")
            return value
        value = compute()
        self.cache.store(key, fingerprint, value)
        return value

    def images_of(self, codes: torch.Tensor) -> Iterator[torch.Tensor]:
        """Images of codes ``[M, L, C]`` in batches, clipped to [-1, 1], on the pack's device."""
        for chunk in codes.split(self.config.metric_batch):
            yield synthesize(self.pack.generator, chunk, batch_size=self.config.metric_batch).clamp(-1, 1)

    def invert(self, config: InversionConfig, desc: str) -> dict[str, Any]:
        """Codes and timing of one inversion of the images (cached by its settings)."""
        fp = digest("invert", self.pack_digest, self.data_digest, asdict(config), self.config.batch_size,
                    self.config.seed)
        if fp in self._inversions:
            return self._inversions[fp]
        key = f"invert-{config.method}-{fp[:12]}"

        def compute() -> dict[str, Any]:
            self.warm_up()
            bs = self.config.batch_size
            steps = config.steps if config.optimises else 0
            with self.progress(desc, ((self.n + bs - 1) // bs) * steps) as bar:
                result = invert(self.images, self.pack, config, batch_size=bs,
                                rng=torch.Generator().manual_seed(self.config.seed),
                                callback=lambda b, s, losses: bar.update(1))
            return {"codes": result.codes.float().cpu(), "seconds": result.seconds,
                    "seconds_per_image": result.seconds / self.n, "device": str(self.pack.device),
                    "batch_size": bs, "steps": steps, "fingerprint": fp}

        entry = self.cached(key, fp, compute)
        entry["fingerprint"] = fp
        self._inversions[fp] = entry
        return entry

    def warm_up(self) -> None:
        """One untimed step on one image first, so that no row's time includes one-off set-up
        (CUDA context, cuDNN autotuning, lazy allocations)."""
        if self._warmed:
            return
        method = "in-domain" if self.pack.encoder is not None else "mse"
        invert(self.images[:1], self.pack, InversionConfig(method=method, steps=1, lr=self.config.lr))
        self._warmed = True

    def reference(self) -> RealReference | None:
        """The real set for FID/SWD (None when both are skipped); real statistics cached."""
        fid, swd = self.config.uses("fid"), self.config.uses("swd")
        if not (fid or swd):
            return None
        if self._reference is None:
            stats = features = None
            if fid:
                fp = digest("real-statistics", DISTANCES_VERSION, self.data_digest, self.feature_extractor is None)

                def compute() -> dict[str, Any]:
                    with self.progress("real-set Inception features", self.n) as bar:
                        ref = RealReference(self.images, fid=True, swd=False, device=self.pack.device,
                                            feature_extractor=self.feature_extractor, progress=bar.update)
                    s = ref.real_stats
                    return {"count": s.count, "mean": s.mean, "scatter": s.scatter, "features": ref.real_features}

                entry = self.cached("real-statistics", fp, compute)
                stats = GaussianStatistics()
                stats.count = int(entry["count"])
                stats.mean, stats.scatter = entry["mean"].double(), entry["scatter"].double()
                features = entry["features"]
            self._reference = RealReference(self.images, fid=fid, swd=swd, seed=self.config.seed,
                                            device=self.pack.device, feature_extractor=self.feature_extractor,
                                            real_stats=stats, real_features=features)
        return self._reference

    def compare(self, batches: Iterator[torch.Tensor]) -> dict[str, Any]:
        ref = self.reference()
        assert ref is not None
        session = ref.comparison()
        for batch in batches:
            session.update(batch)
        return session.compute().to_dict()

    def pair_names(self, identity: bool) -> tuple[str, ...]:
        return available_pair_metrics(self.pack.resolution, lpips=self.config.uses("lpips"), identity=identity)

    def reconstruction(self, codes: torch.Tensor, *, identity: bool, distances: bool, desc: str) -> dict[str, Any]:
        """Paired metrics of G(codes) against the images, and FID/SWD when ``distances``."""
        names = self.pair_names(identity)
        scores = PairScores()
        ref = self.reference() if distances else None
        session: SetComparison | None = ref.comparison() if ref is not None else None
        with self.progress(desc, self.n) as bar:
            for lo, fake in zip(range(0, self.n, self.config.metric_batch), self.images_of(codes)):
                real = self.images[lo:lo + fake.shape[0]].to(fake.device)
                for name, values in pair_metrics(real, fake, names).items():
                    scores.add(name, values)
                if session is not None:
                    session.update(fake)
                bar.update(fake.shape[0])
        out: dict[str, Any] = {"metrics": scores.summary()}
        if session is not None:
            out["distribution"] = session.compute().to_dict()
        return out

    @functools.cached_property
    def pairs(self) -> torch.Tensor:
        """``[P, 2]`` random pairs of images (seeded by the config), for the interpolation columns."""
        return random_pairs(self.n, self.config.pairs, generator=torch.Generator().manual_seed(self.config.seed))

    def run(self) -> EvaluationResult:
        """Every registered part (``PARTS``) in turn, on this context."""
        c = self.config
        self.methods, notes = table1_methods(self.pack, c)
        self.notes.extend(notes)
        if not self.methods:
            raise ConfigError("none of the chosen --methods can run with this pack")
        results: dict[str, Any] = {"format": RESULTS_FORMAT, "version": 1,
                                   "images": {"count": self.n, "resolution": self.pack.resolution},
                                   "settings": {**asdict(c), "skip": sorted(c.skip)}}
        for key, measure in PARTS.items():
            value = measure(self)
            if value is not None:
                results[key] = value
        results["notes"] = list(self.notes)
        return EvaluationResult(results=results, codes=dict(self.codes), methods=self.methods, pairs=self.pairs,
                                boundaries=dict(self.boundaries), directions=dict(self.directions))


# --- the parts: results key → a function of the evaluation, in the order they run (stylegan2-ada's metric_main) ---

Part = Callable[[Evaluation], "dict[str, Any] | None"]
PARTS: dict[str, Part] = {}


def part(key: str) -> Callable[[Part], Part]:
    """Register a part under its ``results.json`` key (None from a part: nothing to report)."""
    def register(measure: Part) -> Part:
        PARTS[key] = measure
        return measure
    return register


@part("table1")
def table1(ev: Evaluation) -> dict[str, Any]:
    """Table 1: every method inverts the images; reconstruction metrics and time per image."""
    rows = []
    for spec in ev.methods:
        entry = ev.invert(spec.config, f"Table 1: {spec.label}")
        ev.codes[spec.key] = entry["codes"]
        rows.append(table1_row(ev, spec, entry))
    return {"rows": rows, "count": ev.n}


@part("table2")
def table2(ev: Evaluation) -> dict[str, Any]:
    """Table 2: interpolation and manipulation FID/SWD."""
    return {"interpolation": interpolation(ev), "manipulation": manipulation(ev)}


@part("ablation")
def ablation(ev: Evaluation) -> dict[str, Any]:
    """Fig. 9: in-domain inversion with each λ_dom, its reconstruction against its interpolation."""
    c = ev.config
    if not c.uses("ablation"):
        return {"skipped": "--skip ablation"}
    if ev.pack.encoder is None:
        ev.notes.append("λ_dom ablation skipped: the pack has no encoder")
        return {"skipped": "the pack has no encoder"}
    interpolate = c.uses("interpolation") and (c.uses("fid") or c.uses("swd"))
    rows = []
    for value in c.lambda_dom_ablation:
        config = InversionConfig(method="in-domain", steps=c.steps, lr=c.lr, lambda_dom=value)
        entry = ev.invert(config, f"ablation: λ_dom = {value:g}")
        fp = digest("ablation", entry["fingerprint"], sorted(c.skip), c.seed, ev.feature_extractor is None)
        measured = ev.cached(f"ablation-{fp[:12]}", fp, lambda: ev.reconstruction(
            entry["codes"], identity=False, distances=False, desc=f"ablation metrics: λ_dom = {value:g}"))
        row = {"lambda_dom": value, "seconds_per_image": entry["seconds_per_image"], **measured}
        if interpolate:
            row["interpolation"] = interpolation_distance(ev, entry["codes"], ev.pairs, f"λ_dom = {value:g}")
        rows.append(row)
    return {"steps": c.steps, "pairs": ev.pairs.shape[0] if interpolate else 0, "rows": rows}


@part("edit_quality")
def edits(ev: Evaluation) -> dict[str, Any]:
    """Edit quality of every boundary and direction, for the in-domain and the MSE codes side by side."""
    c = ev.config
    if not c.uses("edits"):
        return {"skipped": "--skip edits"}
    edits = {"attributes": ev.boundaries, "directions": ev.directions if c.uses("directions") else {}}
    if not any(edits.values()):
        ev.notes.append("edit quality skipped: the pack has no boundaries or directions")
        return {"skipped": "the pack has no boundaries or directions"}
    specs = table2_methods(ev.methods)
    if not specs:
        ev.notes.append("edit quality skipped: it compares the in-domain and MSE codes, which --methods left out")
        return {"skipped": "no in-domain or MSE codes"}
    if ev.predictor is None:
        ev.notes.append("edit quality: attribute changes left out (the pack has no attribute predictor)")
    lec = c.uses("lec")
    out: dict[str, Any] = {"distances": sorted(c.edit_distances), "methods": {s.key: s.label for s in specs},
                           "lec": ({"distance": c.edit_distance, "count": min(c.lec_count, ev.n)} if lec
                                   else {"skipped": "--skip lec"}),
                           "attributes": {}, "directions": {}}
    for kind, named in edits.items():
        for name, boundary in named.items():
            output = boundary_output(name, boundary) if kind == "attributes" else None
            if ev.predictor is not None and output is not None and output not in ev.predictor.names:
                ev.notes.append(f"edit quality of {name!r}: the predictor has no output {output!r}")
                output = None
            out[kind][name] = {spec.key: one_edit_quality(ev, spec, kind, name, boundary, output) for spec in specs}
    return out


@part("attribute_pr")
def attribute_pr(ev: Evaluation) -> dict[str, Any]:
    """Fig. 3: precision–recall of each attribute read off the codes, against labels or the predictor."""
    skipped = _attribute_note(ev, "pr", need_predictor=False)
    if skipped:
        return skipped
    outputs = {name: boundary_output(name, b) for name, b in ev.boundaries.items()}
    truth = labels_from_rows(ev.label_rows, set(outputs.values())) if ev.label_rows else {}
    out: dict[str, Any] = {"attributes": {}}
    for name, boundary in ev.boundaries.items():
        output, direction = outputs[name], boundary_sign(name)
        if output in truth:
            labels, threshold = binarize(output, truth[output])
            source = "ground truth"
        elif ev.predictor is not None and output in ev.predictor.names:
            predicted = _real_predictions(ev)[:, ev.predictor.names.index(output)]
            labels, threshold = predictor_labels(output, predicted)
            source = "predictor"
        else:
            ev.notes.append(f"Fig. 3 for {name!r}: no labels for {output!r} and no predictor output; skipped")
            continue
        known = ~torch.isnan(labels)
        entry: dict[str, Any] = {"output": output, "label_source": source, "threshold": threshold,
                                 "count": int(known.sum()), "positives": int(labels[known].sum()), "methods": {}}
        for spec in ev.methods:
            scores = direction * boundary_projection(ev.codes[spec.key][known], boundary)
            entry["methods"][spec.key] = precision_recall_curve(scores, labels[known]).to_dict()
        if entry["positives"] in (0, entry["count"]):
            ev.notes.append(f"Fig. 3 for {name!r}: all {entry['count']} images have the same label; AP undefined")
        out["attributes"][name] = entry
    return out


@part("pti")
def pti(ev: Evaluation) -> dict[str, Any] | None:
    """Pivotal tuning from the in-domain and the MSE pivots: reconstruction and ±d edits, tuned vs not
    (with ``refine_steps`` > 0)."""
    c = ev.config
    if c.refine_steps <= 0:
        return None
    specs = table2_methods(ev.methods)
    config = pack_refine_config(ev.pack, steps=c.refine_steps)  # the pack's tuning defaults, as the CLI's
    boundaries = {}
    for name, boundary in ev.boundaries.items():
        output = boundary_output(name, boundary)
        known = ev.predictor is not None and output in ev.predictor.names
        boundaries[name] = (boundary, boundary_layers(boundary, ev.pack.code_shape[0]),
                            output if known else None, boundary_sign(name))

    def cached(key: str, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        fp = digest("pti", 1, tensor_digest(ev.codes[key]), ev.data_digest, ev.pack_digest, ev.attr_digest,
                    asdict(config), c.refine_batch, c.edit_distance, ev.identity, sorted(c.skip), c.seed)
        return ev.cached(f"pti-{key}", fp, compute)

    return pti_comparison(ev.pack, ev.images, {s.key: (s.label, ev.codes[s.key]) for s in specs}, config,
                          pair_names=ev.pair_names(ev.identity), boundaries=boundaries,
                          predictor=ev.predictor, distance=c.edit_distance, batch_size=c.refine_batch,
                          metric_batch=c.metric_batch, lpips=c.uses("lpips") and ev.pack.resolution >= 32,
                          identity=ev.identity, seed=c.seed, progress=ev.progress, cached=cached)


# --- what the parts share ------------------------------------------------------------------------------

def table1_row(ev: Evaluation, spec: MethodSpec, entry: dict[str, Any]) -> dict[str, Any]:
    """One method's row: paired metrics and FID/SWD of its reconstructions, with its time per image."""
    c = ev.config
    fp = digest("table1", DISTANCES_VERSION, entry["fingerprint"], ev.identity, sorted(c.skip), c.seed,
                c.metric_batch, ev.feature_extractor is None)
    measured = ev.cached(f"table1-{spec.key}", fp, lambda: ev.reconstruction(
        entry["codes"], identity=ev.identity, distances=True, desc=f"Table 1 metrics: {spec.label}"))
    return {"key": spec.key, "label": spec.label, "method": spec.config.method, "steps": entry["steps"],
            "seconds_per_image": entry["seconds_per_image"], "device": entry["device"],
            "batch_size": entry["batch_size"], **measured}


def table2_methods(methods: list[MethodSpec]) -> list[MethodSpec]:
    """The methods of Table 2 and the edit parts: the MSE baseline with the most steps, and in-domain inversion."""
    mse = [m for m in methods if m.config.method == "mse"]
    chosen = [max(mse, key=lambda m: m.config.steps)] if mse else []
    return chosen + [m for m in methods if m.config.method == "in-domain"]


def _distances_note(ev: Evaluation, which: str) -> dict[str, Any] | None:
    if not ev.config.uses(which):
        return {"skipped": f"--skip {which}"}
    if not (ev.config.uses("fid") or ev.config.uses("swd")):
        return {"skipped": "both FID and SWD are skipped"}
    return None


def interpolation(ev: Evaluation) -> dict[str, Any]:
    """Table 2, interpolation: FID/SWD of the midpoints of random pairs of inverted codes."""
    skipped = _distances_note(ev, "interpolation")
    if skipped:
        return skipped
    out: dict[str, Any] = {"pairs": ev.pairs.shape[0], "methods": {}}
    for spec in table2_methods(ev.methods):
        out["methods"][spec.key] = interpolation_distance(ev, ev.codes[spec.key], ev.pairs, spec.label)
    return out


def interpolation_distance(ev: Evaluation, codes: torch.Tensor, pairs: torch.Tensor, label: str) -> dict[str, Any]:
    c = ev.config
    fp = digest("interpolation", DISTANCES_VERSION, tensor_digest(codes), tensor_digest(pairs), ev.data_digest,
                sorted(c.skip), c.seed, ev.feature_extractor is None)

    def compute() -> dict[str, Any]:
        with ev.progress(f"interpolation: {label}", pairs.shape[0]) as bar:
            def batches():
                for batch in ev.images_of(midpoints(codes, pairs)):
                    bar.update(batch.shape[0])
                    yield batch
            return ev.compare(batches())

    return ev.cached(f"interpolation-{fp[:12]}", fp, compute)


def manipulation(ev: Evaluation) -> dict[str, Any]:
    """Table 2, manipulation: FID/SWD of the codes moved by ±d along each boundary."""
    skipped = _distances_note(ev, "manipulation")
    if skipped:
        return skipped
    if not ev.boundaries:
        ev.notes.append("manipulation column skipped: the pack has no boundaries")
        return {"skipped": "the pack has no boundaries"}
    c = ev.config
    d = c.edit_distance
    out: dict[str, Any] = {"distance": d, "boundaries": sorted(ev.boundaries), "methods": {}}
    for spec in table2_methods(ev.methods):
        codes = ev.codes[spec.key]
        fp = digest("manipulation", DISTANCES_VERSION, tensor_digest(codes), ev.attr_digest, ev.data_digest, d,
                    sorted(c.skip), c.seed, ev.feature_extractor is None)

        def compute(codes=codes, spec=spec) -> dict[str, Any]:
            ref = ev.reference()
            pooled = ref.comparison()
            per_boundary = {}
            with ev.progress(f"manipulation: {spec.label}", 2 * ev.n * len(ev.boundaries)) as bar:
                for name, boundary in ev.boundaries.items():
                    session = ref.comparison()
                    edited = manipulation_codes(codes, boundary, (-d, d)).flatten(0, 1)  # [2N, L, C]
                    for batch in ev.images_of(edited):
                        features = ref.features(batch) if ref.uses_fid else None
                        session.update(batch, features)
                        pooled.update(batch, features)
                        bar.update(batch.shape[0])
                    per_boundary[name] = session.compute().to_dict()
            return {"all": pooled.compute().to_dict(), "per_boundary": per_boundary}

        out["methods"][spec.key] = ev.cached(f"manipulation-{spec.key}", fp, compute)
    return out


def _attribute_note(ev: Evaluation, which: str, need_predictor: bool) -> dict[str, Any] | None:
    title = {"edits": "edit quality", "pr": "Fig. 3 (attributes from codes)"}[which]
    if not ev.config.uses(which):
        return {"skipped": f"--skip {which}"}
    if not ev.boundaries:
        ev.notes.append(f"{title} skipped: the pack has no boundaries")
        return {"skipped": "the pack has no boundaries"}
    if need_predictor and ev.predictor is None:
        ev.notes.append(f"{title} skipped: the pack has no attribute predictor")
        return {"skipped": "the pack has no attribute predictor"}
    return None


def one_edit_quality(ev: Evaluation, spec: MethodSpec, kind: str, name: str, boundary: Boundary,
                     output: str | None) -> dict[str, Any]:
    """One boundary or direction on one method's codes (cached)."""
    c = ev.config
    codes = ev.codes[spec.key]
    lec_count = min(c.lec_count, ev.n) if c.uses("lec") else 0
    fp = digest("edits", 2, tensor_digest(codes), ev.attr_digest, kind, name, tensor_digest(boundary.direction),
                boundary.layers, output, sorted(c.edit_distances), ev.identity, sorted(c.skip), lec_count,
                c.edit_distance, asdict(spec.config), c.batch_size, c.seed)

    def compute() -> dict[str, Any]:
        with ev.progress(f"edit quality: {name} ({spec.key})", ev.n) as bar:
            q = edit_quality(ev.pack.generator, ev.predictor, codes, boundary, attribute=name,
                             output=output, direction=boundary_sign(name) if output else 1.0,
                             distances=c.edit_distances,
                             layers=boundary_layers(boundary, ev.pack.code_shape[0]),
                             lpips=c.uses("lpips") and ev.pack.resolution >= 32, identity=ev.identity,
                             batch_size=c.metric_batch, progress=bar.update)
        if lec_count:
            with ev.progress(f"LEC: {name} ({spec.key})", lec_count) as bar:
                def reinvert(images: torch.Tensor) -> torch.Tensor:
                    result = invert(images, ev.pack, spec.config, batch_size=c.batch_size,
                                    rng=torch.Generator().manual_seed(c.seed))
                    bar.update(images.shape[0])
                    return result.codes.float().cpu()

                values, size = latent_editing_consistency(ev.pack.generator, codes[:lec_count], boundary,
                                                          c.edit_distance, reinvert, batch_size=c.metric_batch)
            q.lec, q.lec_relative = float(values.mean()), float(values.mean()) / max(size, 1e-12)
            q.lec_distance, q.lec_count = c.edit_distance, lec_count
        return q.to_dict()

    return ev.cached(f"edits-{kind}-{name}-{spec.key}", fp, compute)


def _real_predictions(ev: Evaluation) -> torch.Tensor:
    fp = digest("predictions", ev.data_digest, ev.attr_digest)

    def compute() -> dict[str, Any]:
        scores = []
        with torch.no_grad():
            for batch in ev.images.split(ev.config.metric_batch):
                scores.append(attribute_scores(ev.predictor, batch.to(ev.pack.device)))
        return {"scores": torch.cat(scores)}

    return ev.cached("real-predictions", fp, compute)["scores"]


def evaluate(pack, images: torch.Tensor, config: EvaluationConfig = EvaluationConfig(), **kwargs) -> EvaluationResult:
    """``Evaluation(pack, images, config, **kwargs).run()``."""
    return Evaluation(pack, images, config, **kwargs).run()


__all__ = ["EvaluationConfig", "Evaluation", "EvaluationResult", "MethodSpec", "evaluate",
           "load_pack_boundaries", "load_pack_directions", "Cache", "MemoryCache"]
