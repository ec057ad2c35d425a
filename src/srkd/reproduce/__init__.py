"""The papers' tables as lists of cells, and the runner behind ``srkd reproduce TABLE``.

A table is a set of **cells**. A training cell is one run: a config file of ``configs/`` (one file per mode:
``--quick`` recipes sized for a 2-core CPU, ``--full`` the paper's settings) plus ``--set`` overrides that turn
the method's switches (e.g. the DFSR ablations are one config with ``method.adversarial=false`` ...). A
reference cell is measured without training: the teacher its sibling config names, or bicubic.

Runs live in ``<out>/<cell id>`` (default ``runs/reproduce/<quick|full>``); a cell id names the same run in
every table, so the DUKD scratch RCAN is trained once for Tables 2 and 3, and DFSR's full method once for
Table 1, Table 2 and the w_R sweep. A cell is finished when its ``results.json`` holds every (scale, set) the
table needs, measured on the final weights; an interrupted run continues with ``--resume``.

Overrides may contain ``{s}``, replaced by the cell's scale, and ``{edsr}``, the mode's EDSR teacher name
(``edsr64`` quick, ``edsr256`` full: ``teachers/<name>-x<s>.safetensors``). Every path in a config is relative to
the folder ``srkd reproduce`` runs in (the repository root, as for ``srkd train``).

The package is split by job, so that the tables can be read (and checked against the papers) without the code:

- ``papers/<paper>.yaml``: the cells of each table and the published numbers, as data;
- :mod:`srkd.reproduce.tables`: their types, and the reader that refuses a malformed file;
- :mod:`srkd.reproduce.planner`: :func:`plan`, what a run would do (``--dry-run``), nothing run yet;
- :mod:`srkd.reproduce.runner`: :func:`execute` and :func:`write_report`.
"""

from __future__ import annotations

from srkd.reproduce.planner import Plan, Planned, plan
from srkd.reproduce.runner import execute, paper_sections, write_report
from srkd.reproduce.tables import TABLES, VDSR_DF, WR_RECIPE, Cell, PaperTable, Recipe

__all__ = ["Cell", "Plan", "Planned", "PaperTable", "Recipe", "TABLES", "VDSR_DF", "WR_RECIPE", "execute",
           "paper_sections", "plan", "write_report"]
