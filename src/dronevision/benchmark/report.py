"""report.md and the frames/s chart."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dronevision.benchmark.core import MODES, measured_entries

log = logging.getLogger(__name__)


def md_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table: floats with 2 decimals, None as a dash; columns of numbers right-aligned.

    Examples:
        >>> print(md_table(["runtime", "ms", "n"], [["ort-cpu", 2.5, 3], ["openvino", None, 12]]))
        | runtime | ms | n |
        |---|---:|---:|
        | ort-cpu | 2.50 | 3 |
        | openvino | – | 12 |
    """

    def cell(v: Any) -> str:
        return "–" if v is None else f"{v:,.2f}" if isinstance(v, float) else str(v)

    numeric = [
        bool(rows) and all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) for v in col)
        for col in zip(*rows)
    ] or [False] * len(header)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" if n else "---" for n in numeric) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _round(value: float | None) -> int | None:
    return None if value is None else round(value)


def _mode_rows(entries: Mapping[str, Any], mode: str) -> list[list[Any]]:
    rows = []
    for name, batch, r in measured_entries(entries):
        s, shape = r[mode], "x".join(map(str, r["input_shape"]))
        row = [name, r["provider"], r["precision"], batch, r["threads"], r.get("requests_per_call", 1), shape]
        row += [s["p50_ms"], s["p90_ms"], s["p99_ms"]]
        row += [s["fps"], f"{s['iterations']} ({s['kept']})"]
        if mode == "model_only":
            diff = r.get("max_abs_diff_vs_ort_cpu")
            row.append("–" if diff is None else f"{diff:.3g}")
        rows.append(row)
    return rows


def _capacity_rows(entries: Mapping[str, Any]) -> list[list[Any]]:
    rows = []
    for name, batch, r in measured_entries(entries):
        c = r["capacity"]
        needed = c["objects_per_frame_needed"]
        rows.append([name, batch, r["e2e"]["fps"], round(c["footage_hours_per_week_per_machine"])])
        rows[-1] += [c["machines_needed"], "yes" if c["passes"] else "no", _round(c["detections_per_week"])]
        rows[-1] += [c["detections_vs_target"], "–" if needed is None else f"{needed:.3g}"]
    return rows


def report_markdown(result: Mapping[str, Any]) -> str:
    """report.md: the setup, a table per mode, the capacity table, the target and its assumptions."""
    inp, target, images, timing = result["input"], result["target"], result["images"], result["timing"]
    entries, threads = result["runtimes"], result["threads"]
    shape = "(" + ", ".join("dynamic" if d is None else str(d) for d in inp["shape"]) + ")"
    if images["kind"] == "random":
        frames = f"{images['frame_wh'][0]}x{images['frame_wh'][1]} random JPEG frames (quality 90)"
    else:
        w, h = images["mean_wh"]
        frames = f"{images['timed_images']} images of the {images['kind']} {images['source']} (mean {w:.0f}x{h:.0f})"
    versions = ", ".join(f"{k} {v}" for k, v in result["host"].items() if k not in ("cpu", "cores"))
    text = [
        f"# Benchmark: {Path(result['model']).name}",
        "",
        f"- model: `{result['model']}`",
        f"- input: `{inp['name']}` {inp['dtype']} {shape}, imgsz {inp['imgsz'][0]}, stride {inp['stride']}, "
        f"{inp['classes']} classes",
        f"- host: {result['host']['cpu']}, {result['host']['cores']} cores; {versions}",
        f"- threads: {threads} per session (OpenCV and torch get the same number)",
        f"- frames: {frames}",
        f"- timing: {timing['warmup']} warm-up calls, then timed calls for at least {timing['min_time_s']} s "
        f"({timing['min_iters']} to {timing['max_iters']} calls); latencies sigma-clipped (2 sigma, up to 3 passes). "
        "Latency is one call: one batch, or with OpenVINO streams 2 x streams batches in flight (requests per call);"
        " frames/s = batch x requests per call / p50.",
        "",
    ]
    header = ["runtime", "provider", "precision", "batch", "threads", "requests per call", "input shape"]
    header += ["p50 ms", "p90 ms", "p99 ms"]
    header += ["frames/s", "calls (kept)"]
    for mode, title in MODES.items():
        extra = ["max abs diff vs ort-cpu"] if mode == "model_only" else []
        text += [f"## {title[0].upper()}{title[1:]}", "", md_table(header + extra, _mode_rows(entries, mode)), ""]
    skipped = [f"- {name}: skipped: {e['skipped']}" for name, e in entries.items() if "skipped" in e]
    skipped += [
        f"- {name} batch {b}: skipped: {r['skipped']}"
        for name, e in entries.items()
        for b, r in e.get("batches", {}).items()
        if "skipped" in r
    ]
    if skipped:
        text += ["Not timed:", "", *skipped, ""]
    header = ["runtime", "batch", "e2e frames/s", "footage h/week per machine", "machines for the target", "passes"]
    header += ["detections/week (one machine)", "detections / target sightings", "objects/frame needed"]
    inputs = target["footage_hours_per_week"] * 3600 * target["sample_fps"] * target["tiles_per_frame"]
    objects = target["objects_per_frame"]
    objects_text = (
        f"{objects:.3f} ({target['objects_per_frame_source']})"
        if objects is not None
        else "not known (set target.objects_per_frame, or images= a labelled dataset), so no detections/week"
    )
    text += [
        "## Capacity against the target",
        "",
        md_table(header, _capacity_rows(entries)),
        "",
        f"**Passes** means that one machine, running {target['hours_per_week_per_machine']} h a week, processes all "
        f"{target['footage_hours_per_week']:,} hours of footage a week at that runtime's end-to-end speed; otherwise "
        "*machines for the target* says how many such machines it takes.",
        "",
        "## Target and assumptions",
        "",
        f"- footage: {target['footage_hours_per_week']:,} h/week, analysed at {target['sample_fps']} frames per "
        f"second of footage, {target['tiles_per_frame']} model input(s) per frame: {inputs:,.0f} model inputs a week.",
        f"- a machine: this host, {threads} threads, one request in flight, {target['hours_per_week_per_machine']} "
        "h/week. Footage h/week per machine = e2e frames/s x hours per week per machine / (sample fps x tiles per "
        "frame) (the 3600 s cancel); machines = ceil(footage h/week / footage h/week per machine).",
        "- end to end = JPEG decode + letterbox + inference + NMS per model input. Video decoding, tracking, storage "
        "and anything else on the machine are not counted; with tiles, each tile is charged a full decode.",
        f"- objects per frame: {objects_text}.",
        f"- target sightings: {target['target_sightings_per_week']:,} a week (from the seed). Detections/week counts "
        "an object once per analysed frame it appears in (the frames one machine analyses, at most the target "
        "footage), so it is an upper bound on sightings; *objects/frame needed* is the density at which those frames "
        "would reach the target.",
        "",
    ]
    if target.get("track"):
        text += _track_section(target["track"])
    return "\n".join(text)


def _track_section(tracked: Mapping[str, Any]) -> list[str]:
    """The capacity measured on the real job, from a track run's summary.json."""
    m, a = tracked["measured"], tracked["assumed"]
    every = f"one frame per {m['every_s']} s of footage" if m["every_s"] else "every frame"
    vs = tracked["sightings_vs_target"]
    return [
        "## Capacity measured on the real job (a track run)",
        "",
        f"From {tracked['source']}: {m['footage_s']:,.0f} s of footage tracked ({every}, {m['runtime']}), "
        "decode + detect + track + write end to end.",
        "",
        md_table(
            ["figure", "value", "kind"],
            [
                ["footage h per machine-hour", m["footage_hours_per_machine_hour"], "measured"],
                ["sightings per footage hour", m["sightings_per_footage_hour"], "measured"],
                ["footage h/week", a["footage_hours_per_week"], "assumed (target)"],
                ["hours a machine runs a week", a["hours_per_week_per_machine"], "assumed (target)"],
                ["footage h/week per machine", tracked["footage_hours_per_week_per_machine"], "derived"],
                ["machines for the target", tracked["machines_needed"], "derived"],
                [
                    "sightings a week",
                    tracked["sightings_per_week"],
                    "derived: assumes the archive looks like this footage",
                ],
                ["sightings / target sightings", "–" if vs is None else vs, f"target {a['target_sightings_per_week']}"],
            ],
        ),
        "",
        "Unlike the detections above, a sighting counts each tracked object once, however many frames show it.",
        "",
    ]


def plot_fps(result: Mapping[str, Any], path: Path) -> Path:
    """Bar chart of frames/s per runtime and batch, model-only and end to end (matplotlib's Agg canvas)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    entries = result["runtimes"]
    names = list(entries)
    batches = sorted({int(b) for e in entries.values() for b in e.get("batches", {})})
    fig = Figure(figsize=(5 + 1.6 * len(names), 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    width = 0.8 / max(len(batches), 1)
    for ax, (mode, title) in zip(fig.subplots(1, 2), MODES.items()):
        for j, batch in enumerate(batches):
            xs, ys = [], []
            for i, name in enumerate(names):
                r = entries[name].get("batches", {}).get(str(batch))
                if r is not None and "skipped" not in r:
                    xs.append(i - 0.4 + width * (j + 0.5))
                    ys.append(r[mode]["fps"])
            bars = ax.bar(xs, ys, width, label=f"batch {batch}")
            ax.bar_label(bars, fmt="%.0f", fontsize=7)
        for i, name in enumerate(names):
            if "skipped" in entries[name]:
                ax.text(i, 0.03, "skipped", transform=ax.get_xaxis_transform(), ha="center", fontsize=8, color="grey")
        ax.set_xticks(range(len(names)), names)
        ax.set_ylabel("frames/s")
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=8)
    shape = "x".join(str(d) for d in result["input"]["imgsz"])
    fig.suptitle(f"{Path(result['model']).name}: {shape} input, {result['threads']} threads", fontsize=10)
    fig.savefig(path, dpi=110)
    return path
