"""The build report: ``report.json`` and a self-contained ``report.html``.

``write_report(report, folder)`` writes both. ``report`` is a plain dict (``BuildReport``
fields below); the HTML has no external file or URL: its plots are inline SVG drawn with
matplotlib, its style inline CSS.

Fields: ``board``, ``device``, ``model``, ``fits`` (bool), ``ii_cycles``, ``clock_mhz``,
``fmax_mhz`` (None where nothing measured it), ``images_per_second``, ``latency_cycles``,
``resources`` (per kind ``lut``/``ff``/``bram36``/``dsp``...: ``budget``, ``estimate``,
``synthesised``, the last None where no tool ran), ``layers`` (per matrix layer:
``name``, ``cycles``, ``pe``, ``simd``, ``estimate`` per kind), ``flow`` (what each stage
used and whether timing was measured), ``notes`` (sentences worth reading), ``files``;
optional: ``timing_met``, ``link_images_per_second``, ``writable_weights``,
``explanation`` (the optimiser's lines: what it chose and what binds).
"""

from __future__ import annotations

import html
import io
import json
import os
from pathlib import Path
from typing import Any

__all__ = ["CSS", "figure", "fmt", "render_html", "svg", "write_report"]

KIND_NAMES = {"lut": "LUT", "ff": "FF", "bram36": "Block RAM", "dsp": "DSP",
              "lutram": "LUTRAM", "spram": "SPRAM"}



def _placement(layer) -> str:
    """Where a report row's weights live: chip, or DRAM with its tile height."""
    where = layer.get("weights")
    if where == "dram":
        return f"DRAM (tile {layer.get('tile_rows')})"
    return "chip" if where else ""

def svg(fig) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    text = buf.getvalue()
    return text[text.index("<svg"):]


def figure(width: float = 7.5, height: float = 3.2):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    matplotlib.rcParams["svg.fonttype"] = "none"  # text stays text: small, selectable
    return Figure(figsize=(width, height), layout="constrained")


def _layer_cycles_plot(report: dict[str, Any]) -> str:
    layers = report.get("layers") or []
    if not layers:
        return ""
    fig = figure()
    ax = fig.subplots()
    names = [la["name"] for la in layers]
    cycles = [la["cycles"] for la in layers]
    ii = report["ii_cycles"]
    ax.bar(names, cycles, color=["#c0392b" if c == max(cycles) else "#2e86c1" for c in cycles])
    ax.axhline(ii, color="#444", linestyle="--", linewidth=1, label=f"II {ii:,} cycles")
    ax.set(ylabel="cycles per image", title="cycles per image of each layer and part")
    ax.legend(loc="upper right")
    ax.tick_params(axis="x", labelrotation=45)
    return svg(fig)


def _layer_resources_plot(report: dict[str, Any]) -> str:
    layers = report.get("layers") or []
    res = report.get("resources") or {}
    kinds = [k for k in ("lut", "bram36") if k in res and res[k].get("budget")]
    if not layers or not kinds:
        return ""
    fig = figure(height=2.8 * len(kinds))
    axes = fig.subplots(len(kinds), 1, squeeze=False)[:, 0]
    for ax, kind in zip(axes, kinds):
        values = [la.get("estimate", {}).get(kind, 0) for la in layers]
        budget = res[kind]["budget"]
        ax.barh([la["name"] for la in layers], values, color="#2e86c1")
        ax.set(xlabel=f"{KIND_NAMES.get(kind, kind)} (estimate; budget {budget:,})",
               title=f"{KIND_NAMES.get(kind, kind)} per layer")
        ax.invert_yaxis()
    return svg(fig)


def _estimate_vs_synthesis_plot(report: dict[str, Any]) -> str:
    res = report.get("resources") or {}
    kinds = [k for k, v in res.items() if v.get("budget")]
    if not kinds:
        return ""
    fig = figure()
    ax = fig.subplots()
    xs = range(len(kinds))
    share = lambda k, key: (res[k].get(key) or 0) / res[k]["budget"] * 100
    ax.bar([x - 0.2 for x in xs], [share(k, "estimate") for k in kinds], 0.4,
           label="estimate", color="#85c1e9")
    synth = [share(k, "synthesised") for k in kinds]
    if any(res[k].get("synthesised") is not None for k in kinds):
        ax.bar([x + 0.2 for x in xs], synth, 0.4, label="synthesised", color="#1f618d")
    ax.axhline(100, color="#c0392b", linewidth=1, label="budget")
    ax.set_xticks(list(xs), [KIND_NAMES.get(k, k) for k in kinds])
    ax.set(ylabel="% of the board's budget", title="resources: estimate and synthesis")
    ax.legend(loc="upper right")
    return svg(fig)


def fmt(value: Any) -> str:
    if value is None:
        return "&mdash;"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) < 1e6 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return html.escape(str(value))


CSS = """
body { font-family: system-ui, sans-serif; max-width: 60em; margin: 2em auto; color: #222;
       line-height: 1.45; padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { font-size: 1.2em; margin-top: 1.8em; }
.sub { color: #666; margin-top: 0; }
table { border-collapse: collapse; margin: 0.6em 0; }
th, td { border-bottom: 1px solid #ddd; padding: 0.25em 0.9em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f4f6f7; }
.verdict { display: inline-block; padding: 0.2em 0.7em; border-radius: 0.3em; color: #fff;
           font-weight: 600; }
.fits { background: #1e8449; } .nofit { background: #c0392b; }
.note { background: #fef9e7; border-left: 4px solid #f5b041; padding: 0.4em 0.8em;
        margin: 0.4em 0; }
svg { max-width: 100%; height: auto; }
code { background: #f4f6f7; padding: 0 0.25em; }
"""


def render_html(report: dict[str, Any]) -> str:
    """The report as one self-contained HTML page."""
    r = report
    verdict = ('<span class="verdict fits">fits</span>' if r.get("fits")
               else '<span class="verdict nofit">does not fit</span>')
    head = [
        ("board", f"{r.get('board')} ({r.get('device')})"),
        ("initiation interval", f"{fmt(r.get('ii_cycles'))} cycles per image"),
        ("design clock", f"{fmt(r.get('clock_mhz'))} MHz"),
        ("post-route Fmax", "not measured (no place-and-route ran)" if r.get("fmax_mhz") is None
         else f"{fmt(r.get('fmax_mhz'))} MHz"),
        ("timing", "not measured" if r.get("timing_met") is None
         else ("met" if r["timing_met"] else "NOT met")),
        ("throughput", f"{fmt(r.get('images_per_second'))} images/s at the design clock"),
        ("link", "&mdash;" if r.get("link_images_per_second") is None
         else f"at most {fmt(r['link_images_per_second'])} images/s over the UART"),
        ("weights", "&mdash;" if r.get("writable_weights") is None
         else ("written by the host at run time" if r["writable_weights"]
               else "fixed in the bitstream")),
        ("latency", f"{fmt(r.get('latency_cycles'))} cycles"
         + (f" ({r['latency_cycles'] / r['clock_mhz']:,.1f} &micro;s)"
            if r.get("latency_cycles") and r.get("clock_mhz") else "")),
    ]
    rows = "".join(f"<tr><td>{k}</td><td>{v}</td></tr>" for k, v in head)
    res_rows = "".join(
        f"<tr><td>{KIND_NAMES.get(k, k)}</td><td>{fmt(v.get('budget'))}</td>"
        f"<td>{fmt(v.get('estimate'))}</td><td>{fmt(v.get('synthesised'))}</td></tr>"
        for k, v in (r.get("resources") or {}).items())
    layer_rows = "".join(
        f"<tr><td>{html.escape(la['name'])}</td><td>{fmt(la.get('pe'))}</td>"
        f"<td>{fmt(la.get('simd'))}</td><td>{_placement(la)}</td><td>{fmt(la['cycles'])}</td>"
        f"<td>{fmt(la.get('estimate', {}).get('lut'))}</td>"
        f"<td>{fmt(la.get('estimate', {}).get('bram36'))}</td>"
        f"<td>{html.escape(str(la.get('memory', '')))}</td></tr>"
        for la in r.get("layers") or [])
    flow_rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{fmt(v)}</td></tr>"
                        for k, v in (r.get("flow") or {}).items())
    notes = "".join(f'<p class="note">{html.escape(n)}</p>' for n in r.get("notes") or [])
    why = "".join(f"<li>{html.escape(line)}</li>" for line in r.get("explanation") or [])
    why = f"<h2>The design chosen</h2><ul>{why}</ul>" if why else ""
    files = "".join(f"<li><code>{html.escape(f)}</code></li>" for f in r.get("files") or [])
    plots = [p for p in (_layer_cycles_plot(r), _layer_resources_plot(r),
                         _estimate_vs_synthesis_plot(r)) if p]
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>bnnhw build: {html.escape(str(r.get('model')))} on {html.escape(str(r.get('board')))}</title>
<style>{CSS}</style></head><body>
<h1>{html.escape(str(r.get('model')))} on {html.escape(str(r.get('board')))} {verdict}</h1>
<p class="sub">bnnhw build report</p>
{notes}
<table>{rows}</table>
{why}
<h2>Resources</h2>
<table><tr><th>kind</th><th>budget</th><th>estimate</th><th>synthesised</th></tr>{res_rows}</table>
{''.join(plots[2:3])}
<h2>Layers</h2>
<table><tr><th>layer</th><th>PE</th><th>SIMD</th><th>weights</th><th>cycles/image</th>
<th>LUT (est.)</th>
<th>block RAM (est.)</th><th>memory</th></tr>{layer_rows}</table>
{''.join(plots[:2])}
<h2>Flow</h2>
<table>{flow_rows}</table>
<h2>Files</h2><ul>{files}</ul>
</body></html>
"""


def write_report(report: dict[str, Any], folder: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write ``report.json`` and ``report.html`` into ``folder``; return their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    json_path, html_path = folder / "report.json", folder / "report.html"
    json_path.write_text(json.dumps(report, indent=1, default=str) + "\n")
    html_path.write_text(render_html(report))
    return json_path, html_path
