import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """Tiny convolutions on a shared 2-core machine run far faster on one thread (no OpenMP spinning)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
