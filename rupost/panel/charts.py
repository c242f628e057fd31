"""Small line charts drawn as inline SVG on the server (no JavaScript)."""
from __future__ import annotations

WIDTH, HEIGHT, PAD = 640, 170, 28


def line_chart(labels: list[str], series: dict[str, list[int]]) -> dict:
    """Polyline points for each series on a shared scale, and the axis labels."""
    peak = max([max(values) for values in series.values() if values] + [1])
    count = max(len(labels), 2)
    step = (WIDTH - 2 * PAD) / (count - 1)

    def y(value: int) -> float:
        return round(HEIGHT - PAD - (HEIGHT - 2 * PAD) * value / peak, 1)

    lines = [{"name": name, "total": sum(values),
              "points": " ".join(f"{round(PAD + i * step, 1)},{y(v)}" for i, v in enumerate(values))}
             for name, values in series.items()]
    ticks = [{"x": round(PAD + i * step, 1), "label": labels[i][11:16]}
             for i in range(0, len(labels), max(1, len(labels) // 6))]
    return {"width": WIDTH, "height": HEIGHT, "pad": PAD, "peak": peak, "lines": lines, "ticks": ticks,
            "top": PAD, "bottom": HEIGHT - PAD}
