"""Batched augmentation: shapes, dtypes, determinism, and that each transform does its job."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from nas.train import _augment as aug


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def augment(x: torch.Tensor, config: aug.AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """``config`` applied to an unpadded batch, as the trainer does it: the padding (once per
    dataset there), then :func:`augment_padded`."""
    return aug.augment_padded(aug.pad(x, config.crop_pad, config.pad_mode), config, generator)


@pytest.fixture
def images() -> torch.Tensor:
    # Random content so that any translation or mirror changes the pixels.
    return torch.randint(0, 256, (64, 3, 12, 10), dtype=torch.uint8, generator=_gen(123))


def test_every_transform_keeps_shape_and_dtype(images: torch.Tensor) -> None:
    outs = [
        aug.random_crop(images, 2, _gen()),
        aug.random_crop(images, 3, _gen(), mode="zeros"),
        aug.random_flip(images, _gen()),
        aug.cutout(images, 4, _gen()),
        augment(images, aug.AugmentConfig(crop_pad=2, flip=True, cutout=3), _gen()),
    ]
    for out in outs:
        assert out.shape == images.shape
        assert out.dtype == torch.uint8


def test_same_seed_same_output_other_seed_other_output(images: torch.Tensor) -> None:
    config = aug.AugmentConfig(crop_pad=2, flip=True, cutout=3)
    a = augment(images, config, _gen(1))
    b = augment(images, config, _gen(1))
    c = augment(images, config, _gen(2))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_crop_is_a_window_of_the_padded_image_and_moves_most_images(
    images: torch.Tensor,
) -> None:
    pad = 2
    padded = aug.pad(images, pad, "reflect")
    assert torch.equal(padded, F.pad(images, (pad,) * 4, mode="reflect"))
    out = aug.crop_padded(padded, pad, _gen())
    h, w = images.shape[-2:]
    offsets = set()
    for i in range(images.shape[0]):
        found = [
            (dy, dx)
            for dy in range(2 * pad + 1)
            for dx in range(2 * pad + 1)
            if torch.equal(out[i], padded[i, :, dy : dy + h, dx : dx + w])
        ]
        assert found, f"image {i} is not a window of its padded input"
        offsets.add(found[0])
    # 25 possible offsets, 64 images: many distinct offsets, and most images moved.
    assert len(offsets) > 10
    moved = (out != images).flatten(1).any(1).float().mean().item()
    assert moved > 0.8


def test_zero_padding_brings_in_black_border() -> None:
    white = torch.full((32, 1, 6, 6), 255, dtype=torch.uint8)
    out = aug.random_crop(white, 2, _gen(), mode="zeros")
    assert (out == 0).any()
    # Reflect padding of a constant image is the same constant: nothing black comes in.
    assert torch.equal(aug.random_crop(white, 2, _gen(), mode="reflect"), white)


def test_flip_mirrors_some_images_and_leaves_the_rest(images: torch.Tensor) -> None:
    out = aug.random_flip(images, _gen())
    mirrored = (out == images.flip(-1)).flatten(1).all(1)
    same = (out == images).flatten(1).all(1)
    assert bool((mirrored | same).all())
    assert 10 < int(mirrored.sum()) < 54  # about half of 64


def test_flip_false_never_mirrors(images: torch.Tensor) -> None:
    config = aug.AugmentConfig(crop_pad=0, flip=False, cutout=0)
    assert torch.equal(augment(images, config, _gen()), images)


def test_cutout_zeroes_one_clipped_square_per_image() -> None:
    white = torch.full((50, 2, 10, 10), 255, dtype=torch.uint8)
    size = 4
    out = aug.cutout(white, size, _gen())
    zeros = (out == 0).all(1).flatten(1).sum(1)  # both channels zeroed together
    assert bool((zeros >= (size - size // 2) ** 2).all())  # a corner centre still cuts some
    assert bool((zeros <= size * size).all())
    assert bool((zeros == size * size).any())
    with pytest.raises(aug.AugmentError, match="cutout size"):
        aug.cutout(white, 11, _gen())


def test_normalize_matches_the_formula() -> None:
    x = torch.randint(0, 256, (4, 3, 5, 5), dtype=torch.uint8, generator=_gen())
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    out = aug.normalize(x, mean, std)
    expected = (x.float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(
        1, 3, 1, 1
    )
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, expected)
    assert aug.normalize(x, mean, std, dtype=torch.bfloat16).dtype == torch.bfloat16
    with pytest.raises(aug.AugmentError, match="3 channel values"):
        aug.normalize(x, (0.5,), (0.2,))


def test_normalize_keeps_channels_last() -> None:
    x = torch.zeros(2, 3, 4, 4, dtype=torch.uint8).contiguous(memory_format=torch.channels_last)
    out = aug.normalize(x, (0.5,) * 3, (0.5,) * 3)
    assert out.is_contiguous(memory_format=torch.channels_last)


def test_bad_settings_are_refused() -> None:
    with pytest.raises(aug.AugmentError, match="crop_pad"):
        aug.AugmentConfig(crop_pad=-1)
    with pytest.raises(aug.AugmentError, match="pad_mode"):
        aug.AugmentConfig(pad_mode="wrap")  # type: ignore[arg-type]
    with pytest.raises(aug.AugmentError, match="reflect padding"):
        aug.pad(torch.zeros(1, 1, 3, 3, dtype=torch.uint8), 3, "reflect")
    with pytest.raises(aug.AugmentError, match=r"\(N, C, H, W\)"):
        aug.random_flip(torch.zeros(3, 3, dtype=torch.uint8), _gen())


def test_token_dropout_pads_about_p_of_the_tokens_and_leaves_padding_alone() -> None:
    ids = torch.randint(1, 1000, (256, 40), generator=_gen(1))
    ids[:, 30:] = 0  # every text 30 tokens, then padding
    out = aug.drop_tokens(ids, 0.25, _gen())
    assert out.shape == ids.shape and out.dtype == ids.dtype
    dropped = (out == 0) & (ids != 0)
    assert 0.22 < dropped[:, :30].float().mean().item() < 0.28
    assert torch.equal(out[out != 0], ids[out != 0])  # a kept token is unchanged
    assert (out[:, 30:] == 0).all()
    assert torch.equal(out, aug.drop_tokens(ids, 0.25, _gen()))  # a seed replays
    assert not torch.equal(out, aug.drop_tokens(ids, 0.25, _gen(1)))
    assert aug.drop_tokens(ids, 0.0, _gen()) is ids


def test_token_dropout_never_empties_a_text() -> None:
    ids = torch.zeros(500, 6, dtype=torch.long)
    ids[:, :2] = torch.randint(1, 50, (500, 2), generator=_gen(2))  # two-token texts
    out = aug.drop_tokens(ids, 0.9, _gen())
    assert ((out != 0).sum(dim=1) >= 1).all()
    assert (out[:, 0] == 0).any()  # the first token goes too where the second stays


def test_token_dropout_refuses_images_and_bad_rates() -> None:
    with pytest.raises(aug.AugmentError, match=r"\(N, L\)"):
        aug.drop_tokens(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), 0.1, _gen())
    with pytest.raises(aug.AugmentError, match="token dropout must be in"):
        aug.drop_tokens(torch.ones(2, 4, dtype=torch.long), 1.0, _gen())
