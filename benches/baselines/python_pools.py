#!/usr/bin/env python3
"""Python baselines for `cargo xtask bench` (procpool-bench).

Runs the workloads of issue 7 on the pools a Python user would pick:

* ``concurrent.futures.ProcessPoolExecutor`` -- ``map`` with chunksize 1 and with a
  tuned chunksize (per workload, see ``TUNED_CHUNKSIZE``), ``submit().result()``;
* ``multiprocessing.Pool`` -- ``map`` with its default chunksize, ``apply``/``apply_async``;
* a plain Python serial loop where it is a meaningful reference.

Standard library only (Python 3.11). Prints ONE JSON object on stdout::

    {"python": "...", "workers": N, "quick": bool, "calibration": {...},
     "params": {...}, "notes": [...],
     "rows": [{"workload", "system", "value", "unit", "min", "max", "samples", "extra"}]}

Busy work is a real CPU loop (an LCG in pure Python), never ``sleep``. The loop count per
unit (~1 us, 5 ms, 40 ms, 100 ms) is calibrated once at start and recorded in the JSON, so
the Rust side (which calibrates its own loop) and this side do comparable *durations* of
work. Per item Python's interpreter overhead is much larger; compare efficiency and
makespan ratios across languages, not absolute speed.
"""

import argparse
import concurrent.futures as cf
import hashlib
import json
import math
import multiprocessing as mp
import os
import platform
import statistics
import sys
import tempfile
import time

MASK = (1 << 64) - 1
LCG_MUL = 6364136223846793005
LCG_ADD = 1442695040888963407

WORKLOADS = [
    "startup",
    "latency",
    "submit",
    "map_tiny",
    "map_1us",
    "cpu_scaling",
    "skewed",
    "payload",
    "digest",
]

# Chunksizes a Python user would tune each map to (documented in benches/README.md).
TUNED_CHUNKSIZE = {
    "map_tiny": 1000,
    "map_1us": 1000,
    "cpu_scaling": 1,
    "skewed": 16,
    "digest": 16,
}


def params(quick):
    """Workload sizes; keep in step with benches/src/workload.rs."""
    return {
        "startup": {"starts": 1 if quick else 3},
        "latency": {"trips": 2000},
        # chunksize=1 maps and per-item submits are ~10^4 items/s in Python, so those
        # systems get a smaller item count (`n_slow`); a rate does not depend on n.
        "submit": {"n": 5_000 if quick else 100_000},
        "map_tiny": {"n": 1_000_000, "n_slow": 10_000 if quick else 40_000},
        "map_1us": {"n": 200_000, "n_slow": 5_000 if quick else 40_000},
        "cpu_scaling": {"tasks": 16 if quick else 32, "unit_ms": 20 if quick else 40},
        "skewed": {"short": 60, "short_ms": 5, "long": 4, "long_ms": 100},
        "payload": {"mib": 16 if quick else 64, "trips": 2 if quick else 3},
        "digest": {"files": 250 if quick else 2000, "mib": 32 if quick else 256},
    }


# ---------------------------------------------------------------------------
# Tasks (top level, so every start method can pickle them).


def add_one(x):
    return x + 1


def spin(iters):
    """Busy CPU work: `iters` steps of a 64-bit LCG."""
    x = 0x9E3779B97F4A7C15
    for _ in range(iters):
        x = (x * LCG_MUL + LCG_ADD) & MASK
    return x


def spin_timed(iters):
    """`spin`, and the thread CPU time it took where it ran (the second reference of the
    busy workloads: the items' CPU time inside the workers)."""
    c0 = time.thread_time()
    x = spin(iters)
    return x, time.thread_time() - c0


def identity(data):
    return data


def sha512_file(path):
    with open(path, "rb") as f:
        return hashlib.sha512(f.read()).hexdigest()


# ---------------------------------------------------------------------------
# Calibration.


def calibrate():
    """Loop count per busy unit: the fastest of several runs of `spin`, in CPU time."""
    probe = 200_000
    spin(probe // 10)  # warm up
    # Thread CPU time: another process holding the core does not make the units short.
    best = min(_cpu_timed(spin, probe) for _ in range(5))
    ns_per_iter = best * 1e9 / probe
    units_ns = {"1us": 1e3, "5ms": 5e6, "20ms": 20e6, "40ms": 40e6, "100ms": 100e6}
    loops = {name: max(1, round(ns / ns_per_iter)) for name, ns in units_ns.items()}
    # What one ~1 us item really costs with the call: measured, not assumed.
    n = 20_000
    t = _cpu_timed(lambda: [spin(loops["1us"]) for _ in range(n)])
    return {
        "ns_per_iter": ns_per_iter,
        "loops": loops,
        "measured_1us_item_ns": t * 1e9 / n,
    }


def _cpu_timed(fn, *args):
    t0 = time.thread_time()
    fn(*args)
    return time.thread_time() - t0


def _timed(fn, *args):
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


# ---------------------------------------------------------------------------
# Helpers.


def ppe(workers, method=None):
    ctx = mp.get_context(method) if method else None
    return cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx)


def warm_ppe(ex, workers):
    # Make sure every worker process exists and has run a task.
    list(ex.map(add_one, range(workers * 4), chunksize=1))


def warm_pool(pool, workers):
    pool.map(add_one, range(workers * 4), chunksize=1)


def pool_default_chunksize(n, workers):
    chunksize, extra = divmod(n, workers * 4)
    return chunksize + 1 if extra else chunksize


class Recorder:
    def __init__(self):
        self.samples = {}  # (workload, system) -> {"unit", "values", "extra": {k: [..]}}

    def add(self, workload, system, value, unit, **extra):
        key = (workload, system)
        entry = self.samples.setdefault(key, {"unit": unit, "values": [], "extra": {}})
        entry["values"].append(value)
        for k, v in extra.items():
            entry["extra"].setdefault(k, []).append(v)

    def rows(self):
        out = []
        for (workload, system), e in self.samples.items():
            vals = e["values"]
            out.append(
                {
                    "workload": workload,
                    "system": system,
                    "value": statistics.median(vals),
                    "unit": e["unit"],
                    "min": min(vals),
                    "max": max(vals),
                    "samples": vals,
                    "extra": {k: statistics.median(v) for k, v in e["extra"].items()},
                }
            )
        return out


# ---------------------------------------------------------------------------
# Workloads. Each runs one round and records one sample per system.


def wl_startup(rec, workers, p, cal, tree):
    starts = p["starts"]

    def ppe_start(method):
        def run():
            ex = ppe(workers, method)
            ex.submit(add_one, 1).result()
            ex.shutdown(wait=True)

        return run

    def pool_start(method):
        def run():
            pool = mp.get_context(method).Pool(workers)
            pool.apply(add_one, (1,))
            pool.close()
            pool.join()

        return run

    for system, fn in [
        ("ProcessPoolExecutor fork", ppe_start("fork")),
        ("ProcessPoolExecutor spawn", ppe_start("spawn")),
        ("multiprocessing.Pool fork", pool_start("fork")),
    ]:
        ms = statistics.median(_timed(fn) * 1e3 for _ in range(starts))
        rec.add("startup", system, ms, "ms")


def wl_latency(rec, workers, p, cal, tree):
    trips = p["trips"]
    with ppe(workers) as ex:
        warm_ppe(ex, workers)
        lat = []
        for i in range(trips):
            t0 = time.perf_counter_ns()
            ex.submit(add_one, i).result()
            lat.append(time.perf_counter_ns() - t0)
        rec.add("latency", "ProcessPoolExecutor", statistics.median(lat) / 1e3, "us")
    with mp.Pool(workers) as pool:
        warm_pool(pool, workers)
        lat = []
        for i in range(trips):
            t0 = time.perf_counter_ns()
            pool.apply(add_one, (i,))
            lat.append(time.perf_counter_ns() - t0)
        rec.add("latency", "multiprocessing.Pool", statistics.median(lat) / 1e3, "us")


def wl_submit(rec, workers, p, cal, tree):
    n = p["n"]
    with ppe(workers) as ex:
        warm_ppe(ex, workers)
        t0 = time.perf_counter()
        futs = [ex.submit(add_one, i) for i in range(n)]
        total = sum(f.result() for f in futs)
        t = time.perf_counter() - t0
        assert total == n * (n + 1) // 2
        rec.add("submit", "ProcessPoolExecutor", n / t, "tasks/s", n=n)
    with mp.Pool(workers) as pool:
        warm_pool(pool, workers)
        t0 = time.perf_counter()
        res = [pool.apply_async(add_one, (i,)) for i in range(n)]
        total = sum(r.get() for r in res)
        t = time.perf_counter() - t0
        assert total == n * (n + 1) // 2
        rec.add("submit", "multiprocessing.Pool", n / t, "tasks/s", n=n)


def _run_maps(workload, workers, fn, items, slow_items, around=None):
    """Runs `fn` over items on every Python map system; returns (system, n, seconds,
    chunksize, outputs) per system, in the order they ran. `around`, if given, is called
    before the first system and after each one (the serial reference's slices)."""
    tuned = TUNED_CHUNKSIZE[workload]
    out = []
    around = around or (lambda: None)

    def timed_map(run):
        res = []
        t = _timed(lambda: res.extend(run()))
        around()
        return t, res

    around()
    with ppe(workers) as ex:
        warm_ppe(ex, workers)
        t, res = timed_map(lambda: ex.map(fn, slow_items, chunksize=1))
        out.append(("ProcessPoolExecutor cs=1", len(slow_items), t, 1, res))
        if tuned != 1:
            t, res = timed_map(lambda: ex.map(fn, items, chunksize=tuned))
            out.append((f"ProcessPoolExecutor cs={tuned}", len(items), t, tuned, res))
    with mp.Pool(workers) as pool:
        warm_pool(pool, workers)
        t, res = timed_map(lambda: pool.map(fn, items))
        out.append(("multiprocessing.Pool", len(items), t,
                    pool_default_chunksize(len(items), workers), res))
    return out


def _maps(rec, workload, workers, fn, items, slow_items, unit_of, extra_of):
    """Runs `fn` over items on every Python map system; unit_of/extra_of turn (n, seconds)
    into the recorded value."""
    for system, n, t, cs, _ in _run_maps(workload, workers, fn, items, slow_items):
        rec.add(workload, system, *unit_of(n, t), **extra_of(n, t, cs))


def wl_map_tiny(rec, workers, p, cal, tree):
    items = range(p["n"])
    t = _timed(lambda: [add_one(x) for x in items])
    rec.add("map_tiny", "python serial", p["n"] / t, "items/s", n=p["n"])
    _maps(rec, "map_tiny", workers, add_one, items, range(p["n_slow"]),
          lambda n, t: (n / t, "items/s"),
          lambda n, t, cs: {"n": n, "chunksize": cs})


# ---------------------------------------------------------------------------
# The serial reference of the busy workloads (same method as benches/src/reference.rs):
# the serial loop runs the items in short batches (one task, or ~1 ms of tiny items), in
# slices of half a pass (even and odd batches in turn) before the first pool and after each
# one, each batch timed in wall time and in thread CPU time; the cost of an item is the
# median over its batches, each pool is judged against the two slices around its own run,
# and efficiencies and the ideal makespan use the CPU-time costs (blind to preemption), with
# the wall-time figures kept beside them. cpu_scaling and skewed also time every item inside
# the workers (`spin_timed`): the second reference, `efficiency_inside` / `x_ideal_inside`.

MIN_BATCH_S = 1e-3


def batches(items, item_s):
    """Runs of equal loop counts cut into batches of at least MIN_BATCH_S (by `item_s`,
    the estimated seconds per item of a loop count), at least one item each."""
    out = []
    start, n = 0, len(items)
    while start < n:
        loops = items[start]
        end = start
        while end < n and items[end] == loops:
            end += 1
        per = max(1, math.ceil(MIN_BATCH_S / max(item_s(loops), 1e-9)))
        for at in range(start, end, per):
            out.append((at, min(at + per, end)))
        start = end
    return out


def probe(items, batch_list):
    """Times each batch of the serial loop: (loops, items, wall s, cpu s) per batch."""
    samples = []
    for a, b in batch_list:
        chunk = items[a:b]
        w0 = time.perf_counter()
        c0 = time.thread_time()
        for x in chunk:
            spin(x)
        cpu = time.thread_time() - c0
        wall = time.perf_counter() - w0
        samples.append((chunk[0], b - a, wall, cpu))
    return samples


class Reference:
    """Cost per item size from the probe batches (median), and what follows from it."""

    def __init__(self, items, samples):
        counts = {}
        for x in items:
            counts[x] = counts.get(x, 0) + 1
        self.classes = []
        for loops, count in counts.items():
            mine = [s for s in samples if s[0] == loops]
            if not mine:
                raise ValueError(f"no serial batch measured items of {loops} steps")
            self.classes.append({
                "loops": loops,
                "count": count,
                "wall": statistics.median(s[2] / s[1] for s in mine),
                "cpu": statistics.median(s[3] / s[1] for s in mine),
                "batches": len(mine),
            })
        self.pass_wall = sum(s[2] for s in samples)
        self.pass_cpu = sum(s[3] for s in samples)

    def per_item(self, loops, basis):
        return next(c[basis] for c in self.classes if c["loops"] == loops)

    def work(self, basis, items=None):
        if items is None:
            return sum(c["count"] * c[basis] for c in self.classes)
        return sum(self.per_item(x, basis) for x in items)

    def ideal(self, workers, basis):
        return max(self.work(basis) / workers, max(c[basis] for c in self.classes))

    def serial_extra(self):
        extra = {
            "work_wall_ms": self.work("wall") * 1e3,
            "pass_wall_ms": self.pass_wall * 1e3,
            "pass_cpu_ms": self.pass_cpu * 1e3,
            "disturbed": max(0.0, 1 - self.pass_cpu / self.pass_wall) if self.pass_wall else 0.0,
            "n": sum(c["count"] for c in self.classes),
        }
        for i, c in enumerate(self.classes):
            extra[f"item{i}_cpu_us"] = c["cpu"] * 1e6
            extra[f"item{i}_wall_us"] = c["wall"] * 1e6
            extra[f"item{i}_batches"] = c["batches"]
        return extra


def _referenced_maps(workload, workers, cal, items, slow_items, inside=False):
    """Serial slices around every pool (S P S P S …): returns the round's reference (every
    slice) and, per pool, (system, n, seconds, chunksize, its own reference, inside) where
    `inside` is (Σ item CPU s, longest item CPU s) when `inside` is asked for."""
    ns = cal["ns_per_iter"]
    cut = batches(items, lambda loops: loops * ns * 1e-9)
    halves = [cut[0::2], cut[1::2]]
    slices = []
    runs = _run_maps(workload, workers, spin_timed if inside else spin, items, slow_items,
                     around=lambda: slices.append(probe(items, halves[len(slices) % 2])))
    out = []
    for idx, (system, n, t, cs, res) in enumerate(runs):
        own = Reference(items, slices[idx] + slices[idx + 1])
        times = [r[1] for r in res] if inside else []
        out.append((system, n, t, cs, own, (sum(times), max(times)) if times else None))
    return Reference(items, [b for s in slices for b in s]), out


def _inside_extra(ref, inside, workers, t, skewed):
    if inside is None or inside[0] <= 0:
        return {}
    work, longest = inside
    extra = {"inside_over_serial": work / ref.work("cpu")}
    if skewed:
        extra["x_ideal_inside"] = t / max(work / workers, longest)
    else:
        extra["efficiency_inside"] = work / (workers * t)
    return extra


def _efficiency_maps(rec, workload, workers, cal, items, slow_items, inside=False):
    """Efficiency = serial work of the same items (CPU-time reference of the slices around
    the pool) / (workers x pool time); the wall-time reference's efficiency goes in
    `efficiency_wall`, the inside reference's in `efficiency_inside`."""
    ref, runs = _referenced_maps(workload, workers, cal, items, slow_items, inside)
    rec.add(workload, "python serial", ref.work("cpu") * 1e3, "ms", **ref.serial_extra())
    for system, n, t, cs, own, ins in runs:
        run_items = items if n == len(items) else slow_items
        work_cpu = own.work("cpu", run_items)
        work_wall = own.work("wall", run_items)
        rec.add(workload, system, work_cpu / (workers * t), "efficiency",
                n=n, chunksize=cs, speedup=work_cpu / t, wall_ms=t * 1e3,
                efficiency_wall=work_wall / (workers * t),
                **_inside_extra(own, ins, workers, t, False))


def wl_map_1us(rec, workers, p, cal, tree):
    loops = cal["loops"]["1us"]
    _efficiency_maps(rec, "map_1us", workers, cal, [loops] * p["n"], [loops] * p["n_slow"])


def wl_cpu_scaling(rec, workers, p, cal, tree):
    loops = cal["loops"][f"{p['unit_ms']}ms"]
    items = [loops] * p["tasks"]
    _efficiency_maps(rec, "cpu_scaling", workers, cal, items, items, inside=True)


def wl_skewed(rec, workers, p, cal, tree):
    short = cal["loops"][f"{p['short_ms']}ms"]
    long_ = cal["loops"][f"{p['long_ms']}ms"]
    items = [short] * p["short"] + [long_] * p["long"]
    ref, runs = _referenced_maps("skewed", workers, cal, items, items, inside=True)
    rec.add("skewed", "python serial", ref.work("cpu") * 1e3, "ms", **ref.serial_extra())
    for system, _n, t, cs, own, ins in runs:
        # Ideal makespan: perfect balance, but never below the longest single task.
        ideal = own.ideal(workers, "cpu")
        ideal_wall = own.ideal(workers, "wall")
        rec.add("skewed", system, t / ideal, "x ideal", chunksize=cs, makespan_ms=t * 1e3,
                ideal_ms=ideal * 1e3, ideal_wall_ms=ideal_wall * 1e3,
                x_ideal_wall=t / ideal_wall, **_inside_extra(own, ins, workers, t, True))


def wl_payload(rec, workers, p, cal, tree):
    size = p["mib"] << 20
    data = os.urandom(size)
    mib = size / (1 << 20)

    def trips(call):
        best = []
        for _ in range(p["trips"]):
            t0 = time.perf_counter()
            back = call()
            best.append(time.perf_counter() - t0)
            assert len(back) == size
        return mib / statistics.median(best)

    with ppe(workers) as ex:
        warm_ppe(ex, workers)
        rec.add("payload", "ProcessPoolExecutor", trips(lambda: ex.submit(identity, data).result()),
                "MiB/s", mib=mib)
    with mp.Pool(workers) as pool:
        warm_pool(pool, workers)
        rec.add("payload", "multiprocessing.Pool", trips(lambda: pool.apply(identity, (data,))),
                "MiB/s", mib=mib)


def list_tree(root):
    paths = []
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            paths.append(os.path.join(dirpath, name))
    paths.sort()
    return paths


def generate_tree(root, files, mib):
    """Stand-alone use only: the runner generates the tree (same layout) and passes --tree."""
    total = mib << 20
    avg = total // files
    state = 0x243F6A8885A308D3
    sizes = []
    for _ in range(files):
        state = (state * LCG_MUL + LCG_ADD) & MASK
        sizes.append(avg // 4 + (state >> 11) % (avg * 3 // 2))
    raw_sum = sum(sizes)
    sizes = [size * total // raw_sum for size in sizes]
    sizes[-1] += total - sum(sizes)
    block = os.urandom(1 << 20)
    for i, size in enumerate(sizes):
        d = os.path.join(root, f"d{i // 100:03}")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, f"f{i:05}.bin"), "wb") as f:
            left = size
            while left > 0:
                f.write(block[: min(left, len(block))])
                left -= len(block)


def wl_digest(rec, workers, p, cal, tree):
    paths = list_tree(tree)
    total = sum(os.path.getsize(x) for x in paths)
    mib = total / (1 << 20)
    t = _timed(lambda: [sha512_file(x) for x in paths])
    rec.add("digest", "python serial", mib / t, "MiB/s", files=len(paths), mib=mib)
    _maps(rec, "digest", workers, sha512_file, paths, paths,
          lambda n, t: (mib / t, "MiB/s"),
          lambda n, t, cs: {"chunksize": cs})


RUNNERS = {name: globals()[f"wl_{name}"] for name in WORKLOADS}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--workload", action="append", choices=WORKLOADS,
                    help="run only this workload (repeatable); default: all")
    ap.add_argument("--repeat", type=int, default=1, help="rounds per workload")
    ap.add_argument("--tree", help="directory for `digest` (generated in a temp dir if absent)")
    args = ap.parse_args()

    workloads = args.workload or WORKLOADS
    p = params(args.quick)
    cal = calibrate()
    rec = Recorder()
    notes = []
    tmp = None
    tree = args.tree
    if "digest" in workloads and not tree:
        tmp = tempfile.TemporaryDirectory(prefix="procpool-bench-tree-")
        tree = tmp.name
        generate_tree(tree, p["digest"]["files"], p["digest"]["mib"])
        notes.append("digest: tree generated by the script")
    try:
        for name in workloads:
            for _ in range(args.repeat):
                RUNNERS[name](rec, args.workers, p[name], cal, tree)
    finally:
        if tmp is not None:
            tmp.cleanup()

    out = {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "start_method": mp.get_start_method(),
        "workers": args.workers,
        "quick": args.quick,
        "repeat": args.repeat,
        "calibration": cal,
        "tuned_chunksize": TUNED_CHUNKSIZE,
        "params": {name: p[name] for name in workloads},
        "notes": notes,
        "rows": rec.rows(),
    }
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
