"""Peak resident memory of the pytest process tree per test file (psutil), for the opt-in report in conftest.py.

``IFQA_TEST_RSS=rss.csv python -m pytest tests`` samples RSS every 50 ms and PSS every 0.5 s, and writes
``file,peak_tree_pss_mib,peak_tree_rss_mib,peak_main_rss_mib,seconds`` rows (one per test file, in run order)
and a final ``TOTAL`` row: the figures the README's memory claim rests on. PSS (proportional set size) splits
pages shared between processes among them, so the tree's PSS is the memory the tree really holds; the summed RSS
counts shared pages (a forked child's inherited ones, every process's torch libraries) again: an upper bound.
"""
from __future__ import annotations

import csv
import threading
import time

import psutil


def _pss_rss(process: psutil.Process, with_pss: bool = True) -> tuple[int, int]:
    if not with_pss:  # /proc/PID/statm only: cheap enough to read every few milliseconds
        return 0, process.memory_info().rss
    try:
        info = process.memory_full_info()
        return getattr(info, "pss", info.rss), info.rss
    except psutil.AccessDenied:
        rss = process.memory_info().rss
        return rss, rss


def tree_memory(process: psutil.Process, with_pss: bool = True) -> tuple[int, int, int]:
    """(PSS and RSS of ``process`` and all its descendants, RSS of ``process`` alone) in bytes; PSS is 0 when
    ``with_pss`` is False (reading it walks every mapping of every process: slow for a multi-GB process)."""
    pss, main = _pss_rss(process, with_pss)
    totals = [pss, main]
    for child in process.children(recursive=True):
        try:
            for i, value in enumerate(_pss_rss(child, with_pss)):
                totals[i] += value
        except psutil.Error:  # ended between listing and reading
            pass
    return totals[0], totals[1], main


class RSSRecorder:
    def __init__(self, path: str, interval: float = 0.05):
        self.path, self.interval = path, interval
        self.process = psutil.Process()
        self.rows: dict[str, list[float]] = {}  # file -> [peak tree PSS, peak tree RSS, peak main RSS, seconds]
        self.current: str | None = None
        self.started = time.monotonic()
        self.file_started = self.started
        self.total = [0, 0, 0]
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()

    def _sample(self) -> None:
        tick = 0
        while not self.stop.wait(self.interval):
            tick += 1
            try:  # RSS every interval, PSS every tenth (its cost slowed the suite by ~20% at every tick)
                sample = tree_memory(self.process, with_pss=tick % 10 == 0)
            except psutil.Error:
                continue
            with self.lock:
                self.total = [max(a, b) for a, b in zip(self.total, sample, strict=True)]
                if self.current is not None:
                    row = self.rows.setdefault(self.current, [0, 0, 0, 0.0])
                    row[:3] = [max(a, b) for a, b in zip(row[:3], sample, strict=True)]

    def enter(self, test_file: str) -> None:
        with self.lock:
            if test_file != self.current:
                now = time.monotonic()
                if self.current is not None:
                    self.rows[self.current][3] += now - self.file_started
                self.current, self.file_started = test_file, now
                self.rows.setdefault(test_file, [0, 0, 0, 0.0])

    def finish(self) -> None:
        self.enter("(teardown)")
        self.stop.set()
        self.thread.join()
        mib = 2**20
        with open(self.path, "w", newline="") as fh:
            out = csv.writer(fh)
            out.writerow(["file", "peak_tree_pss_mib", "peak_tree_rss_mib", "peak_main_rss_mib", "seconds"])
            for name, (pss, rss, main, seconds) in self.rows.items():
                out.writerow([name, round(pss / mib), round(rss / mib), round(main / mib), round(seconds, 1)])
            out.writerow(["TOTAL", *(round(v / mib) for v in self.total), round(time.monotonic() - self.started, 1)])


# Also usable as a plugin on another checkout: IFQA_TEST_RSS=out.csv python -m pytest -p rss ... (with this
# folder on PYTHONPATH); tests/conftest.py wires the same recorder in for this repository.
_plugin_recorder: RSSRecorder | None = None


def pytest_configure(config):
    import os

    global _plugin_recorder
    if os.environ.get("IFQA_TEST_RSS") and config.pluginmanager.has_plugin("rss"):
        _plugin_recorder = RSSRecorder(os.environ["IFQA_TEST_RSS"])


def pytest_runtest_logstart(nodeid, location):
    if _plugin_recorder is not None:
        _plugin_recorder.enter(nodeid.split("::")[0])


def pytest_sessionfinish(session, exitstatus):
    if _plugin_recorder is not None:
        _plugin_recorder.finish()
