"""Tables and figures of the papers, from run directories or from tensors (``srkd report``, ``srkd demo``).

Building blocks, usable on their own::

    from srkd.report import visual_comparison, loss_curves, results_table, html_page
    png = visual_comparison({"Bicubic": bic, "Student": sr}, hr)        # crops with PSNR under each
    md, html = results_table([{"method": "Bicubic", "psnr": 28.4}, ...])
    page = html_page("srkd demo", [("Results", (md, html)), ("Visual comparison", png)])

and the whole report: ``build_report(run_dirs, out)``.
"""

from __future__ import annotations

from srkd.report.build import build_report
from srkd.report.figures import auto_crop, bar_pairs, line_plot, loss_curves, visual_comparison
from srkd.report.html import Figure, Html, Section, Table, html_page, markdown_page
from srkd.report.runs import Run, load_run
from srkd.report.tables import pivot_table, results_table

__all__ = [
    "Figure",
    "Html",
    "Run",
    "Section",
    "Table",
    "auto_crop",
    "bar_pairs",
    "build_report",
    "html_page",
    "line_plot",
    "load_run",
    "loss_curves",
    "markdown_page",
    "pivot_table",
    "results_table",
    "visual_comparison",
]
