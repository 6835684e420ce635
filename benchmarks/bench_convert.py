"""The fixtures' logit match of `effnas convert` (docs/weights.md): for each model of
../shared/fixtures/weights, fill its state_dict by the README's rule, convert it, run effnas's
model (PyTorch, eval) and its ONNX export (`effnas export --weights`, onnxruntime), and print the
largest |effnas - library| / largest |library logit|.

    PYTHONPATH=. python benchmarks/bench_convert.py
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from test_convert import CASES, FIXTURES, fill, load_run  # noqa: E402  (the test's fill rule, once)

from deploy.export import onnx_session  # noqa: E402
from effnas.cli import main  # noqa: E402


def measure(name: str, tmp: Path) -> tuple[float, float]:
    fixture = json.loads((FIXTURES / f"{name}.json").read_text())
    state, x = fill(fixture)
    torch.save(state, tmp / f"{name}.pth")
    run, exp = tmp / f"{name}_run", tmp / f"{name}_onnx"
    assert main(["convert", str(tmp / f"{name}.pth"), "--model", CASES[name], f"run.dir={run}"]) == 0
    assert main(["export", "--weights", str(run), "checks=1", f"run.dir={exp}"]) == 0
    ref = np.asarray(fixture["logits"], dtype=np.float64)
    with torch.no_grad():
        got = load_run(run)(x).numpy()
    session = onnx_session(exp / "model.onnx", 1)
    onnx = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    scale = np.abs(ref).max()
    return float(np.abs(got - ref).max() / scale), float(np.abs(onnx - ref).max() / scale)


if __name__ == "__main__":
    torch.set_num_threads(1)
    print("| fixture | --model | torch | onnxruntime |\n|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name in CASES:
            t, o = measure(name, Path(tmp))
            print(f"| {name} | {CASES[name]} | {t:.2e} | {o:.2e} |", flush=True)
