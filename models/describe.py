"""`effnas describe`: an architecture's per-stage shape, MACs, params and activations, from the
cost model."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from typing import Any, Optional, TextIO

from foundation.errors import UserError
from foundation.units import format_flops
from search_spaces.arch_config import ArchConfig, arch_from_cfg


@dataclass
class DescribeConfig:
    """Schema of `conf/describe.yaml` (`run` is added by the stage registry)."""

    arch: ArchConfig = field(default_factory=ArchConfig)
    resolution: Optional[int] = None  # default: the arch's own
    num_classes: int = 1000
    format: str = "table"  # table | csv | json


def run(cfg: Any, rundir: Any = None) -> dict[str, Any]:
    """The stage entry: prints the table; writes no run directory."""
    describe(cfg)
    return {}


def describe_rows(
    arch: Any, resolution: int | None = None, num_classes: int = 1000
) -> tuple[list[dict], Any]:
    from search_spaces.cost import count
    from search_spaces.rounding import resolve_stages

    cost = count(arch, resolution=resolution, num_classes=num_classes)
    stem, stages, head = resolve_stages(arch)
    by_name = {s.name: s for s in cost.stages}
    rows: list[dict[str, Any]] = [
        dict(
            stage="stem",
            op="conv+maxpool" if arch.stem_pool else "conv",
            kernel=arch.stem_kernel,
            stride=arch.stem_stride,
            expand="",
            se="",
            act=arch.act,
            in_ch=3,
            out_ch=stem,
            repeats=1,
        )
    ]
    for i, s in enumerate(stages):
        rows.append(
            dict(
                stage=f"stage{i + 1}",
                op=s.op,
                kernel=s.kernel,
                stride=s.stride,
                expand=s.expand,
                se=s.se,
                act=s.act,
                in_ch=s.in_ch,
                out_ch=s.out_ch,
                repeats=s.repeats,
            )
        )
    rows.append(
        dict(
            stage="head",
            op="conv+fc" if head else "fc",
            kernel=1 if head else "",
            stride=1 if head else "",
            expand="",
            se="",
            act=arch.act if head else "",
            in_ch=stages[-1].out_ch,
            out_ch=head or num_classes,
            repeats=1,
        )
    )
    for row in rows:
        c = by_name[row["stage"]]
        row.update(out_res=c.out_res, macs=c.macs, params=c.params, activations=c.activations)
    return rows, cost


def describe(cfg: Any, out: TextIO | None = None) -> None:
    out = out or sys.stdout
    arch = arch_from_cfg(cfg.arch)
    resolution = cfg.get("resolution") or arch.resolution
    if resolution < 8:
        raise UserError(f"resolution must be >= 8, got {resolution}")
    if cfg.num_classes < 1:
        raise UserError(f"num_classes must be >= 1, got {cfg.num_classes}")
    rows, cost = describe_rows(arch, resolution, cfg.num_classes)
    totals = {
        "name": arch.name,
        "width": arch.width,
        "depth": arch.depth,
        "resolution": resolution,
        "num_classes": cfg.num_classes,
        "params": cost.params,
        "macs": cost.macs,
        "activations": cost.activations,
        "fvcore_total": cost.fvcore_total,
        "layers": sum(r["repeats"] for r in rows[1:-1]),
    }
    if cfg.format == "json":
        json.dump({"arch": arch.to_dict(), "totals": totals, "stages": rows}, out, indent=2)
        out.write("\n")
        return
    if cfg.format == "csv":
        import csv

        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
        return
    if cfg.format != "table":
        raise UserError(f"format must be table, csv or json, got {cfg.format!r}")
    header = ["stage", "op", "k", "s", "e", "se", "act", "in", "out", "n", "res", "macs", "params", "acts"]
    keys = ["stage", "op", "kernel", "stride", "expand", "se", "act", "in_ch", "out_ch", "repeats", "out_res"]
    table = [header] + [
        [str(r[k]) for k in keys] + [format_flops(r["macs"]), f"{r['params']:,}", f"{r['activations']:,}"]
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    print(
        f"{arch.name}  width={arch.width:g} depth={arch.depth:g} resolution={resolution} "
        f"classes={cfg.num_classes}",
        file=out,
    )
    for row in table:
        print(
            "  ".join(c.rjust(w) if i >= 2 else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))),
            file=out,
        )
    print(
        f"total: params {cost.params:,}  macs {cost.macs:,} ({format_flops(cost.macs)}, conv+linear)  "
        f"activations {cost.activations:,} (conv outputs)  "
        f"fvcore total {cost.fvcore_total:,} ({format_flops(cost.fvcore_total)}, + BN and pooling)  "
        f"layers {totals['layers']}",
        file=out,
    )
