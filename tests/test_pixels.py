"""The encoder's normalisation is open_clip's ToTensor + Normalize bit for bit, whatever the input's layout."""

import numpy as np
import torch
import torchvision.transforms.functional as TF

from cachekit.pixels import normalise_pixels

OPENAI = {"mean": (0.48145466, 0.4578275, 0.40821073), "std": (0.26862954, 0.26130258, 0.27577711)}


def _open_clip(u8: torch.Tensor, pre: dict) -> torch.Tensor:
    """torchvision's ToTensor (a uint8 tensor ``.to(float32).div(255)``) then Normalize."""
    return TF.normalize(u8.to(torch.float32).div(255), pre["mean"], pre["std"])


def test_every_value_in_every_channel_and_layout_equals_to_tensor_then_normalize():
    rng = np.random.default_rng(0)
    every = np.broadcast_to(np.arange(256, dtype=np.uint8).reshape(16, 16), (2, 3, 16, 16))  # each value, each channel
    rand = rng.integers(0, 256, (4, 3, 67, 67), dtype=np.uint8)  # odd sizes: vector tails
    for pre in (OPENAI, {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}, {"mean": [0.1, 0.2, 0.3], "std": [1.0, 2.0, 3.0]}):
        for u8 in (torch.from_numpy(every.copy()), torch.from_numpy(rand),
                   torch.from_numpy(rand).contiguous(memory_format=torch.channels_last),  # a resize's layout
                   torch.from_numpy(rand)[..., 3:60, 5:62],  # a centre crop's view
                   torch.from_numpy(rand).view(2, 2, 3, 67, 67)):  # [V, T, 3, S, S]
            want = _open_clip(u8, pre)
            got = normalise_pixels(u8, pre)
            assert got.dtype == torch.float32 and got.shape == u8.shape
            assert torch.equal(got, want), pre
        assert torch.equal(normalise_pixels(rand, pre), _open_clip(torch.from_numpy(rand), pre))  # numpy in


def test_a_float_input_is_left_as_it_was():
    x = torch.rand(2, 3, 8, 8) * 255
    before = x.clone()
    got = normalise_pixels(x, OPENAI)
    assert torch.equal(x, before)  # it once divided a float32 input in place
    assert torch.equal(got, TF.normalize(x / 255, OPENAI["mean"], OPENAI["std"]))
