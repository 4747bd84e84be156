"""Peak resident memory of the pytest process tree per test file (psutil), for the opt-in report in conftest.py.

``IFQA_TEST_RSS=rss.csv python -m pytest tests`` writes ``file,peak_tree_rss_mib,peak_main_rss_mib,seconds`` rows
(one per test file, in run order) and a final ``TOTAL`` row: the figure the README's memory claim rests on.
"""
from __future__ import annotations

import csv
import threading
import time

import psutil


def tree_rss(process: psutil.Process) -> tuple[int, int]:
    """(RSS of ``process`` and all its descendants, RSS of ``process`` alone) in bytes."""
    main = process.memory_info().rss
    total = main
    for child in process.children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.Error:  # ended between listing and reading
            pass
    return total, main


class RSSRecorder:
    def __init__(self, path: str, interval: float = 0.02):
        self.path, self.interval = path, interval
        self.process = psutil.Process()
        self.rows: dict[str, list[float]] = {}  # file -> [peak tree, peak main, seconds]
        self.current: str | None = None
        self.started = time.monotonic()
        self.file_started = self.started
        self.total = [0, 0]
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()

    def _sample(self) -> None:
        while not self.stop.wait(self.interval):
            try:
                tree, main = tree_rss(self.process)
            except psutil.Error:
                continue
            with self.lock:
                self.total = [max(self.total[0], tree), max(self.total[1], main)]
                if self.current is not None:
                    row = self.rows.setdefault(self.current, [0, 0, 0.0])
                    row[0], row[1] = max(row[0], tree), max(row[1], main)

    def enter(self, test_file: str) -> None:
        with self.lock:
            if test_file != self.current:
                now = time.monotonic()
                if self.current is not None:
                    self.rows[self.current][2] += now - self.file_started
                self.current, self.file_started = test_file, now
                self.rows.setdefault(test_file, [0, 0, 0.0])

    def finish(self) -> None:
        self.enter("(teardown)")
        self.stop.set()
        self.thread.join()
        mib = 2**20
        with open(self.path, "w", newline="") as fh:
            out = csv.writer(fh)
            out.writerow(["file", "peak_tree_rss_mib", "peak_main_rss_mib", "seconds"])
            for name, (tree, main, seconds) in self.rows.items():
                out.writerow([name, round(tree / mib), round(main / mib), round(seconds, 1)])
            out.writerow(["TOTAL", round(self.total[0] / mib), round(self.total[1] / mib),
                          round(time.monotonic() - self.started, 1)])
