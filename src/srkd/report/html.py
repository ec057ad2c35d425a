"""A report as sections of blocks, written as one self-contained HTML page and as Markdown.

The HTML embeds every image as a base64 PNG ``data:`` URI and carries its own CSS, so ``report.html`` opens the
same from an e-mail attachment, an offline laptop or a CI artefact. The Markdown twin references the PNG files
written beside it (``figures/``), which is what GitHub and most viewers render.

A block is one of: ``str`` (a paragraph of plain text), ``bytes`` (a PNG), :class:`Figure`, :class:`Table` or
an ``(markdown, html)`` pair as returned by :func:`srkd.report.tables.results_table`, or :class:`Html` (raw HTML
that has no Markdown form).
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Figure:
    png: bytes
    caption: str = ""
    name: str = "figure"  # file stem of the Markdown twin's PNG


@dataclass
class Table:
    markdown: str
    html: str
    caption: str = ""


@dataclass
class Html:
    html: str


Block = str | bytes | Figure | Table | Html | tuple[str, str]


@dataclass
class Section:
    title: str
    blocks: list[Block] = field(default_factory=list)


SectionLike = Section | tuple[str, Block | Sequence[Block]]

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}
h1{font-size:1.6em;border-bottom:2px solid #ddd;padding-bottom:.3em}h2{font-size:1.25em;margin-top:2em}
table{border-collapse:collapse;margin:1em 0;font-size:.9em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right}th{background:#f4f4f4;text-align:center}
tbody th{text-align:left;font-weight:600}
figure{margin:1em 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.85em;color:#555;margin-top:.3em}p.note{color:#8a5a00;background:#fff8e6;padding:.4em .7em;
border-left:3px solid #e0a800}
"""


def _as_blocks(content: Block | Sequence[Block]) -> list[Block]:
    if isinstance(content, (str, bytes, Figure, Table, Html)):
        return [content]
    if isinstance(content, tuple) and len(content) == 2 and isinstance(content[0], str) and isinstance(content[1], str):
        return [(content[0], content[1])]  # an (markdown, html) table pair
    return list(content)


def _sections(sections: Sequence[SectionLike]) -> list[Section]:
    out = []
    for s in sections:
        if isinstance(s, Section):
            out.append(s)
        else:
            title, content = s
            out.append(Section(title, _as_blocks(content)))
    return out


def png_data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _block_html(block: Block) -> str:
    if isinstance(block, bytes):
        block = Figure(block)
    if isinstance(block, tuple):
        block = Table(*block)
    if isinstance(block, Figure):
        cap = f"<figcaption>{html.escape(block.caption)}</figcaption>" if block.caption else ""
        alt = html.escape(block.caption or block.name, quote=True)
        return f'<figure><img src="{png_data_uri(block.png)}" alt="{alt}">{cap}</figure>'
    if isinstance(block, Table):
        cap = f"<figcaption>{html.escape(block.caption)}</figcaption>" if block.caption else ""
        return f"<figure>{block.html}{cap}</figure>"
    if isinstance(block, Html):
        return block.html
    cls = ' class="note"' if block.startswith(("Not shown", "Missing", "Note")) else ""
    return f"<p{cls}>{html.escape(block)}</p>"


def html_page(title: str, sections: Sequence[SectionLike]) -> str:
    """One self-contained HTML page (inline CSS, images as base64 PNG): opens anywhere, offline."""
    body = [f"<h1>{html.escape(title)}</h1>"]
    for s in _sections(sections):
        body.append(f"<section><h2>{html.escape(s.title)}</h2>")
        body += [_block_html(b) for b in s.blocks]
        body.append("</section>")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width,initial-scale=1"><title>{html.escape(title)}</title>'
        f"<style>{CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "figure"


def markdown_page(title: str, sections: Sequence[SectionLike], figure_dir: Path, link_prefix: str = "figures") -> str:
    """Markdown of the same report; figures are written as PNG files to ``figure_dir`` and linked relatively."""
    lines = [f"# {title}", ""]
    used: set[str] = set()
    for s in _sections(sections):
        lines += [f"## {s.title}", ""]
        for block in s.blocks:
            if isinstance(block, bytes):
                block = Figure(block)
            if isinstance(block, tuple):
                block = Table(*block)
            if isinstance(block, Figure):
                stem = _slug(block.name)
                n = 1
                while stem in used:
                    n += 1
                    stem = f"{_slug(block.name)}-{n}"
                used.add(stem)
                figure_dir.mkdir(parents=True, exist_ok=True)
                (figure_dir / f"{stem}.png").write_bytes(block.png)
                lines += [f"![{block.caption or stem}]({link_prefix}/{stem}.png)", ""]
                if block.caption:
                    lines += [f"*{block.caption}*", ""]
            elif isinstance(block, Table):
                lines += [block.markdown.rstrip("\n"), ""]
                if block.caption:
                    lines += [f"*{block.caption}*", ""]
            elif isinstance(block, Html):
                continue
            else:
                lines += [block, ""]
    return "\n".join(lines).rstrip("\n") + "\n"


__all__ = ["Block", "Figure", "Html", "Section", "Table", "html_page", "markdown_page", "png_data_uri"]
