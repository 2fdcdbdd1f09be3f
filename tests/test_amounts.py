"""Edit amounts in the attribute's units: the per-image search for the distance along a boundary."""

import math

import pytest
import torch

from idinvert.attributes.amounts import Amount, attribute_reader, solve_distances
from idinvert.attributes.predictor import AttributePredictor, PredictorConfig
from idinvert.errors import ConfigError

C = 8
DIRECTION = torch.zeros(1, C)
DIRECTION[0, 0] = 1.0


def render(codes: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """'Images' that carry the code's position along the direction (and which image they are)."""
    return torch.stack([codes[:, 0, 0], rows.float()], dim=1)


def linear_age(images: torch.Tensor) -> torch.Tensor:
    return 30.0 + 7.0 * images[:, 0]  # 7 years per unit of d


def test_by_and_to_are_met_per_image():
    codes = torch.randn(5, 1, C)
    solved = solve_distances(linear_age, render, codes, DIRECTION, Amount(by=15.0), attribute="age")
    assert torch.allclose(solved.reached - solved.start, torch.full((5,), 15.0), atol=0.5)
    assert torch.allclose(solved.distances, torch.full((5,), 15.0 / 7.0), atol=0.1)
    assert solved.reachable.all() and all(note is None for note in solved.notes)
    down = solve_distances(linear_age, render, codes, DIRECTION, Amount(to=20.0), attribute="age")
    assert torch.allclose(down.reached, torch.full((5,), 20.0), atol=0.5)
    assert (down.distances < 0).all() or (down.start <= 20.5).any()
    rows = down.report()
    assert len(rows) == 5 and rows[0]["unit"] == "years" and "distance" in rows[0]


def test_an_unreachable_target_is_a_note_with_the_closest_value_not_a_silent_clamp():
    def saturating(images):  # never above 40 years, and it turns back beyond d = 2
        d = images[:, 0]
        return 30.0 + 10.0 * torch.clamp(d, max=1.0) - 3.0 * torch.relu(d - 2.0)

    codes = torch.zeros(3, 1, C)
    solved = solve_distances(saturating, render, codes, DIRECTION, Amount(by=15.0), attribute="age", bound=6.0)
    assert not solved.reachable.any()
    assert all(note and "not reached within |d| = 6" in note for note in solved.notes)
    assert torch.allclose(solved.reached, torch.full((3,), 40.0))  # the closest it got, where it got it
    assert (solved.distances > 0).all() and (solved.distances <= 2.0).all()
    assert solved.report()[0]["reachable"] is False and "note" in solved.report()[0]


def test_probability_targets_and_bad_amounts():
    probability = lambda images: torch.sigmoid(images[:, 0])  # noqa: E731
    codes = torch.zeros(2, 1, C)
    solved = solve_distances(probability, render, codes, DIRECTION, Amount(to=0.9), attribute="smile")
    assert torch.allclose(solved.reached, torch.full((2,), 0.9), atol=0.01)
    assert torch.allclose(solved.distances, torch.full((2,), math.log(9.0)), atol=0.1)
    with pytest.raises(ConfigError, match="outside"):
        solve_distances(probability, render, codes, DIRECTION, Amount(to=1.5), attribute="smile")
    with pytest.raises(ConfigError, match="finite"):
        Amount(by=float("nan"))
    with pytest.raises(ConfigError, match="either"):
        Amount(by=1.0, to=0.5)
    with pytest.raises(ConfigError, match="positive"):
        solve_distances(probability, render, codes, DIRECTION, Amount(to=0.9), attribute="smile", bound=float("inf"))


def test_only_searching_images_are_rendered():
    seen = []

    def counting(codes, rows):
        seen.append(len(rows))
        return render(codes, rows)

    codes = torch.zeros(4, 1, C)
    codes[0, 0, 0] = 15.0 / 7.0  # already 15 years older than the others' start
    solve_distances(linear_age, counting, codes, DIRECTION, Amount(to=45.0), attribute="age")
    assert seen[0] == 4 and max(seen[1:]) == 3


def test_the_reader_speaks_the_attribute_units():
    predictor = AttributePredictor(PredictorConfig(resolution=16, channels=(4, 8))).eval()
    images = torch.rand(3, 3, 16, 16) * 2 - 1
    p = attribute_reader(predictor, "smile")(images)
    assert ((p >= 0) & (p <= 1)).all()
    beard = attribute_reader(predictor, "beard")(images)
    assert torch.allclose(beard, 1 - torch.sigmoid(predictor.score(images, "No_Beard")), atol=1e-6)
    with pytest.raises(ConfigError, match="no 'wings'"):
        attribute_reader(predictor, "wings")


def test_the_reader_goes_through_the_packs_calibration():
    predictor = AttributePredictor(PredictorConfig(resolution=16, channels=(4, 8))).eval()
    images = torch.rand(3, 3, 16, 16) * 2 - 1
    raw_smile = predictor.score(images, "Smiling")
    raw_age = predictor.score(images, "age")
    predictor.calibration = {"Smiling": (2.0, -0.5), "age": (1.5, 3.0)}
    assert torch.allclose(attribute_reader(predictor, "smile")(images), torch.sigmoid(2.0 * raw_smile - 0.5), atol=1e-6)
    assert torch.allclose(attribute_reader(predictor, "age")(images), 1.5 * raw_age + 3.0, atol=1e-4)
    assert torch.allclose(predictor.score(images, "Smiling"), raw_smile)  # raw scores (boundary labels) stay raw
    assert torch.allclose(attribute_reader(predictor, "smile", calibrated=False)(images), torch.sigmoid(raw_smile),
                          atol=1e-6)
