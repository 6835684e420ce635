"""How a latency is measured, once for every stage that measures one: `effnas latency` (tables,
comparisons, the learned predictor, the noise check) and the search's end-to-end check of its
best architectures, which must be timed exactly as the predictor's training data was.

Protocol (EfficientNet Table 4; MnasNet §4): batch 1 on one CPU thread, the process pinned to
that core, `warmup` untimed runs, then `runs` timed forward passes in inference mode; one
measurement is their median. `repeat` re-measures (warm-up included) and keeps the median of
the medians; the spread of those medians (their coefficient of variation) is how far one
measurement can be trusted, and what bounds any predictor checked against one measurement.
"""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RUNTIMES = ("torch", "onnxruntime")


@dataclass(frozen=True)
class Setup:
    """How every measurement of a run is taken (the values are conf/latency.yaml's)."""

    batch: int
    threads: int
    runs: int
    warmup: int
    runtime: str
    device: str
    channels_last: bool
    repeat: int = 1
    # a whole network's BN statistics: "calibrated" (re-estimated on random images before timing,
    # `calibrated_bn`) or "init" (as built: mean 0, variance 1; effnas before 2026-12-05)
    bn: str = "calibrated"


def runtime_missing(runtime: str) -> str | None:
    """Why `runtime` cannot measure here (unknown, or its package not importable), or None."""
    if runtime not in RUNTIMES:
        return f"unknown runtime {runtime!r}; expected one of {', '.join(RUNTIMES)}"
    if runtime == "onnxruntime":
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            return "runtime onnxruntime is not installed here (pip install onnxruntime)"
    return None


def cpu_model() -> str:
    """This machine's CPU model ("AMD EPYC", "Intel(R) Xeon(R) Processor"; "" when unknown)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or ""


def other_cpu(measured_on: Any) -> str | None:
    """This machine's CPU model when `measured_on` (a `machine()` record) names another one; None
    when it is the same or either is unknown."""
    then, now = str((measured_on or {}).get("cpu") or ""), cpu_model()
    return now if then and now and then != now else None


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    import torch

    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    if hasattr(os, "sched_getaffinity"):
        info["affinity"] = sorted(os.sched_getaffinity(0))
    if torch.cuda.is_available():
        info["cuda_device"] = torch.cuda.get_device_name(0)
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        info["onnxruntime"] = None
    return info


# glibc's malloc: blocks this large or larger are mmapped, and freed blocks under it stay in the
# process (not trimmed back to the OS). 32 MiB is the largest threshold glibc accepts on 64-bit.
MMAP_THRESHOLD = 32 * 2**20
TRIM_THRESHOLD = 2**30
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt's parameter numbers (glibc malloc.h)


def steady_allocator() -> bool:
    """Noise control: fix glibc malloc's mmap threshold (`MMAP_THRESHOLD`) and raise its trim
    threshold (`TRIM_THRESHOLD`), so the temporaries of a forward pass (activations, oneDNN
    scratchpads) are reused from the heap instead of mmapped and page-faulted in on every call. Why: by default glibc raises the
    threshold as the process frees large blocks, so whether a 1-10 MB buffer is mmapped depends
    on everything the process allocated before. Measured (benchmarks/latency_malloc.py, 2-core
    AMD EPYC VM, torch 2.13 CPU, one thread): one architecture of the default space with dense
    3x3 convolutions ran 40-57 ms with 6,400-11,700 minor page faults per forward in four fresh
    processes, and 24-26 ms with 0 faults in three with the threshold fixed; the same
    architecture had measured 25 ms in one --check-predictor and 51 ms in another, with B0 timed
    beside it steady at 28 ms. Process-wide and kept (a freed heap is not given back: a
    measuring process holds its peak); a no-op (False) where glibc is not the C library."""
    import ctypes
    import ctypes.util

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))


def pin_threads(threads: int, pin: bool) -> None:
    """Noise control: `threads` intra-op threads, and with `pin` the process bound to the first
    `threads` CPUs it may use, so the scheduler cannot move it mid-run; the allocator made
    steady (`steady_allocator`)."""
    import torch

    steady_allocator()
    torch.set_num_threads(threads)
    if pin and hasattr(os, "sched_setaffinity"):
        allowed = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, allowed[: max(1, threads)])


@contextlib.contextmanager
def pinned(threads: int, pin: bool) -> Iterator[None]:
    """`pin_threads` for a block, the thread count and CPU affinity restored after it (a search
    measures its winners pinned, then goes on writing with the CPUs it had)."""
    import torch

    before = torch.get_num_threads()
    affinity = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    pin_threads(threads, pin)
    try:
        yield
    finally:
        torch.set_num_threads(before)
        if pin and affinity is not None:
            os.sched_setaffinity(0, affinity)


def stats(ms: Sequence[float]) -> dict[str, float]:
    q = statistics.quantiles(ms, n=4) if len(ms) >= 2 else [ms[0]] * 3
    return {
        "median_ms": round(statistics.median(ms), 4),
        "p25_ms": round(q[0], 4),
        "p75_ms": round(q[2], 4),
        "min_ms": round(min(ms), 4),
        "max_ms": round(max(ms), 4),
    }


def cv(values: Sequence[float]) -> float | None:
    """Coefficient of variation (sample std / mean); None for fewer than two values."""
    if len(values) < 2:
        return None
    return statistics.stdev(values) / statistics.fmean(values)


@dataclass(frozen=True)
class Measurement:
    """One measured latency: the median of each repeat's `runs` timings, and every timing."""

    medians: tuple[float, ...]  # one per repeat
    times: tuple[float, ...]  # every timed run, all repeats
    lows: tuple[float, ...] = ()  # the fastest run of each repeat

    @property
    def median_ms(self) -> float:
        return statistics.median(self.medians)

    @property
    def fastest_ms(self) -> float | None:
        """The median over repeats of each repeat's fastest run: a second statistic of the same
        timings, recorded beside the median (benchmarks/latency_paired.py: between measurements
        of one model a minute apart it spread 8.1% against the median's 12.4%)."""
        return statistics.median(self.lows) if self.lows else None

    @property
    def fastest_cv(self) -> float | None:
        return cv(self.lows)

    @property
    def cv(self) -> float | None:
        """Repeat-to-repeat CV of the medians (None with one repeat)."""
        return cv(self.medians)

    def row(self) -> dict[str, Any]:
        """The columns a latency table shows: the median of the repeats' medians, the pooled
        spread, the CV over repeats."""
        return {
            **stats(self.times),
            "median_ms": round(self.median_ms, 4),
            "cv": None if self.cv is None else round(self.cv, 5),
            "repeats": len(self.medians),
        }


def flagged(measured: Measurement, threshold: float) -> bool:
    """Whether a measurement's CV over its repeats is over `threshold` (never with one repeat)."""
    return measured.cv is not None and measured.cv > threshold


def cv_text(measured: Measurement) -> str:
    return "" if measured.cv is None else f"; CV {measured.cv:.1%} over {len(measured.medians)} repeats"


def warn_noisy(label: str, measured: Measurement, threshold: float) -> None:
    if flagged(measured, threshold):
        print(
            f"  ! {label}: CV {measured.cv:.1%} over its {len(measured.medians)} repeats is above "
            f"{threshold:.0%}: a noisy measurement (load {os.getloadavg()[0]:.2f}); re-measure on a quiet "
            "machine or raise --repeat",
            file=sys.stderr,
            flush=True,
        )


def runner(module: Any, shape: tuple[int, ...], setup: Setup) -> Callable[[], Any]:
    """A zero-argument call of one forward pass of `module` on a fixed random input, in the
    setup's runtime and device. onnxruntime: the module exported to a temporary file, loaded,
    and the file deleted (hundreds of measured networks must not fill the disk)."""
    import torch

    module = module.eval()
    x = torch.randn(*shape)
    if setup.runtime == "onnxruntime":
        from training.onnx_io import export_onnx_module, onnx_session

        with tempfile.TemporaryDirectory(prefix="effnas-latency-") as folder:
            path = Path(folder) / "model.onnx"
            export_onnx_module(module, x, path)
            session = onnx_session(path, setup.threads)
        name = session.get_inputs()[0].name
        feed = {name: x.numpy()}
        return lambda: session.run(None, feed)
    device = torch.device(setup.device)
    fmt = torch.channels_last if setup.channels_last and x.dim() == 4 else torch.contiguous_format
    module = module.to(device, memory_format=fmt)
    x = x.to(device, memory_format=fmt)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def call() -> Any:
        with torch.inference_mode():
            out = module(x)
        sync()
        return out

    return call


def measure(call: Callable[[], Any], runs: int, warmup: int) -> list[float]:
    """Milliseconds of each of `runs` calls after `warmup` untimed ones."""
    for _ in range(warmup):
        call()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        call()
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def repeated(call: Callable[[], Any], setup: Setup) -> Measurement:
    """`setup.repeat` measurements of `call` (each with its warm-up), kept whole."""
    medians, times, lows = [], [], []
    for _ in range(max(1, setup.repeat)):
        ms = measure(call, setup.runs, setup.warmup)
        medians.append(statistics.median(ms))
        lows.append(min(ms))
        times += ms
    return Measurement(tuple(medians), tuple(times), tuple(lows))


@dataclass(frozen=True)
class Paired:
    """A model measured beside an anchor architecture, their timed runs alternating one by one:
    per repeat, the model's median over the anchor's median of the same stretch of time."""

    model: Measurement
    anchor: Measurement

    @property
    def ratios(self) -> tuple[float, ...]:
        return tuple(m / a for m, a in zip(self.model.medians, self.anchor.medians))

    @property
    def ratio(self) -> float:
        return statistics.median(self.ratios)

    @property
    def ratio_cv(self) -> float | None:
        """Repeat-to-repeat CV of the ratio (None with one repeat): the spread the anchor leaves."""
        return cv(self.ratios)


def paired(call: Callable[[], Any], anchor: Callable[[], Any], setup: Setup) -> Paired:
    """`call` measured beside `anchor`, `setup.repeat` times: `warmup` untimed runs of each, then
    `runs` timed pairs, the model's run then the anchor's. Why: on this VM the speed of one core
    moves by 6-16% (CV of B0 measured every 2 s over 7 minutes, three runs) within seconds, and
    the same architecture in two sweeps over 400 agreed within +-10% only 64-82% of the time;
    run by run, the ratio to the anchor spread 1.1% where the milliseconds spread 3.2% (21
    models x 10 rounds; benchmarks/latency_paired.py --interleave, docs/latency.md). Costs twice
    the timed runs."""
    mine: list[list[float]] = []
    theirs: list[list[float]] = []
    for _ in range(max(1, setup.repeat)):
        for _ in range(setup.warmup):
            call()
            anchor()
        a, b = [], []
        for _ in range(setup.runs):
            t = time.perf_counter()
            call()
            a.append((time.perf_counter() - t) * 1e3)
            t = time.perf_counter()
            anchor()
            b.append((time.perf_counter() - t) * 1e3)
        mine.append(a)
        theirs.append(b)

    def kept(runs: list[list[float]]) -> Measurement:
        return Measurement(
            tuple(statistics.median(r) for r in runs),
            tuple(t for r in runs for t in r),
            tuple(min(r) for r in runs),
        )

    return Paired(kept(mine), kept(theirs))


def model_runner(
    arch: Any, setup: Setup, resolution: int, num_classes: int, stem_stride: int | None
) -> Callable[[], Any]:
    """One forward pass of `arch`: random weights, BN statistics as `setup.bn` says (by default
    re-estimated for them, `calibrated_bn`)."""
    from search_spaces.builder import build_model

    # one input size is timed: TF "SAME" padding is static for it (benchmarks/same_padding.py
    # measures the dynamic form beside it)
    model = build_model(arch, num_classes=num_classes, stem_stride=stem_stride, input_size=resolution)
    if setup.bn == "calibrated":
        calibrated_bn(model, resolution)
    elif setup.bn != "init":
        raise ValueError(f"bn must be 'calibrated' or 'init', got {setup.bn!r}")
    return runner(model, (setup.batch, 3, resolution, resolution), setup)


def calibrated_bn(model: Any, resolution: int, images: int = 4) -> Any:
    """`model`'s BN statistics re-estimated on `images` random images (a fixed seed), so its
    activations keep a trained network's scale. Why latency depends on it: built with BN at
    mean 0 / variance 1, a random network's activations shrink block by block (SiLU halves small
    values; He init on fan-out) to 1e-16..1e-22 by the last stage, and arithmetic on them meets
    denormal numbers (a polynomial's x^2 underflows), which x86 cores run tens of times slower.
    On the Intel Xeon VM one architecture took 25.4 ms that way in onnxruntime and 8.6 ms with
    its statistics re-estimated (torch eager 24.4 vs 20.2 ms); its fused SiLU on a 1280x7x7
    tensor spent 1.8 ms, 28 ns an element, against 0.4 ns at 96x112x112 early in the same
    network: the onnxruntime predictor's 30-70% misses were such architectures
    (docs/latency.md). A trained network's BN keeps activations near unit scale, so
    re-estimated statistics time what deployment runs. The images are N(0, 1): the scale a
    normalized input has. Returns `model`, in eval mode."""
    import torch

    from training.batchnorm import reestimating

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(images, 3, resolution, resolution, generator=generator)
    model.eval()
    with reestimating(model), torch.no_grad():
        model(x)
    return model


def model_latency(
    arch: Any, setup: Setup, resolution: int, num_classes: int, stem_stride: int | None
) -> Measurement:
    """`arch` measured end to end under `setup`, `setup.repeat` times."""
    return repeated(model_runner(arch, setup, resolution, num_classes, stem_stride), setup)


def paired_latency(
    arch: Any,
    anchor: Callable[[], Any],
    setup: Setup,
    resolution: int,
    num_classes: int,
    stem_stride: int | None,
) -> Paired:
    """`arch` measured end to end beside `anchor` (a `model_runner` of the anchor architecture)."""
    return paired(model_runner(arch, setup, resolution, num_classes, stem_stride), anchor, setup)


def setup_from(record: dict[str, Any], **overrides: Any) -> Setup:
    """The `Setup` a predictor or table recorded (`Setup.__dict__` plus its parts' keywords),
    with `overrides`; the protocol's defaults where a field was not recorded."""
    fields = {
        "batch": 1,
        "threads": 1,
        "runs": 20,
        "warmup": 5,
        "runtime": "torch",
        "device": "cpu",
        "channels_last": True,
        "repeat": 3,
        "bn": "init",  # a record without it was measured before BN was calibrated
    }
    fields.update({k: record[k] for k in fields if record.get(k) is not None})
    fields.update(overrides)
    return Setup(
        batch=int(fields["batch"]),
        threads=int(fields["threads"]),
        runs=int(fields["runs"]),
        warmup=int(fields["warmup"]),
        runtime=str(fields["runtime"]),
        device=str(fields["device"]),
        channels_last=bool(fields["channels_last"]),
        repeat=int(fields["repeat"]),
        bn=str(fields["bn"]),
    )


def reference_latencies(
    references: Sequence[dict[str, Any]], space: Any, record: dict[str, Any], warm_up: bool = True
) -> list[float]:
    """A predictor's reference architectures (`choose_references`' rows) measured now exactly as
    they were measured for it (`record`: the predictor's setup), the process pinned; one
    progress line each. With `warm_up` (a process that has not measured yet), a first round
    over all of them is measured and thrown away. Why: taken first thing in a process, the
    references' factor came out over the one that fitted 60-100 other architectures best in 4
    checks of 4 (by 12-39%); with the round, 6-17% off either way in 3 (docs/latency.md). The
    direct test (`benchmarks/latency_cold_start.py`: references measured first, then again among
    others) showed a fresh process slow in 1 run of 3 (2.12x the prediction, 1.36x a minute
    later) and not clearly in 2 (1.55 vs 1.63; 1.82 vs 1.59): the machine's own swings are as
    large. Kept for its cost, one more round (~15 s)."""
    setup = setup_from(record)
    archs = [space.decode(tuple(int(c) for c in str(ref["choices"]).split())) for ref in references]
    kw = {"num_classes": int(record.get("num_classes", 1000)), "stem_stride": record.get("stem_stride")}
    now = []
    with pinned(setup.threads, setup.device == "cpu"):
        if warm_up:
            print(
                f"  (a first round over the {len(archs)}, thrown away: a fresh process may measure slow)",
                file=sys.stderr,
            )
            for arch in archs:
                model_latency(arch, setup, arch.resolution, kw["num_classes"], kw["stem_stride"])
        for ref, arch in zip(references, archs):
            ms = model_latency(arch, setup, arch.resolution, kw["num_classes"], kw["stem_stride"]).median_ms
            now.append(round(ms, 4))
            print(
                f"  {ref['arch']}: {float(ref['measured_ms']):.2f} ms then, {ms:.2f} ms now "
                f"({ms / float(ref['measured_ms']):.3f}x)",
                file=sys.stderr,
                flush=True,
            )
    return now


def reference_drift(
    references: Sequence[dict[str, Any]], space: Any, record: dict[str, Any], warm_up: bool = True
) -> dict[str, Any]:
    """`reference_latencies`, and how far they moved from the latency the predictor recorded for
    them (`search_spaces.latency_predictor.drift`), with both measurements kept."""
    from search_spaces.latency_predictor import drift

    then = [float(r["measured_ms"]) for r in references]
    now = reference_latencies(references, space, record, warm_up)
    return {**drift(then, now), "then_ms": then, "now_ms": now}
