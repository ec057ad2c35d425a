"""Result tables as Markdown (for READMEs and terminals) and HTML (for the self-contained report).

Two shapes cover every table of both papers:

- :func:`results_table`: one row per dict, columns = keys (the demo's "method x PSNR/SSIM/params/speed-up");
- :func:`pivot_table`: the papers' layout, long-format entries pivoted so that some keys name the row
  (DFSR: dataset, scale) and one key names a column group holding PSNR and SSIM (DFSR: method). DUKD's
  layout is the same pivot with rows (scale, model, method) and the dataset as the column group.

Numbers are formatted the way the papers print them: PSNR with 2 decimals, SSIM with 4. The best PSNR/SSIM of a
row is bold, as in the papers, leaving out reference columns (the teacher) that a student is not meant to beat.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeGuard

MISSING = "–"


def fmt_value(key: str, value: Any) -> str:
    """A cell as text: PSNR-like keys with 2 decimals, SSIM-like with 4, other floats with 4 significant digits."""
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return "✓" if value else "×"
    if isinstance(value, float):
        if math.isnan(value):
            return MISSING
        k = key.lower()
        if "ssim" in k:
            return f"{value:.4f}"
        if "psnr" in k or "db" in k or "gain" in k:
            return f"{value:.2f}"
        return f"{value:.4g}"
    return str(value)


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _md(header: Sequence[str], body: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(_md_escape(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_md_escape(c) for c in row) + " |" for row in body]
    return "\n".join(lines) + "\n"


def results_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> tuple[str, str]:
    """``(markdown, html)`` of one row per mapping; ``columns`` default to the keys in first-seen order.

    Values may be numbers (formatted by :func:`fmt_value` after their column name) or ready-made strings.
    """
    if columns is None:
        seen: dict[str, None] = {}
        for row in rows:
            seen.update(dict.fromkeys(row))
        columns = list(seen)
    cells = [[fmt_value(c, row.get(c)) for c in columns] for row in rows]
    md = _md(columns, cells)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in r) + "</tr>" for r in cells)
    return md, f'<table class="results"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _order(values: Iterable[Any], preferred: Sequence[Any] | None) -> list[Any]:
    seen = list(dict.fromkeys(values))
    if not preferred:
        return seen
    first = [v for v in preferred if v in seen]
    return first + [v for v in seen if v not in first]


def pivot_table(
    entries: Sequence[Mapping[str, Any]],
    rows: Sequence[str],
    column: str,
    *,
    metrics: Sequence[tuple[str, str]] = (("psnr", "PSNR"), ("ssim", "SSIM")),
    column_order: Sequence[Any] | None = None,
    row_order: Mapping[str, Sequence[Any]] | None = None,
    no_best: Iterable[Any] = ("Teacher",),
    fmt_row: Mapping[str, Any] | None = None,
    best_within: int | None = None,
) -> tuple[str, str]:
    """``(markdown, html)`` of ``entries`` in a paper's layout.

    Each entry holds the ``rows`` keys, the ``column`` key and the ``metrics`` keys (e.g. ``{"dataset": "Set5",
    "scale": 2, "method": "KD", "psnr": 37.1, "ssim": 0.958}``). Rows and column groups keep first-seen order
    unless ``row_order``/``column_order`` say otherwise; a repeated leading row key is printed once, as the
    papers do. Missing cells show ``–``. ``no_best``: column groups never bolded (e.g. the teacher).
    ``fmt_row``: per row key, a callable turning its value into text (e.g. ``2 -> "x2"``).
    ``best_within``: for tables whose *rows* are the methods (the index of the method in ``rows``), bold the best
    of each column instead, among the rows that share the row keys before that index (e.g. rows ``(scale, model,
    method)``, index 2: the best method per scale and model); ``no_best`` then names rows (methods) to leave out.
    """
    fmt_row = dict(fmt_row or {})
    row_order = dict(row_order or {})
    columns = _order((e[column] for e in entries), column_order)
    keys = list(dict.fromkeys(tuple(e[r] for r in rows) for e in entries))
    # Stable sort, last key first, so the first row key groups the rows: each key by its preferred order, then
    # by first-seen order (a key without a preference must still be sorted, or a later key would ungroup it).
    for i in reversed(range(len(rows))):
        rank = {v: n for n, v in enumerate(_order((k[i] for k in keys), row_order.get(rows[i])))}

        def by_rank(k: tuple[Any, ...], i: int = i, rank: dict[Any, int] = rank) -> int:
            return rank[k[i]]

        keys.sort(key=by_rank)
    cell: dict[tuple[tuple[Any, ...], Any], Mapping[str, Any]] = {}
    for e in entries:
        cell[(tuple(e[r] for r in rows), e[column])] = e
    skip = set(no_best)

    def best(key: tuple[Any, ...], col: Any, metric: str) -> float | None:
        if best_within is None:
            if col in skip:
                return None
            pairs = [(key, c) for c in columns if c not in skip]
        else:
            if key[best_within] in skip:
                return None
            pairs = [(k, col) for k in keys if k[:best_within] == key[:best_within] and k[best_within] not in skip]
        vals = [float(cell[p][metric]) for p in pairs if p in cell and _finite(cell[p].get(metric))]
        return max(vals) if len(vals) > 1 else None

    def row_text(i: int, value: Any) -> str:
        f = fmt_row.get(rows[i])
        if f is not None:
            return str(f(value))
        return "" if value is None else fmt_value(rows[i], value)

    md_rows, html_rows = [], []
    previous: tuple[Any, ...] | None = None
    for key in keys:
        shown = []
        for i, v in enumerate(key):
            same_prefix = previous is not None and key[: i + 1] == previous[: i + 1] and i < len(rows) - 1
            shown.append("" if same_prefix else row_text(i, v))
        previous = key
        values: list[tuple[str, bool]] = []
        for c in columns:
            found = cell.get((key, c))
            for m, _title in metrics:
                v = found.get(m) if found is not None else None
                b = best(key, c, m)
                is_best = b is not None and _finite(v) and abs(float(v) - b) < 1e-12
                values.append((fmt_value(m, float(v)) if _finite(v) else MISSING, is_best))
        md_rows.append(shown + [f"**{t}**" if b else t for t, b in values])
        html_rows.append(
            "<tr>"
            + "".join(f"<th>{html.escape(s)}</th>" for s in shown)
            + "".join(f"<td><b>{html.escape(t)}</b></td>" if b else f"<td>{html.escape(t)}</td>" for t, b in values)
            + "</tr>"
        )
    titles = [t for _m, t in metrics]
    md_header = [_header(r) for r in rows] + [f"{c} {t}" for c in columns for t in titles]
    md = _md(md_header, md_rows)
    top = "".join(f'<th rowspan="2">{html.escape(_header(r))}</th>' for r in rows) + "".join(
        f'<th colspan="{len(titles)}">{html.escape(str(c))}</th>' for c in columns
    )
    sub = "".join(f"<th>{html.escape(t)}</th>" for _c in columns for t in titles)
    out = (
        f'<table class="paper"><thead><tr>{top}</tr><tr>{sub}</tr></thead>'
        f"<tbody>{''.join(html_rows)}</tbody></table>"
    )
    return md, out


def _header(key: str) -> str:
    """A row key as a column header: first letter up, the rest kept (``AD`` stays ``AD``, not ``Ad``)."""
    return key[:1].upper() + key[1:]


def _finite(v: Any) -> TypeGuard[float]:
    try:
        return v is not None and not isinstance(v, bool) and math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


__all__ = ["MISSING", "fmt_value", "pivot_table", "results_table"]
