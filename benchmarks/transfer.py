"""The paper's transfer experiment (§5.2, Table 5) at a CPU budget, on CIFAR-10 cut in two
(docs/transfer.md):

- source: each architecture trained on classes 0-4 (airplane, automobile, bird, cat, deer),
  a stratified 10,000-image subset, 3 epochs at 32 px (`proxy=default`), seed 0;
- target: classes 5-9 (dog, frog, horse, ship, truck) with 500 and with 5,000 training images
  (stratified, the same images for every run), fine-tuned from the source run (`effnas train
  --init <source> train.new_classifier=true`: the body's weights, a new 5-class classifier) and
  trained from scratch, with the same recipe and epochs (20 epochs of 500 images, 4 of 5,000),
  2 seeds (`run.seed`; `--seeds 3` gives intervals), each scored on the 5,000 test images of classes 5-9 (`data.use_test=true`);
- architectures: EfficientNet-B0 and the searched architecture with a record
  (benchmarks/data/cifar10_mnasnet_proxy.csv's best reward; docs/transfer.md says why not
  docs/search_evidence.md's `mnas_c3931777`);
- first, the chain on converted weights (`convert_check`): torchvision's efficientnet_b0 layout
  filled by the weight fixture's numpy rule (no download) -> `effnas convert` -> `train --init`
  on classes 5-9 (500 images, 1 epoch) -> `effnas export` (ONNX) -> onnxruntime vs PyTorch on
  1,000 test photographs.

Prints the table (mean test accuracy over seeds, the seeds, the spread, fine-tuned vs scratch
with foundation/verdict.py's call: with 2 seeds the seed spread is not estimable, and the verdict
says so), writes `transfer.csv`, `runs.csv` and `transfer.png` into --out (atomically).
Resumable: every training is its own `effnas train` run directory; a finished one is skipped, an
interrupted one continues (`effnas train --resume`). Detached:

    (setsid nohup nice -n 19 .venv/bin/python benchmarks/transfer.py > transfer.log 2>&1 &)
    PYTHONPATH=. python benchmarks/transfer.py --steps table       # the table again, trains nothing

Budget: 2 x 3 epochs of 10,000 images (source) + 2 x 2 x 2 x (20 x 500 + 4 x 5,000) images
(target) = 300,000 training images, about 25-40 minutes on 2 shared CPU cores at 32 px.
`--budget K` (or BUDGET=K) multiplies every epoch count by K, for users with time.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from foundation import per_image, verdict  # noqa: E402
from foundation.runfiles import atomic_write  # noqa: E402

SOURCE_CLASSES = (0, 1, 2, 3, 4)
TARGET_CLASSES = (5, 6, 7, 8, 9)
SOURCE_IMAGES, SOURCE_EPOCHS = 10000, 3
TARGET_EPOCHS = {500: 20, 5000: 4}  # 10,000 and 20,000 training images seen
TEST_IMAGES = 5000  # CIFAR-10's test split, classes 5-9
COLLECTION = REPO / "benchmarks" / "data" / "cifar10_mnasnet_proxy.csv"
STEPS = ("convert_check", "source", "target", "table")


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def status(run: Path) -> str:
    try:
        return str(json.loads((run / "manifest.json").read_text()).get("status", ""))
    except (OSError, ValueError):
        return ""


def effnas(args: list[str]) -> None:
    cmd = [sys.executable, "-m", "effnas", *args]
    print("$ effnas " + " ".join(args), flush=True)
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    rc = subprocess.run(cmd, cwd=REPO, env=env).returncode
    if rc != 0:
        raise SystemExit(f"transfer: effnas {args[0]} exited {rc}; run the script again to resume")


def train(run: Path, args: list[str]) -> dict:
    """One `effnas train` run: skipped when done, resumed when interrupted. -> its summary."""
    if status(run) != "done":
        print(f"== {run.name}: {time.strftime('%FT%T')}, load {load()}", flush=True)
        effnas(
            ["train", "--resume", str(run)]
            if (run / "manifest.json").is_file()
            else [*args, f"run.dir={run}"]
        )
        print(f"== {run.name}: done {time.strftime('%FT%T')}, load {load()}", flush=True)
    return json.loads((run / "summary.json").read_text())


def classes(which: tuple[int, ...]) -> str:
    return f"data.classes=[{','.join(map(str, which))}]"


def searched_arch(out: Path) -> Path:
    """The collection's best reward (ACC x (MACs/400M)^-0.07) decoded in the default space, as
    an arch YAML under --out (the space's fingerprint must be the collection's)."""
    import pandas as pd

    from effnas.config import compose
    from nas.reward import reward
    from search_spaces.mnasnet import MnasNetSpace

    path = out / "archs" / "searched.yaml"
    if path.is_file():
        return path
    table = pd.read_csv(COLLECTION)
    table["reward"] = [reward(a, m, 400e6) for a, m in zip(table.accuracy, table.macs)]
    best = table.loc[table.reward.idxmax()]
    space = MnasNetSpace.from_config(compose("search").space)
    if not space.fingerprint().startswith(str(best.space)):
        raise SystemExit(f"transfer: {COLLECTION} was collected in another space ({best.space})")
    arch = space.decode(tuple(int(c) for c in str(best.choices).split()))
    assert " ".join(arch.blocks) == best.arch, (arch.blocks, best.arch)
    note = (
        f"# {COLLECTION.name} row {best.id}: accuracy {best.accuracy} at {best.macs / 1e6:.1f}M MACs, "
        f"reward {best.reward:.4f} (the collection's best; benchmarks/transfer.py)\n"
    )
    atomic_write(path, note + arch.to_yaml())
    return path


def convert_check(out: Path, data: list[str], run_args: list[str]) -> dict:
    """The converted-weights chain (tests/test_transfer.py runs it on a slice): fill -> convert ->
    train --init -> export -> onnxruntime vs PyTorch on real test photographs."""
    from test_transfer import RELATIVE_TOLERANCE, onnx_vs_torch, write_fixture_weights

    from training.data import load_dataset
    from training.data.config import DataConfig

    done = out / "convert_check.json"
    if done.is_file():
        return json.loads(done.read_text())
    conv, ft, exp = out / "convert", out / "convert_ft", out / "convert_export"
    if status(conv) != "done":
        pth = write_fixture_weights(out / "fixture" / "tv_efficientnet_b0.pth")
        effnas(["convert", str(pth), "--model", "torchvision:efficientnet_b0", f"run.dir={conv}"])
    args = ["train", str(conv / "arch.yaml"), "--init", str(conv), *data, classes(TARGET_CLASSES)]
    summary = train(ft, [*args, "data.max_train=500", "proxy.epochs=1", "data.use_test=true", *run_args])
    if status(exp) != "done":  # export's own check is absolute (1e-4); the relative one is below
        effnas(["export", "--weights", str(ft), "checks=1", "tolerance=1", f"run.dir={exp}"])
    exported = json.loads((exp / "summary.json").read_text())
    root = next(a.split("=", 1)[1] for a in data if a.startswith("data.root="))
    test = load_dataset(DataConfig(name="cifar10", root=root, classes=list(TARGET_CLASSES))).test
    assert test is not None
    check = onnx_vs_torch(conv / "arch.yaml", ft, exp / "model.onnx", test.x[::5])
    result = {
        "test_accuracy": summary["test_accuracy"],
        "export_random_inputs": {
            k: exported[k] for k in ("max_abs_diff", "max_abs_output", "checked_inputs")
        },
        "test_photographs": check,
        "relative": check["max_abs_diff"] / check["max_abs_logit"],
        "tolerance": RELATIVE_TOLERANCE,
        "ok": check["max_abs_diff"] <= RELATIVE_TOLERANCE * check["max_abs_logit"],
    }
    atomic_write(done, json.dumps(result, indent=1) + "\n")
    return result


def scores(runs: list[Path]) -> verdict.Scores | None:
    """Test-split scores of finished runs (paired over the images when every run has its record)."""
    finished = [r for r in runs if status(r) == "done"]
    if not finished:
        return None
    records = [per_image.load(r, "test") for r in finished]
    if all(c is not None and len(c) == TEST_IMAGES for c in records):
        return verdict.Scores.of(records)  # type: ignore[arg-type]
    accs = tuple(float(json.loads((r / "summary.json").read_text())["test_accuracy"]) for r in finished)
    return verdict.Scores(accs, TEST_IMAGES)


def table(out: Path, archs: dict[str, list[str]], seeds: int, budget: float) -> None:
    rows, runs_rows = [], []
    for name in archs:
        for n in TARGET_EPOCHS:
            arm = {}
            for init in ("finetune", "scratch"):
                runs = [out / f"{name}_{n}_{init}_s{s}" for s in range(seeds)]
                arm[init] = scores(runs)
                for s, r in enumerate(runs):
                    if status(r) == "done":
                        sm = json.loads((r / "summary.json").read_text())
                        runs_rows.append(
                            {
                                "arch": name,
                                "n_images": n,
                                "init": init,
                                "seed": s,
                                "test_accuracy": sm["test_accuracy"],
                                "val_accuracy": sm["val_accuracy"],
                                "seconds": sm["seconds"],
                                "images_per_second": sm["images_per_second"],
                                "run": str(r),
                            }
                        )
            for init, sc in arm.items():
                if sc is None:
                    continue
                iv = verdict.arm_interval(sc)
                row = {
                    "arch": name,
                    "n_images": n,
                    "init": init,
                    "seeds": sc.seeds,
                    "accuracies": ";".join(f"{a:.4f}" for a in sc.accuracies),
                    "mean": round(sc.mean, 4),
                    "std_seeds": iv["std_seeds"],
                    "low": iv["low"],
                    "high": iv["high"],
                    "images_half": iv["images_half"],
                    "spread": "estimable" if iv["low"] is not None else f"not estimable ({sc.seeds} seeds)",
                    "vs_scratch": "",
                    "call": "",
                    "fraction_of_scratch": "",
                }
                other = arm["scratch"]
                if init == "finetune" and other is not None:
                    c = verdict.compare(sc, other)
                    row.update(vs_scratch=verdict.describe(c), call=c["call"])
                    row["fraction_of_scratch"] = round(sc.mean / other.mean, 3) if other.mean else ""
                rows.append(row)
    if not rows:
        print("transfer: no finished target run yet")
        return
    print(f"\nCIFAR-10 classes 5-9, test split ({TEST_IMAGES} images); budget x{budget:g}; load {load()}")
    print(
        "| arch | n_images | init | seeds | test accuracy (mean) | per seed | eval-set +- | fine-tuned - scratch | ft / scratch |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['arch']} | {r['n_images']:,} | {r['init']} | {r['seeds']} | {r['mean']:.4f} | "
            f"{r['accuracies'].replace(';', ', ')} | {r['images_half']:.4f} | {r['vs_scratch']} | "
            f"{r['fraction_of_scratch']} |"
        )
    if seeds < 3:
        print("spread: with 2 seeds the seed spread is not estimable (foundation/verdict.py needs 3)")
    else:
        print(
            f"fine-tuned - scratch: mean difference with its 95% interval over {seeds} seeds and the "
            "test images, paired (foundation/verdict.py); a win only when it excludes zero"
        )
    print("'eval-set +-' is the 95% half-width of the 5,000 test images alone")
    for name, body in (("transfer.csv", rows), ("runs.csv", runs_rows)):
        buf = io.StringIO()
        if body:
            writer = csv.DictWriter(buf, fieldnames=list(body[0]))
            writer.writeheader()
            writer.writerows(body)
        atomic_write(out / name, buf.getvalue())
    plot(out, rows)
    print(f"wrote {out / 'transfer.csv'}, {out / 'runs.csv'}, {out / 'transfer.png'}")


def plot(out: Path, rows: list[dict]) -> None:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.8, 3.8))
    for i, key in enumerate(sorted({(r["arch"], r["init"]) for r in rows})):
        mine = sorted((r for r in rows if (r["arch"], r["init"]) == key), key=lambda r: r["n_images"])
        x = [r["n_images"] * (1 + 0.04 * (i - 1.5)) for r in mine]  # offsets: the bars do not overlap
        ax.errorbar(
            x,
            [r["mean"] for r in mine],
            yerr=[  # the arm's interval (seeds + test images) where estimable, else the test set's alone
                [r["mean"] - r["low"] if r["low"] is not None else r["images_half"] for r in mine],
                [r["high"] - r["mean"] if r["high"] is not None else r["images_half"] for r in mine],
            ],
            capsize=3,
            marker="o",
            linestyle="-" if key[1] == "finetune" else "--",
            label=f"{key[0]}, {key[1]}",
        )
        for xi, r in zip(x, mine):
            ax.plot([xi] * r["seeds"], [float(a) for a in r["accuracies"].split(";")], "k.", ms=3)
    ax.set_xscale("log")
    ax.set_xticks(sorted(TARGET_EPOCHS), [f"{n:,}" for n in sorted(TARGET_EPOCHS)])
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())  # the log axis's 2x10^3... ticks
    ax.set_xlabel("training images of classes 5-9")
    ax.set_ylabel("test accuracy, classes 5-9")
    ax.set_title(
        "fine-tuned from classes 0-4 vs from scratch\nbars: 95% interval (seeds + test images; the test "
        "set's alone with < 3 seeds), dots: seeds",
        fontsize=7,
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    atomic_write(out / "transfer.png", buf.getvalue())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="results/transfer")
    ap.add_argument("--cifar", default=str(REPO.parent / "shared" / "datasets" / "cifar10"))
    ap.add_argument(
        "--budget", type=float, default=float(os.environ.get("BUDGET", 1)), help="x every epoch count"
    )
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", default=",".join(STEPS), help=f"any of {','.join(STEPS)}")
    args = ap.parse_args()
    out = (REPO / args.out).resolve() if not Path(args.out).is_absolute() else Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    steps = set(args.steps.split(","))
    if steps - set(STEPS):
        raise SystemExit(
            f"transfer: unknown step(s) {sorted(steps - set(STEPS))}; expected {','.join(STEPS)}"
        )
    print(f"transfer: {' '.join(sys.argv)}  out={out}  budget x{args.budget:g}  load {load()}", flush=True)
    data = ["data=cifar10", f"data.root={args.cifar}", "data.val_fraction=0.02", "proxy=default"]
    run_args = [f"run.threads={args.threads}", "ray.enabled=false"]
    archs = {"b0": ["arch=efficientnet_b0"], "searched": [str(searched_arch(out))]}
    t0 = time.time()
    if "convert_check" in steps:
        c = convert_check(out, data, run_args)
        print(
            f"convert_check: onnxruntime vs PyTorch on {c['test_photographs']['images']} test photographs: "
            f"max |diff| {c['test_photographs']['max_abs_diff']:.3g} = {c['relative']:.2e} of the largest logit "
            f"(tolerance {c['tolerance']:g}): {'ok' if c['ok'] else 'FAILED'}",
            flush=True,
        )
    for name, arch in archs.items():
        source = out / f"{name}_source"
        if "source" in steps or "target" in steps:
            epochs = SOURCE_EPOCHS * args.budget
            train(
                source,
                [
                    "train",
                    *arch,
                    *data,
                    classes(SOURCE_CLASSES),
                    f"data.max_train={SOURCE_IMAGES}",
                    f"proxy.epochs={epochs:g}",
                    "data.use_test=true",
                    "run.seed=0",
                    *run_args,
                ],
            )
        if "target" not in steps:
            continue
        for n, epochs in TARGET_EPOCHS.items():
            e = epochs * args.budget
            common = [
                *arch,
                *data,
                classes(TARGET_CLASSES),
                f"data.max_train={n}",
                f"proxy.epochs={e:g}",
                f"proxy.report_every={e / 4:g}",
                "data.use_test=true",
                *run_args,
            ]
            for seed in range(args.seeds):
                for init in ("finetune", "scratch"):
                    extra = ["--init", str(source), "train.new_classifier=true"] if init == "finetune" else []
                    train(out / f"{name}_{n}_{init}_s{seed}", ["train", *common, *extra, f"run.seed={seed}"])
    cpu = resource.getrusage(resource.RUSAGE_CHILDREN)  # the effnas processes this call ran
    print(
        f"transfer: trainings done in {time.time() - t0:.0f} s wall, {(cpu.ru_utime + cpu.ru_stime) / 60:.1f} "
        f"CPU minutes in this call's effnas processes, load {load()}",
        flush=True,
    )
    if "table" in steps:
        table(out, archs, args.seeds, args.budget)


if __name__ == "__main__":
    main()
