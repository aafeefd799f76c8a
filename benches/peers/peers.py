#!/usr/bin/env python3
"""The Python side of the peer comparison: times segloss's peers on the
inputs `cargo bench --bench peers` wrote, checks that they compute the same
thing, and prints one table against segloss's timings (`segloss.json`).

    python3 benches/peers/peers.py DIR [--recipe-all] [--json OUT]

Peers, all on one thread:

* EDT: SciPy `ndimage.distance_transform_edt(~mask)` and seung-lab
  `edt.edt(~mask, parallel=1)` (both measure the distance to the mask, as
  segloss's `distance_to(mask)` does; the inversion is done before timing).
* labelling: SciPy `ndimage.label(mask, structure=ones((3,)*ndim))` and
  scikit-image `measure.label(mask, connectivity=ndim)` (full connectivity).
* U-Net map: the common Python recipe (`unet_recipe` below: label, one
  SciPy EDT per instance, sort, two smallest, formula), w0 = 10, sigma = 5,
  uniform class weights. Only the 512² images with 50, 90 and 200 cells and
  the text scan by default (the 800-cell image needs 3.4 GB and ~20 s per
  call; `--recipe-all` adds it).
* losses (2^24 f32, shape (16, 1, 1024, 1024)): PyTorch
  `binary_cross_entropy_with_logits` forward + backward, plain, with
  `pos_weight=3` (segloss's weighted BCE) and with `weight=w` (a pixel
  weight map: segloss's `ShapeAwareLoss::loss_grad_with_weights`), and MONAI
  `DiceLoss(sigmoid=True)` forward + backward twice: with MONAI's defaults,
  and with segloss's definition (`squared_pred=True, batch=True,
  smooth_nr=smooth_dr=1e-6`, whose value is checked against segloss's).
  Skipped, with a message, when torch or MONAI cannot be imported.

Timing: one untimed warm-up call, then at least `min_reps` calls and
`budget_s` seconds, at most `max_reps` calls (the values segloss used, from
`segloss.json`; the recipe: at least 3 calls); median and minimum wall-clock,
and the process's CPU time over the timed calls divided by their number.
"""

import argparse
import json
import os
import sys
import time

# One thread everywhere, before NumPy, SciPy or torch start their pools.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
import scipy  # noqa: E402
from scipy import ndimage  # noqa: E402

RECIPE_DEFAULT = {"512_cells_50", "512_cells_90", "512_cells_200", "text_172x448"}


def measure(f, min_reps, budget, max_reps):
    """Calls f once untimed, then times it; returns (first result, timing)."""
    first = f()
    times = []
    cpu_start = time.process_time()
    start = time.perf_counter()
    while len(times) < max_reps and (
        len(times) < min_reps or time.perf_counter() - start < budget
    ):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    cpu = time.process_time() - cpu_start
    return first, {
        "median_s": float(np.median(times)),
        "min_s": min(times),
        "cpu_mean_s": cpu / len(times),
        "reps": len(times),
    }


def unet_recipe(y, wc=None, w0=10, sigma=5):
    """The U-Net weight map as the common Python recipe computes it.

    Returns the map, the labels and d2 (the last two only for the checks).
    """
    labels, _ = ndimage.label(y, structure=np.ones((3,) * y.ndim))
    no_labels = labels == 0
    label_ids = sorted(np.unique(labels))[1:]
    if len(label_ids) > 1:
        distances = np.zeros(y.shape + (len(label_ids),))
        for i, label_id in enumerate(label_ids):
            distances[..., i] = ndimage.distance_transform_edt(labels != label_id)
        distances = np.sort(distances, axis=-1)
        d1 = distances[..., 0]
        d2 = distances[..., 1]
        w = w0 * np.exp(-1 / 2 * ((d1 + d2) / sigma) ** 2) * no_labels
    else:
        w = np.zeros(y.shape)
        d2 = np.full(y.shape, np.inf)
    if wc:
        class_weights = np.zeros(y.shape)
        for k, v in wc.items():
            class_weights[y == k] = v
        w = w + class_weights
    return w, labels, d2


def rel(a, b):
    return abs(a - b) / max(abs(b), 1e-300)


class Peers:
    def __init__(self, root, timing, recipe_all):
        self.root = root
        self.timing = timing
        self.recipe_all = recipe_all
        self.results = []  # (case, peer, timing or None, note)
        self.checks = []  # (case, text, ok)
        self.torch = self.monai = None
        try:
            import torch

            torch.set_num_threads(1)
            torch.set_num_interop_threads(1)
            self.torch = torch
        except ImportError as e:
            print(f"peers: torch not importable ({e}): PyTorch and MONAI skipped")
        if self.torch is not None:
            try:
                import monai.losses

                self.monai = monai
            except ImportError as e:
                print(f"peers: monai not importable ({e}): MONAI skipped")
        try:
            import edt

            self.edt = edt
        except ImportError as e:
            print(f"peers: edt not importable ({e}): seung-lab edt skipped")
            self.edt = None
        try:
            import skimage.measure

            self.skimage = skimage
        except ImportError as e:
            print(f"peers: scikit-image not importable ({e}): skimage skipped")
            self.skimage = None
        self.loss_cache = {}

    def load(self, name):
        return np.load(os.path.join(self.root, name))

    def time(self, case, peer, f, **kw):
        t = dict(self.timing)
        t.update(kw)
        print(f"  {case:<28} {peer:<34}", end="", flush=True)
        first, timing = measure(f, **t)
        print(f" {1e3 * timing['median_s']:10.2f} ms ({timing['reps']} reps)")
        self.results.append((case, peer, timing, ""))
        return first

    def skip(self, case, peer, why):
        print(f"  {case:<28} {peer:<34} skipped: {why}")
        self.results.append((case, peer, None, why))

    def check(self, case, text, ok):
        self.checks.append((case, text, bool(ok)))

    def edt_case(self, c):
        case = c["case"]
        mask = self.load(c["mask"])
        inverse = np.ascontiguousarray(~mask)
        d = self.time(case, "scipy distance_transform_edt", lambda: ndimage.distance_transform_edt(inverse))
        want = c["check"]
        k = np.rint(d * d).astype(np.int64).ravel()
        index = np.arange(k.size, dtype=np.int64) % 9973 + 1
        sums = (int(k.sum()), int((k * index).sum()))
        same = sums == (want["squared_sum"], want["squared_weighted_sum"])
        r = rel(float(d.sum()), want["distance_sum"])
        m = abs(float(d.max()) - want["distance_max"])
        self.check(
            case,
            f"SciPy vs segloss: exact checksums of d² equal: {same}; rel. diff of Σd {r:.1e}, "
            f"abs. diff of max d {m:.1e}",
            same and r < 1e-9 and m < 1e-9,
        )
        if self.edt is None:
            self.skip(case, "edt.edt parallel=1", "edt not importable")
            return
        e = self.time(case, "edt.edt parallel=1", lambda: self.edt.edt(inverse, parallel=1))
        diff = float(np.max(np.abs(e.astype(np.float64) - d)))
        self.check(case, f"edt (float32) vs SciPy: max abs diff {diff:.1e}", diff <= 1e-6 * max(1.0, float(d.max())))

    def label_case(self, c):
        case = c["case"]
        mask = self.load(c["mask"])
        want = self.load(c["labels"])
        structure = np.ones((3,) * mask.ndim)
        labels, n = self.time(case, "scipy ndimage.label (full)", lambda: ndimage.label(mask, structure=structure))
        self.check(
            case,
            f"SciPy labels == segloss labels: {np.array_equal(labels, want)} ({n} components)",
            np.array_equal(labels, want) and n == c["check"]["components"],
        )
        if self.skimage is None:
            self.skip(case, "skimage measure.label (full)", "scikit-image not importable")
            return
        labels = self.time(
            case, "skimage measure.label (full)", lambda: self.skimage.measure.label(mask, connectivity=mask.ndim)
        )
        self.check(case, f"skimage labels == segloss labels: {np.array_equal(labels, want)}", np.array_equal(labels, want))

    def unet_case(self, c):
        case = c["case"]
        name = case.split("/", 1)[1]
        peer = "Python recipe (SciPy EDT per instance)"
        if name not in RECIPE_DEFAULT and not self.recipe_all:
            self.skip(case, peer, "too slow and large by default (--recipe-all)")
            return
        mask = self.load(c["mask"])
        w0, sigma = c["w0"], c["sigma"]
        y = mask.astype(np.int64)
        wc = {0: 1.0, 1: 1.0}
        reps = 3 if self.timing["max_reps"] > 1 else 1
        w, labels, d2 = self.time(case, peer, lambda: unet_recipe(y, wc, w0, sigma), min_reps=reps)
        ours = self.load(c["weights"]).astype(np.float64)
        want = self.load(c["labels"])
        cutoff = sigma * np.sqrt(2 * np.log(1e6))
        near = d2 <= cutoff
        diff = np.abs(w - ours)
        inside = float(diff[near].max()) if near.any() else 0.0
        overall = float(diff.max())
        ok = inside <= 1e-6 * w0 and np.array_equal(labels, want)
        self.check(
            case,
            f"recipe vs segloss map: max abs diff {inside:.2e} where d2 <= R = {cutoff:.2f} "
            f"({int(near.sum())} px), {overall:.2e} everywhere (tolerance 1e-6·w0 = {1e-6 * w0:.0e}); "
            f"labels equal: {np.array_equal(labels, want)} ({c['check']['instances']} instances)",
            ok,
        )

    def load_loss_input(self, name):
        """A loss case's input file, loaded once: the loss cases share them."""
        if name not in self.loss_cache:
            self.loss_cache[name] = self.load(name)
        return self.loss_cache[name]

    def loss_case(self, c, done):
        """Times the peer of a loss once per loss; both segloss calls
        (`loss_grad`, `loss_and_grad`) are compared with the same timing."""
        case, kind = c["case"], c["kind"]
        if self.torch is None:
            self.skip(case, "PyTorch / MONAI", "torch not importable")
            return
        torch = self.torch
        logits, target = self.load_loss_input(c["logits"]), self.load_loss_input(c["target"])
        x = torch.from_numpy(logits).requires_grad_(True)
        t = torch.from_numpy(target)
        want = c["check"]
        bce = torch.nn.functional.binary_cross_entropy_with_logits
        if kind == "bce":
            peers = [("torch BCE-with-logits fwd+bwd", lambda a, b: bce(a, b), True)]
        elif kind == "wbce":
            beta = torch.tensor(3.0)
            peers = [
                (
                    "torch BCE-with-logits pos_weight=3 fwd+bwd",
                    lambda a, b: bce(a, b, pos_weight=beta.to(a.dtype)),
                    True,
                )
            ]
        elif kind == "pwbce":
            w = torch.from_numpy(self.load_loss_input(c["weights"]))
            peers = [
                (
                    "torch BCE-with-logits weight=w fwd+bwd",
                    lambda a, b: bce(a, b, weight=w.to(a.dtype)),
                    True,
                )
            ]
        else:
            if self.monai is None:
                self.skip(case, "MONAI DiceLoss", "monai not importable")
                return
            DiceLoss = self.monai.losses.DiceLoss
            same = DiceLoss(sigmoid=True, squared_pred=True, batch=True, smooth_nr=1e-6, smooth_dr=1e-6)
            default = DiceLoss(sigmoid=True)
            peers = [
                ("MONAI DiceLoss, segloss's definition", same, True),
                ("MONAI DiceLoss(sigmoid=True) defaults", default, False),
            ]
        for peer, fn, same_definition in peers:
            if (kind, peer) in done:
                self.results.append((case, peer, done[(kind, peer)], ""))
                continue

            def step():
                x.grad = None
                loss = fn(x, t)
                loss.backward()
                return float(loss.detach())

            value = self.time(case, peer, step)
            done[(kind, peer)] = self.results[-1][2]
            if same_definition:
                g = x.grad.double()
                r_loss = rel(value, want["loss"])
                r_sum = abs(float(g.sum()) - want["grad_sum"]) / max(want["grad_abs_sum"], 1e-300)
                r_abs = rel(float(g.abs().sum()), want["grad_abs_sum"])
                # The peer's own f32 sums may be off by ~1e-4 over 2^24
                # elements: the definition is checked in f64 (untimed).
                exact = float(fn(x.detach().double(), t.double()))
                r_exact = rel(want["loss"], exact)
                self.check(
                    f"{kind}",
                    f"{peer} vs segloss: loss in f32 {value:.7g} vs {want['loss']:.7g} (rel. {r_loss:.1e}), "
                    f"peer in f64 {exact:.10g} (rel. {r_exact:.1e}); "
                    f"Σgrad diff / Σ|grad| {r_sum:.1e}; Σ|grad| rel. {r_abs:.1e}",
                    r_exact < 1e-6 and r_loss < 1e-3 and r_sum < 1e-3 and r_abs < 1e-3,
                )


def fmt_time(s, elements):
    if s >= 1:
        t = f"{s:.2f} s"
    elif s >= 1e-3:
        t = f"{1e3 * s:.1f} ms"
    else:
        t = f"{1e6 * s:.0f} µs"
    return f"{t} ({1e9 * s / elements:.1f} ns/el)"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir", help="the directory `cargo bench --bench peers` wrote")
    ap.add_argument("--recipe-all", action="store_true", help="run the recipe on the 800-cell image too")
    ap.add_argument("--quick", action="store_true", help="one timed call per case, the recipe on the text only (a smoke test)")
    ap.add_argument("--json", help="where to write the peers' timings (default DIR/peers.json)")
    args = ap.parse_args()

    with open(os.path.join(args.dir, "segloss.json")) as f:
        report = json.load(f)
    t = report["segloss"]["timing"]
    timing = {"min_reps": t["min_reps"], "budget": t["budget_s"], "max_reps": t["max_reps"]}
    if args.quick:
        timing = {"min_reps": 1, "budget": 0.0, "max_reps": 1}
        RECIPE_DEFAULT.intersection_update({"text_172x448"})
    peers = Peers(args.dir, timing, args.recipe_all)
    versions = {"python": sys.version.split()[0], "numpy": np.__version__, "scipy": scipy.__version__}
    for mod, name in [(peers.edt, "edt"), (peers.skimage, "scikit-image"), (peers.torch, "torch"), (peers.monai, "monai")]:
        if mod is not None:
            versions[name] = getattr(mod, "__version__", None) or _dist_version(name)
    print("peers: " + ", ".join(f"{k} {v}" for k, v in versions.items()))

    done = {}
    for c in report["cases"]:
        kind = c["kind"]
        if kind == "edt":
            peers.edt_case(c)
        elif kind == "label":
            peers.label_case(c)
        elif kind == "unet":
            peers.unet_case(c)
        elif kind in ("bce", "wbce", "dice", "pwbce"):
            peers.loss_case(c, done)

    by_case = {c["case"]: c for c in report["cases"]}
    lines = [
        "| case | segloss (median) | peer | peer (median) | peer / segloss: median | best | CPU | peer / floor |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for case, peer, timing, note in peers.results:
        c = by_case[case]
        ours = c["segloss"]["median_s"]
        n = c["elements"]
        if timing is None:
            lines.append(f"| {case} | {fmt_time(ours, n)} | {peer} | skipped: {note} | | | | |")
        else:
            best = timing["min_s"] / c["segloss"]["min_s"]
            our_cpu = c["segloss"].get("cpu_mean_s")
            cpu = f"{timing['cpu_mean_s'] / our_cpu:.2f}" if our_cpu else "–"
            floor = c.get("floor")
            ceiling = f"{timing['median_s'] / floor['median_s']:.2f}" if floor else "–"
            lines.append(
                f"| {case} | {fmt_time(ours, n)} | {peer} | {fmt_time(timing['median_s'], n)} "
                f"| {timing['median_s'] / ours:.2f} | {best:.2f} | {cpu} | {ceiling} |"
            )
    print()
    print("\n".join(lines))
    print()
    print("Checks (peer output against segloss's):")
    for case, text, ok in peers.checks:
        print(f"  [{'ok' if ok else 'FAIL'}] {case}: {text}")

    out = args.json or os.path.join(args.dir, "peers.json")
    with open(out, "w") as f:
        json.dump(
            {
                "versions": versions,
                "results": [
                    {"case": case, "peer": peer, "timing": timing, "note": note}
                    for case, peer, timing, note in peers.results
                ],
                "checks": [{"case": case, "text": text, "ok": ok} for case, text, ok in peers.checks],
            },
            f,
            indent=1,
        )
    print(f"\npeers: wrote {out}")
    return 0 if all(ok for _, _, ok in peers.checks) else 1


def _dist_version(name):
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:  # noqa: BLE001
        return "?"


if __name__ == "__main__":
    sys.exit(main())
