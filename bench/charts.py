"""Charts of bench/RESULTS.md as SVG, written by hand (stdlib only): what the tables say, for
a reader who would rather look than read.

- pool-size-time.svg: median time against pool size (VMs), ours (installed) and the distro
  agent, for the actions whose cost grows with the pool (list, monitor) and reboot;
- pool-size-requests.svg: requests against pool size, the same actions;
- sick-pool.svg: time to reboot against hung hosts listed before the master (the sick-pool
  section), ours beside the distro agent and beside a login that tries the hosts in turn.

Every number comes from RESULTS.md's tables (0 ms per XAPI call; the sick-pool section), so
the charts can be redrawn from a report without running anything:

    python3 bench/charts.py [bench/RESULTS.md]
"""

from __future__ import annotations

import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

BENCH = Path(__file__).resolve().parent
OURS, DISTRO, BEFORE = "#1f77b4", "#d95f02", "#7f7f7f"
SIZE_ACTIONS = ("list", "monitor", "reboot")
MIN_MAX = "(min\u2013max)"  # as bench/run.py writes it, with an en dash
DASHES = {"list": "", "monitor": "6 3", "reboot": "2 3"}
# Login time per hung host when the session_url hosts are tried one after another, as before
# the race: login_timeout (default 10 s) each.
SEQUENTIAL_COST = 10.0
WIDTH, HEIGHT = 720, 420
LEFT, RIGHT, TOP, BOTTOM = 80, 190, 50, 60


@dataclass
class Series:
    label: str
    points: List[Tuple[float, float]]
    color: str
    dash: str = ""
    notes: Dict[float, str] = field(default_factory=dict)  # x -> a label at that point


@dataclass
class Axis:
    label: str
    low: float
    high: float
    log: bool
    ticks: List[Tuple[float, str]]

    def position(self, value: float, start: float, length: float) -> float:
        if self.log:
            low, high, value = math.log10(self.low), math.log10(self.high), math.log10(value)
        else:
            low, high = self.low, self.high
        return start + (value - low) / (high - low) * length


# ---------------------------------------------------------------------------------------------
# Reading RESULTS.md
# ---------------------------------------------------------------------------------------------

_DURATION = re.compile(r"([0-9.]+) (ms|s)\b")


def seconds_of(cell: str) -> Optional[float]:
    """The first duration in a cell ("44 ms (43-58 ms)", "1.05 s ..."), in seconds."""
    match = _DURATION.search(cell)
    if match is None:
        return None
    value = float(match.group(1))
    return value / 1000 if match.group(2) == "ms" else value


def table_after(report: str, heading: str) -> List[Dict[str, str]]:
    """The first Markdown table after `heading`, as rows of column -> cell."""
    start = report.find(heading)
    if start < 0:
        return []
    rows: List[List[str]] = []
    for line in report[start:].splitlines()[1:]:
        if line.startswith("|"):
            rows.append([cell.strip() for cell in line.strip().strip("|").split(" | ")])
        elif rows:
            break
    if len(rows) < 2:
        return []
    header = rows[0]
    return [dict(zip(header, row)) for row in rows[2:]]


def size_data(report: str) -> Dict[str, Dict[str, List[Tuple[float, float, int]]]]:
    """action -> agent -> [(VMs, median seconds, requests)], from the 0 ms table."""
    data: Dict[str, Dict[str, List[Tuple[float, float, int]]]] = {}
    for row in table_after(report, "## 0 ms per XAPI call"):
        action = row.get("action", "")
        if action not in SIZE_ACTIONS:
            continue
        requests = row.get("requests ours / distro", "").split(" / ")
        for agent, column, index in (("ours", f"ours (installed): median {MIN_MAX}", 0),
                                     ("distro", f"distro: median {MIN_MAX}", 1)):
            seconds = seconds_of(row.get(column, ""))
            if seconds is None or len(requests) != 2:
                continue
            data.setdefault(action, {}).setdefault(agent, []).append(
                (float(row["VMs"]), seconds, int(requests[index])))
    return data


def sick_data(report: str) -> Dict[str, List[Tuple[float, float, str]]]:
    """agent -> [(hung hosts listed first, median seconds, note)] from the sick-pool section
    (healthy = 0 hung; refusing and DNS rows are not on this chart)."""
    data: Dict[str, List[Tuple[float, float, str]]] = {"ours": [], "distro": []}
    for row in table_after(report, "## Sick pool"):
        case = row.get("case", "")
        if case != "healthy" and not case.endswith(" hung"):
            continue
        hung = 0.0 if case == "healthy" else float(case.split()[0])
        for agent, points in data.items():
            cell = row.get(f"{agent}: time", "")
            seconds = seconds_of(cell)
            if seconds is None:
                continue
            note = "killed: hangs" if "killed" in cell else \
                "not fenced" if "not fenced" in cell else ""
            points.append((hung, seconds, note))
    return data


# ---------------------------------------------------------------------------------------------
# Drawing
# ---------------------------------------------------------------------------------------------


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def log_ticks(low: float, high: float, unit: str) -> List[Tuple[float, str]]:
    ticks = []
    for exponent in range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1):
        value = 10.0 ** exponent
        if low <= value <= high:
            ticks.append((value, duration_text(value) if unit == "s" else f"{value:g}"))
    return ticks


def duration_text(seconds: float) -> str:
    return f"{seconds * 1000:g} ms" if seconds < 1 else f"{seconds:g} s"


def log_range(values: Sequence[float]) -> Tuple[float, float]:
    low, high = min(values), max(values)
    return 10.0 ** math.floor(math.log10(low)), 10.0 ** math.ceil(math.log10(high))


def chart(title: str, x: Axis, y: Axis, series: Sequence[Series], caption: str) -> str:
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def px(value: float) -> float:
        return x.position(value, LEFT, plot_w)

    def py(value: float) -> float:
        return TOP + plot_h - (y.position(value, 0, plot_h))

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
           f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">',
           f'<title>{_escape(title)}</title>',
           f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
           f'<text x="{LEFT}" y="24" font-size="15" font-weight="bold">{_escape(title)}</text>']
    for value, label in y.ticks:
        out.append(f'<line x1="{LEFT}" x2="{LEFT + plot_w}" y1="{py(value):.1f}" '
                   f'y2="{py(value):.1f}" stroke="#e0e0e0"/>')
        out.append(f'<text x="{LEFT - 6}" y="{py(value) + 4:.1f}" text-anchor="end">'
                   f'{_escape(label)}</text>')
    for value, label in x.ticks:
        out.append(f'<line x1="{px(value):.1f}" x2="{px(value):.1f}" y1="{TOP}" '
                   f'y2="{TOP + plot_h}" stroke="#f0f0f0"/>')
        out.append(f'<text x="{px(value):.1f}" y="{TOP + plot_h + 16}" '
                   f'text-anchor="middle">{_escape(label)}</text>')
    out.append(f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" '
               'stroke="#444"/>')
    out.append(f'<text x="{LEFT + plot_w / 2}" y="{HEIGHT - 22}" text-anchor="middle">'
               f'{_escape(x.label)}</text>')
    out.append(f'<text transform="translate(16 {TOP + plot_h / 2}) rotate(-90)" '
               f'text-anchor="middle">{_escape(y.label)}</text>')
    out.append(f'<text x="{LEFT}" y="{HEIGHT - 6}" font-size="10" fill="#555">'
               f'{_escape(caption)}</text>')
    for number, line in enumerate(series):
        out += _series(line, px, py, number)
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _series(line: Series, px: Callable[[float], float], py: Callable[[float], float],
            number: int) -> List[str]:
    points = sorted(line.points)
    if not points:
        return []
    path = " ".join(f"{px(xv):.1f},{py(yv):.1f}" for xv, yv in points)
    dash = f' stroke-dasharray="{line.dash}"' if line.dash else ""
    out = [f'<polyline points="{path}" fill="none" stroke="{line.color}" '
           f'stroke-width="2"{dash}/>']
    for xv, yv in points:
        out.append(f'<circle cx="{px(xv):.1f}" cy="{py(yv):.1f}" r="3.5" fill="{line.color}"/>')
        note = line.notes.get(xv)
        if note:
            out.append(f'<text x="{px(xv) + 6:.1f}" y="{py(yv) - 6:.1f}" font-size="10" '
                       f'fill="{line.color}">{_escape(note)}</text>')
    legend_y = TOP + 14 + number * 18
    out.append(f'<line x1="{WIDTH - RIGHT + 12}" x2="{WIDTH - RIGHT + 40}" y1="{legend_y - 4}" '
               f'y2="{legend_y - 4}" stroke="{line.color}" stroke-width="2"{dash}/>')
    out.append(f'<text x="{WIDTH - RIGHT + 46}" y="{legend_y}">{_escape(line.label)}</text>')
    return out


def size_charts(report: str, caption: str) -> Dict[str, str]:
    data = size_data(report)
    if not data:
        return {}
    sizes = sorted({size for agents in data.values() for points in agents.values()
                    for size, _, _ in points})
    x = Axis("pool size (VMs, log scale)", *log_range(sizes), True,
             [(size, f"{size:g}") for size in sizes])
    charts = {}
    for name, index, unit, title, y_label in (
            ("pool-size-time.svg", 1, "s", "Time against pool size: ours and the distro agent",
             "median time (log scale)"),
            ("pool-size-requests.svg", 2, "", "Requests against pool size",
             "XAPI requests per run (log scale)")):
        values = [point[index] for agents in data.values() for points in agents.values()
                  for point in points]
        y = Axis(y_label, *log_range(values), True, log_ticks(*log_range(values), unit))
        series = [Series(f"{action}, {agent}", [(p[0], p[index]) for p in points],
                         OURS if agent == "ours" else DISTRO, DASHES[action])
                  for action in SIZE_ACTIONS for agent, points in data.get(action, {}).items()]
        charts[name] = chart(title, x, y, series, caption)
    return charts


def sick_chart(report: str, caption: str) -> Dict[str, str]:
    data = sick_data(report)
    if not data["ours"]:
        return {}
    healthy = next((s for hung, s, _ in data["ours"] if hung == 0), 0.0)
    hung_counts = sorted({hung for points in data.values() for hung, _, _ in points})
    before = [(hung, healthy + SEQUENTIAL_COST * hung) for hung in hung_counts]
    top = max([s for points in data.values() for _, s, _ in points] + [s for _, s in before])
    top = math.ceil(top / 5) * 5
    x = Axis("hung hosts listed before the master", min(hung_counts), max(hung_counts), False,
             [(hung, f"{hung:g}") for hung in hung_counts])
    y = Axis("time to reboot (median)", 0.0, float(top), False,
             [(float(v), f"{v} s") for v in range(0, top + 1, 5)])
    series = [
        Series("ours (raced login)", [(h, s) for h, s, _ in data["ours"]], OURS),
        Series("distro (one URL)", [(h, s) for h, s, _ in data["distro"]], DISTRO,
               notes={h: n for h, _, n in data["distro"] if n}),
        Series("ours before: hosts in turn", before, BEFORE, "6 3"),
    ]
    return {"sick-pool.svg": chart("Time to fence through a sick pool", x, y, series,
                                   caption)}


def draw(report_path: Path, out_dir: Optional[Path] = None) -> List[Path]:
    """Write every chart RESULTS.md has data for; the paths written."""
    report = report_path.read_text(encoding="utf-8")
    out_dir = out_dir or report_path.parent
    caption = f"From {report_path.name} (bench/run.py); drawn by bench/charts.py."
    written = []
    for name, svg in {**size_charts(report, caption), **sick_chart(report, caption)}.items():
        path = out_dir / name
        path.write_text(svg, encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":
    for drawn in draw(Path(sys.argv[1]) if len(sys.argv) > 1 else BENCH / "RESULTS.md"):
        print(drawn)
