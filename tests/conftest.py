from __future__ import annotations

import csv
import os
import tarfile
import warnings
from pathlib import Path

import pytest
import torch

from idinvert.networks.config import EncoderConfig, GeneratorConfig
from idinvert.networks import DomainGuidedEncoder, StyleGANGenerator
from idinvert.pack import save_pack
from idinvert.perceptual import default_perceptual_config

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("IDINVERT_SHARED", REPO.parent / "shared"))
SHARED_DATA = SHARED / "data"

# One intra-op thread: the tests run many small tensor operations, for which one thread is faster,
# and on a busy 2-core machine two OpenMP threads can be 100× slower than one.
torch.set_num_threads(1)

# The slow lane (`-m slow`; the fast lane is `-m "not slow"`) for test files that other work keeps
# changing: "file::function" (every parameter of it) → why it is slow. Tests elsewhere carry
# @pytest.mark.slow themselves. Times: one test on the shared 2-core machine under load.
SLOW = {
    "test_cli_apps.py::test_console_script": "the installed console script in a subprocess (6 s)",
    "test_cli_invert.py::test_bad_image_is_one_line_and_leaves_no_output": "the CLI in a subprocess (4 s)",
    "test_server.py::test_serve_prints_its_address_answers_there_and_cleans_up": "idinvert serve in a subprocess, "
                                                                                  "twice (8 s)",
    "test_refine.py::test_batched_tuning_equals_tuning_each_image_alone": "float64 tuning, batched and alone (3 × 5 s)",
    "test_refine.py::test_edit_refines_photos_on_the_spot_and_a_wrong_pack_is_refused": "aligns and tunes (4 s)",
    "test_photos.py::test_edit_align_pastes_edits_into_the_full_photo": "dlib, inversion and paste-back (5 s)",
    "test_photos.py::test_demo_writes_the_page": "the whole demo (3 s)",
    "test_default_pack.py::test_invert_a_test_photo_without_any_option": "the bundled pack's inversion (3 s)",
    "test_gpu_check.py::test_tiny_check_runs_end_to_end_on_the_cpu": "the device check script end to end (29 s)",
}


def pytest_collection_modifyitems(config, items):
    modules = {}
    for item in items:
        if getattr(item, "module", None) is not None:
            modules[item.path.name] = item.module
        if f"{item.path.name}::{getattr(item, 'originalname', item.name)}" in SLOW:
            item.add_marker(pytest.mark.slow)
    for key in SLOW:  # a renamed test would slip into the fast lane: say so
        file, name = key.split("::")
        if file in modules and not hasattr(modules[file], name):
            warnings.warn(pytest.PytestWarning(f"tests/conftest.py SLOW names {key}, which is gone"))


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory):
    """Converted weights (VGG16, LPIPS) go to a temporary cache, not the user's."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("IDINVERT_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


def tiny_generator_config(resolution: int = 32) -> GeneratorConfig:
    return GeneratorConfig(resolution=resolution, z_dim=32, w_dim=32, mapping_layers=2, mapping_fmaps=32,
                           fmaps_base=512, fmaps_max=32)


def tiny_networks(seed: int = 0, resolution: int = 32):
    torch.manual_seed(seed)
    g = StyleGANGenerator(tiny_generator_config(resolution)).eval()
    e = DomainGuidedEncoder(EncoderConfig(resolution=resolution, num_layers=g.num_layers, w_dim=g.w_dim,
                                          channels_base=8, channels_max=32)).eval()
    # A usable BN state: unit running variance, as after training on normalised data.
    return g, e


@pytest.fixture(scope="session")
def tiny_pack_dir(tmp_path_factory) -> Path:
    g, e = tiny_networks()
    folder = tmp_path_factory.mktemp("packs") / "tiny"
    save_pack(folder, name="tiny", generator=g, encoder=e,
              perceptual_config=default_perceptual_config("torchvision"))
    return folder


@pytest.fixture(scope="session")
def tiny_pack(tiny_pack_dir):
    from idinvert.pack import load_pack

    return load_pack(tiny_pack_dir)


def shared_data(*parts: str) -> Path:
    """A path under ../shared/data, or skip the test with the reason."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"needs {path} (the shared data folder beside the repository; CI always has it)")
    return path


def shared_test_photos(tar_path: Path, labels: Path, count: int, folder: Path) -> list[Path]:
    """The first ``count`` test-split photos (sorted names) of a shared data set."""
    with open(labels, newline="", encoding="utf-8") as f:
        names = sorted(r["file"] for r in csv.DictReader(f)
                       if r["split"] == "test" and r.get("duplicate_of_earlier", "0") != "1")[:count]
    wanted, paths = set(names), []
    with tarfile.open(tar_path) as tar:
        for member in tar:
            if Path(member.name).name in wanted:
                paths.append(folder / Path(member.name).name)
                paths[-1].write_bytes(tar.extractfile(member).read())
    return sorted(paths)


def needs_alignment():
    """Skip unless dlib's face alignment and scikit-image's bundled portrait are available."""
    from idinvert.align import check_alignment_available
    from idinvert.errors import IdinvertError

    try:
        check_alignment_available()
    except IdinvertError as exc:
        pytest.skip(str(exc))
    pytest.importorskip("skimage", reason="the bundled portrait comes from scikit-image")


@pytest.fixture(scope="session")
def units_pack_dir(tiny_pack_dir, tmp_path_factory):
    """The tiny pack with boundaries and a predictor that reads brightness (tests/units_pack.py)."""
    from units_pack import make_units_pack

    return make_units_pack(tiny_pack_dir, tmp_path_factory.mktemp("units") / "tiny-units")


@pytest.fixture(scope="session")
def plain_pack_dir(tiny_pack_dir, tmp_path_factory):
    """The same boundaries without a predictor."""
    from units_pack import make_units_pack

    return make_units_pack(tiny_pack_dir, tmp_path_factory.mktemp("units") / "tiny-plain", predictor=False)

