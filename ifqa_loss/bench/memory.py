"""Peak memory of a block, portably: the CUDA allocator's statistics, or sampled process RSS (psutil) on CPU."""
from __future__ import annotations

import threading

import torch


class SavedForBackward:
    """Bytes of the distinct tensor storages autograd keeps for backward while the block runs, in :attr:`bytes`.

    The same on every device (what the graph holds, not what an allocator caches): on CPU, where
    process RSS is a coarse upper bound, it is the activation memory of a forward + backward; on
    CUDA, a lower bound of the peak (kernels' workspaces and temporaries come on top).

    Example:
        >>> import torch
        >>> x = torch.ones(256, requires_grad=True)
        >>> with SavedForBackward() as saved:
        ...     loss = (x.exp() * 2).sum()    # exp keeps its 256-float output for backward
        >>> saved.bytes
        1024
    """

    def __init__(self):
        self.bytes = 0
        self._storages: dict[int, int] = {}

    def _pack(self, tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        self._storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    def __enter__(self) -> SavedForBackward:
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda tensor: tensor)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc) -> bool:
        self._hooks.__exit__(*exc)
        self.bytes = sum(self._storages.values())
        return False


class PeakMemory:
    """Peak memory above the starting level while the block runs, in :attr:`peak_bytes`.

    CUDA: ``torch.cuda.max_memory_allocated`` (tensors only). CPU: resident set size sampled
    every 2 ms with psutil (includes allocator caches, so it is an upper bound).

    Example:
        >>> with PeakMemory("cpu") as memory:
        ...     block = bytearray(1 << 20)
        >>> memory.peak_bytes >= 0
        True
    """

    def __init__(self, device: str):
        self.device = device
        self.peak_bytes = 0

    def __enter__(self) -> PeakMemory:
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._start = torch.cuda.memory_allocated()
        else:
            import psutil

            self._process = psutil.Process()
            self._start = self._peak = self._process.memory_info().rss
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            self._peak = max(self._peak, self._process.memory_info().rss)

    def __exit__(self, *exc) -> bool:
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            self.peak_bytes = torch.cuda.max_memory_allocated() - self._start
        else:
            self._stop.set()
            self._thread.join()
            self.peak_bytes = max(self._peak, self._process.memory_info().rss) - self._start
        return False
