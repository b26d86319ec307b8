"""Peak resident memory of this process over a block of work, sampled in a thread."""
from __future__ import annotations

import os
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from collections.abc import Iterator

_PAGE = os.sysconf("SC_PAGE_SIZE")


def release_free_memory() -> None:
    """Hand freed heap pages back to the OS (glibc keeps them otherwise), so RSS means "in use"."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


@contextmanager
def older_objects_frozen() -> Iterator[None]:
    """While inside, the collector in ``release_free_memory`` looks only at objects made inside:
    what existed before (a whole program's, or a test session's, objects) is set aside with
    ``gc.freeze``. Block-by-block quantization collects once per block, and a full collection
    over a large process took half of a quantization's time."""
    import gc

    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


@contextmanager
def large_frees_to_os(threshold: int = 1 << 20) -> Iterator[bool]:
    """While inside, serve allocations of ``threshold`` bytes or more with their own mappings,
    returned to the OS on free (glibc ``mallopt(M_MMAP_THRESHOLD)``; yields False where glibc is
    not the allocator). Layer-by-layer calibration allocates and frees many 1-50 MB temporaries;
    from the heap they fragment it, and on SmolLM2 the resident peak was ~250 MB above what was
    live. On exit the threshold goes to 32 MiB, the ceiling of glibc's own sliding threshold
    (where a long-running torch process ends up anyway): leaving it at 1 MiB made later int8
    kernels that allocate per call 2.5x slower."""
    ok = _mallopt_mmap_threshold(threshold)
    try:
        yield ok
    finally:
        if ok:
            _mallopt_mmap_threshold(32 << 20)


def _mallopt_mmap_threshold(value: int) -> bool:
    import ctypes

    try:
        return bool(ctypes.CDLL("libc.so.6").mallopt(-3, value))  # M_MMAP_THRESHOLD = -3
    except (OSError, AttributeError):
        return False


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE


@dataclass
class PeakRSS:
    start: int = 0
    peak: int = 0

    @property
    def growth(self) -> int:
        """Peak above the resident size at the start."""
        return max(0, self.peak - self.start)


@contextmanager
def track_peak_rss(interval_s: float = 0.01) -> Iterator[PeakRSS]:
    result = PeakRSS(rss_bytes(), rss_bytes())
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            result.peak = max(result.peak, rss_bytes())
            time.sleep(interval_s)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield result
    finally:
        stop.set()
        thread.join()
        result.peak = max(result.peak, rss_bytes())


def available_bytes() -> int | None:
    """MemAvailable from /proc/meminfo: what the kernel can hand out without swapping."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def calibration_working_set(samples: int, context: int, hidden: int, widest: int) -> int:
    """Bytes the calibrated layer-by-layer pass adds on top of the loaded model, roughly: one
    block's float32 input and output hidden states for every calibration window, the widest
    Linear input captured for its statistics, and as much again for the block's own forward
    temporaries (attention, MLP). Measured on SmolLM2 (128 x 512 windows): GPTQ grew about 1 GB
    over the loaded model, AWQ about 1.4 GB; this estimate gives 1.3 GiB."""
    tokens = samples * context
    return 4 * tokens * (2 * hidden + widest) * 2
