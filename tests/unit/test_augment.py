"""Training augmentation: the mosaic keeps every square whole, from one chip, with its labels."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from instageo.model.data import augment, mosaic_cells


def numbered_batch(chips: int, size: int):
    """Chips whose every value says which chip and pixel it came from."""
    pixel = torch.arange(size * size).view(size, size)
    y = torch.stack([pixel + 10_000 * c for c in range(chips)])
    x = torch.stack([y[c].expand(2, 3, size, size) for c in range(chips)]).float()  # (N, C, T, H, W)
    return x, y, y % 3 == 0


@settings(max_examples=40, deadline=None)
@given(chips=st.integers(2, 6), size=st.integers(4, 40), cells=st.integers(2, 5), seed=st.integers(0, 2**16))
def test_every_square_of_the_mosaic_is_one_chips_pixels_with_their_labels(chips, size, cells, seed):
    cells = min(cells, size)
    x, y, valid = numbered_batch(chips, size)
    mx, my, mvalid = mosaic_cells(x, y, valid, cells, torch.Generator().manual_seed(seed))
    assert torch.equal(mx, my[:, None, None].expand_as(mx).float())  # every band and step alike
    assert torch.equal(mvalid, my % 3 == 0)
    pixel = torch.arange(size * size).view(size, size)
    assert torch.equal(my % 10_000, pixel.expand(chips, size, size))  # pixels stay where they were
    source = my // 10_000  # which chip each pixel came from
    edges = [round(i * size / cells) for i in range(cells + 1)]
    for top, bottom in zip(edges, edges[1:]):
        for left, right in zip(edges, edges[1:]):
            square = source[:, top:bottom, left:right].flatten(1)
            assert (square == square[:, :1]).all()  # one chip per square
            assert sorted(square[:, 0].tolist()) == list(range(chips))  # each chip used once per square


def test_no_mosaic_for_one_cell_or_a_batch_of_one():
    x, y, valid = numbered_batch(3, 8)
    generator = torch.Generator().manual_seed(0)
    assert all(torch.equal(a, b) for a, b in zip(mosaic_cells(x[:1], y[:1], valid[:1], 4, generator),
                                                 (x[:1], y[:1], valid[:1])))
    first = augment(x, y, valid, torch.Generator().manual_seed(1))
    again = augment(x, y, valid, torch.Generator().manual_seed(1), mosaic=1)
    assert all(torch.equal(a, b) for a, b in zip(first, again))


def test_the_mosaic_is_the_same_for_the_same_generator_state():
    """Processes under accelerate each draw the batch's mosaic from the same seed."""
    x, y, valid = numbered_batch(5, 16)
    one, two = (augment(x, y, valid, torch.Generator().manual_seed(7), mosaic=4)[1] for _ in range(2))
    assert torch.equal(one, two)
    other = augment(x, y, valid, torch.Generator().manual_seed(8), mosaic=4)[1]
    assert not torch.equal(one, other)


@pytest.mark.parametrize("cells", [0, 17])
def test_the_recipe_bounds_the_mosaic(cells):
    from pydantic import ValidationError

    from instageo.recipe.training import TrainSpec

    with pytest.raises(ValidationError, match="mosaic"):
        TrainSpec(mosaic=cells)
