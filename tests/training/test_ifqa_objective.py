import pytest
import torch

from ifqa_loss.regions import template_regions
from ifqa_loss.training.ifqa_objective import emphasis_map, fprs_swap, swap_mask, weighted_bce_with_logits


def _pair(n=2, size=64):
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 3, size, size, generator=g), torch.rand(n, 3, size, size, generator=g)


def test_fprs_targets_equal_the_swap_mask_and_pixels_follow_their_source():
    real, restored = _pair()
    mask = swap_mask(template_regions(64, batch=2))
    assert set(mask.unique().tolist()) == {0.0, 1.0} and 0 < mask.mean() < 0.2
    real_in, restored_in, real_target, restored_target = fprs_swap(real, restored, mask)
    assert torch.equal(real_target, 1 - mask) and torch.equal(restored_target, mask)
    swapped = mask.bool().expand_as(real)
    assert torch.equal(real_in[swapped], restored[swapped]) and torch.equal(real_in[~swapped], real[~swapped])
    assert torch.equal(restored_in[swapped], real[swapped]) and torch.equal(restored_in[~swapped], restored[~swapped])


def test_swap_mask_covers_exactly_the_named_parts():
    regions = template_regions(64)
    mouth_only = swap_mask(regions, ("mouth",))
    assert torch.equal(mouth_only, (regions["mouth"] > 0.5).float())
    all_parts = swap_mask(regions)
    assert torch.all(all_parts >= mouth_only) and all_parts.sum() > mouth_only.sum()


def test_only_selected_samples_are_swapped():
    mask = swap_mask(template_regions(64, batch=3), swap=torch.tensor([True, False, True]))
    assert mask[0].sum() > 0 and mask[1].sum() == 0 and torch.equal(mask[0], mask[2])


def test_part_probability_drops_parts_per_sample():
    regions = template_regions(64, batch=64)
    mask = swap_mask(regions, part_prob=0.5, generator=torch.Generator().manual_seed(0))
    areas = mask.sum((1, 2, 3))
    assert len(areas.unique()) > 3 and (areas == 0).any()


def test_soft_masks_give_fractional_targets():
    mask = swap_mask(template_regions(64), soft=True)
    assert ((mask > 0) & (mask < 1)).any()


def test_emphasis_weights_primary_pixels():
    regions = template_regions(64)
    weight = emphasis_map(regions, ("eyes", "nose", "mouth"), 4.0)
    inside = swap_mask(regions).bool()
    assert weight[inside].max() == 4.0 and weight[inside].min() > 2.5  # feathered edges blend towards 1
    assert weight[~inside].min() == 1.0 and weight[~inside].median() == 1.0
    logits, target = torch.zeros(1, 1, 64, 64), torch.zeros(1, 1, 64, 64)
    logits[inside] = 3.0  # errors only inside the primary regions
    assert weighted_bce_with_logits(logits, target, weight) > weighted_bce_with_logits(logits, target)


def test_unknown_part_is_named():
    with pytest.raises(ValueError, match="'ears'"):
        swap_mask(template_regions(32), ("ears",))
