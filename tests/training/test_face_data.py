import json

import pytest
import torch
from torchvision.utils import save_image

from ifqa_loss.training.face_data import FaceFolder, StepBatchSampler


@pytest.fixture
def faces(tmp_path):
    root = tmp_path / "faces"
    (root / "sub").mkdir(parents=True)
    save_image(torch.rand(3, 40, 40), root / "a.png")
    save_image(torch.rand(3, 80, 80), root / "sub" / "b.png")
    return root


def test_faces_are_resized_and_found_recursively(faces):
    data = FaceFolder(faces, size=32)
    assert data.names == ["a.png", "sub/b.png"]
    assert all(data[i]["image"].shape == (3, 32, 32) for i in range(2))


def test_landmarks_are_scaled_to_the_training_size(faces, tmp_path):
    points = [[10, 10], [30, 10], [20, 20], [12, 30], [28, 30]]
    path = tmp_path / "lm.json"
    path.write_text(json.dumps({"a.png": points, "sub/b.png": [[2 * x + 0.5, 2 * y + 0.5] for x, y in points]}))
    data = FaceFolder(faces, size=20, mask_source="landmarks", landmarks=path)
    assert torch.allclose(data[0]["landmarks"], data[1]["landmarks"], atol=1e-5)
    assert torch.allclose(data[0]["landmarks"][0], torch.tensor([4.75, 4.75]))  # pixel-centre convention


def test_missing_annotations_are_named(faces, tmp_path):
    path = tmp_path / "lm.json"
    path.write_text(json.dumps({"a.png": [[10, 10], [20, 10], [15, 15], [11, 20], [19, 20]]}))
    with pytest.raises(ValueError, match="sub/b.png"):
        FaceFolder(faces, size=32, mask_source="landmarks", landmarks=path)


def test_empty_folder_is_explained(tmp_path):
    with pytest.raises(ValueError, match="no images"):
        FaceFolder(tmp_path)


def test_sampler_resumes_at_any_step_and_ranks_split_the_global_batch():
    full = list(StepBatchSampler(7, batch_size=3, seed=1, total_steps=6))
    assert list(StepBatchSampler(7, batch_size=3, seed=1, total_steps=6, start_step=4)) == full[4:]
    flat = [i for b in full[:7] for i in b]
    assert sorted(flat[:7]) == list(range(7))  # the first epoch visits every face once
    rank0 = StepBatchSampler(7, batch_size=2, seed=1, total_steps=3, rank=0, world_size=2)
    rank1 = StepBatchSampler(7, batch_size=2, seed=1, total_steps=3, rank=1, world_size=2)
    single = StepBatchSampler(7, batch_size=4, seed=1, total_steps=3)
    assert [a + b for a, b in zip(rank0, rank1, strict=True)] == list(single)
