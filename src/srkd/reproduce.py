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
(``edsr64`` quick, ``edsr256`` full: ``teachers/<name>-x<s>.safetensors``). Every path in a config is relative to the folder
``srkd reproduce`` runs in (the repository root, as for ``srkd train``).
"""

from __future__ import annotations

import fnmatch
import json
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from srkd.errors import SrkdError

Mode = Literal["quick", "full"]
Kind = Literal["train", "teacher", "bicubic"]


@dataclass(frozen=True)
class Recipe:
    """Config stems (``configs/<stem>.yaml``) per mode and the overrides applied in both."""

    quick: str
    full: str
    overrides: tuple[str, ...] = ()

    def stem(self, mode: Mode) -> str:
        return self.quick if mode == "quick" else self.full


@dataclass(frozen=True)
class Cell:
    id: str  # run folder name, shared by every table that uses the same run
    label: str  # the paper's name for it (column or row label)
    kind: Kind
    recipe: Recipe | None
    scales: tuple[int, ...]
    row: tuple[tuple[str, Any], ...] = ()  # extra layout keys, e.g. (("model", "EDSR"),)
    modes: tuple[Mode, ...] = ("quick", "full")


@dataclass(frozen=True)
class PaperTable:
    key: str
    title: str
    rows: tuple[str, ...]  # pivot row keys
    column: str  # pivot column key
    cells: tuple[Cell, ...]
    sets: dict[str, tuple[str, ...]]  # mode -> benchmark sets
    paper: tuple[dict[str, Any], ...] = ()  # the published numbers, same keys as the measured entries
    notes: tuple[str, ...] = ()
    metrics: tuple[tuple[str, str], ...] = (("psnr", "PSNR"), ("ssim", "SSIM"))
    label_key: str = "method"  # the layout key a cell's label fills
    references: tuple[str, ...] = ()  # labels shown for comparison, never bolded (teacher, data-trained)
    figures: tuple[str, ...] = ("loss", "visual", "samples", "sweep")  # report figures (srkd.report.build.FIGURES)

    def cells_of(self, mode: Mode) -> list[Cell]:
        """The cells ``--quick`` or ``--full`` runs (some exist in one mode only)."""
        return [c for c in self.cells if mode in c.modes]


QUICK_SETS = ("Set5", "Set14", "B100")
FULL_SETS = ("Set5", "Set14", "B100", "Urban100")


# The EDSR teacher each mode's recipes distil from: --quick the 64 features / 32 blocks teachers (DUKD's ablation
# teacher, trainable on modest hardware), --full the papers' 256 / 32 (configs/teachers/edsr{64,256}-32-x*.yaml).
EDSR_TEACHER = {"quick": "edsr64", "full": "edsr256"}


def _fmt(recipe: Recipe, s: int, mode: Mode) -> tuple[str, tuple[str, ...]]:
    """Config stem and overrides of a cell: ``{s}`` is its scale, ``{edsr}`` the mode's EDSR teacher name."""
    keys = {"s": s, "edsr": EDSR_TEACHER[mode]}
    return recipe.stem(mode).format(**keys), tuple(o.format(**keys) for o in recipe.overrides)


# -- DFSR (data-free) -----------------------------------------------------------------------------------
def _switches(ad: bool, rs: bool, pd: bool) -> tuple[str, ...]:
    return (f"method.adversarial={str(ad).lower()}", f"method.reconstruction={str(rs).lower()}",
            f"method.progressive={str(pd).lower()}")


NOISE = ("method.inputs=noise", *_switches(False, False, False))
# VDSR's input is the HR-size image: the paper's "images random sampled from uniform distribution" are fed to it
# as they are (noise_size=input). LR-size noise bicubic-upscaled like a generator's output is the stricter,
# like-for-like control (row "M1 (LR noise)" of Table 2); both are reported.
VDSR_NOISE = (*NOISE, "method.noise_size=input")
VDSR_DF = Recipe("datafree-vdsr-quick", "datafree-vdsr-paper")
MULTI_SCALE = "method.scales=[2, 3, 4]"  # one generator per scale, a random scale per batch (the paper's VDSR setup)
VDSR_STUDENT = Recipe("vdsr-half-scratch-quick", "vdsr-half-scratch-paper", ("scale={s}",))
EDSR_DF = Recipe("datafree-edsr-quick", "datafree-edsr-paper",
                 ("scale={s}", "teacher.checkpoint=teachers/{edsr}-x{s}.safetensors"))
EDSR_HALF_STUDENT = Recipe("edsr-half-scratch-quick", "edsr-half-scratch-paper", ("scale={s}",))
ALL = (2, 3, 4)


def _vdsr_cells() -> list[Cell]:
    return [
        Cell("teacher@datafree-vdsr", "Teacher", "teacher", VDSR_DF, ALL),
        *[Cell(f"vdsr-half-scratch-x{s}", "Student", "train", VDSR_STUDENT, (s,)) for s in ALL],
        Cell("bicubic", "Bicubic", "bicubic", None, ALL),
        # The paper's multi-scale runs: the full recipe trains x2/x3/x4 and is shared with Table 2; the quick
        # recipe is x2 only (Table 2 and Fig. 4 measure x2), so Table 1 trains its own x2/x3/x4 quick runs.
        Cell("datafree-vdsr-m1", "Noise", "train", Recipe(VDSR_DF.quick, VDSR_DF.full, VDSR_NOISE), ALL,
             modes=("full",)),
        Cell("datafree-vdsr", "Ours", "train", VDSR_DF, ALL, modes=("full",)),
        Cell("datafree-vdsr-x234-m1", "Noise", "train", Recipe(VDSR_DF.quick, VDSR_DF.full,
                                                                (*VDSR_NOISE, MULTI_SCALE)), ALL, modes=("quick",)),
        Cell("datafree-vdsr-x234", "Ours", "train", Recipe(VDSR_DF.quick, VDSR_DF.full, (MULTI_SCALE,)), ALL,
             modes=("quick",)),
    ]


def _rows(text: str, keys: Sequence[str], columns: Sequence[Any], column: str, metrics: int = 2) -> tuple[dict, ...]:
    """Published numbers from compact text: each line = the ``keys`` values, then per column its metrics."""
    out = []
    for line in text.strip().splitlines():
        parts = line.split()
        head, vals = parts[: len(keys)], [float(v) for v in parts[len(keys):]]
        base = {k: (int(v) if k == "scale" else v) for k, v in zip(keys, head)}
        for i, col in enumerate(columns):
            e = {**base, column: col, "psnr": vals[metrics * i]}
            if metrics == 2:
                e["ssim"] = vals[metrics * i + 1]
            out.append(e)
    return tuple(out)


DFSR_T1_PAPER = """
Set5 2 37.59 0.9597 37.36 0.9588 33.69 0.9308 34.38 0.9376 37.20 0.9582
Set5 3 33.75 0.9232 33.50 0.9209 30.41 0.8692 30.53 0.8711 33.13 0.9172
Set5 4 31.40 0.8854 31.17 0.8819 28.43 0.8114 28.46 0.8120 30.71 0.8728
Set14 2 33.16 0.9140 32.97 0.9127 30.34 0.8701 30.81 0.8821 32.84 0.9109
Set14 3 29.92 0.8343 29.81 0.8323 27.64 0.7757 27.74 0.7780 29.63 0.8291
Set14 4 28.14 0.7706 28.01 0.7675 26.10 0.7044 26.12 0.7050 27.73 0.7617
B100 2 31.91 0.8964 31.79 0.8950 29.56 0.8437 30.07 0.8603 31.56 0.8920
B100 3 28.84 0.7983 28.74 0.7961 27.21 0.7391 27.27 0.7417 28.56 0.7920
B100 4 27.28 0.7256 27.21 0.7234 25.96 0.6680 25.97 0.6686 27.03 0.7187
Urban100 2 30.79 0.9147 30.48 0.9111 26.88 0.8407 27.27 0.8523 29.74 0.9017
Urban100 3 27.16 0.8291 26.92 0.8229 24.46 0.7351 24.55 0.7380 26.37 0.8081
Urban100 4 25.20 0.7533 25.01 0.7467 23.14 0.6577 23.16 0.6584 24.54 0.7298
"""
DFSR_T4_PAPER = """
Set5 2 38.19 0.9609 38.15 0.9610 33.69 0.9308 34.65 0.9425 37.67 0.9593
Set5 3 34.68 0.9294 34.54 0.9283 30.41 0.8692 30.22 0.8448 33.57 0.9203
Set5 4 32.48 0.8988 32.32 0.8968 28.43 0.8114 28.39 0.8021 31.78 0.8897
Set14 2 33.95 0.9202 33.78 0.9197 30.34 0.8701 31.35 0.8960 33.16 0.9138
Set14 3 30.53 0.8465 30.45 0.8447 27.64 0.7757 27.86 0.7776 29.77 0.8332
Set14 4 28.82 0.7879 28.72 0.7852 26.10 0.7044 26.27 0.7170 28.33 0.7758
B100 2 32.35 0.9109 32.26 0.9008 29.56 0.8437 30.32 0.8753 31.76 0.8942
B100 3 29.26 0.8096 29.18 0.8074 27.21 0.7391 27.09 0.7271 28.66 0.7945
B100 4 27.72 0.7420 27.65 0.7391 25.96 0.6680 25.88 0.6772 27.38 0.7292
Urban100 2 32.97 0.9359 32.50 0.9321 26.88 0.8407 28.56 0.8819 30.58 0.9119
Urban100 3 28.81 0.8659 28.50 0.8596 24.46 0.7351 24.64 0.7273 26.74 0.8195
Urban100 4 26.65 0.8036 26.38 0.7958 23.14 0.6577 23.40 0.6670 25.40 0.7609
"""
DFSR_METHODS = ("Teacher", "Student", "Bicubic", "Noise", "Ours")

DFSR_ABLATION = (  # Table 2: label, AD, RS, PD, published Set5 x2
    ("M1", False, False, False, 34.38),
    ("M2", False, True, False, 37.05),
    ("DFAD", True, False, False, 36.23),
    ("M3", True, True, False, 37.09),
    ("M4", True, False, True, 36.12),
    ("Ours", True, True, True, 37.20),
)
ABLATION_IDS = {"M1": "datafree-vdsr-m1", "M2": "datafree-vdsr-m2", "DFAD": "datafree-vdsr-dfad",
                "M3": "datafree-vdsr-m3", "M4": "datafree-vdsr-m4", "Ours": "datafree-vdsr"}


def _ablation_cell(label: str, ad: bool, rs: bool, pd: bool) -> Cell:
    overrides = VDSR_NOISE if label == "M1" else (() if (ad, rs, pd) == (True, True, True) else _switches(ad, rs, pd))
    flags = (("AD", ad), ("RS", rs), ("PD", pd))
    return Cell(ABLATION_IDS[label], label, "train", Recipe(VDSR_DF.quick, VDSR_DF.full, overrides), (2,), flags)


# The w_R sweep as multiples of each recipe's own w_R: the paper's (w_R = 1, mean L1) and the quick recipe's
# (w_R = 30 with the reference code's summed MSE, see configs/datafree-vdsr-quick.yaml) weigh L_R on different
# scales, so "x1" is the recipe itself. x0 is M4 (adversarial + progressive, no L_R): the same run.
WR_FACTORS = (0.0, 0.5, 1.0, 2.0, 3.0)
WR_RECIPE = {"quick": 30.0, "full": 1.0}  # method.w_r of datafree-vdsr-quick.yaml / datafree-vdsr-paper.yaml


def _wr_cell(f: float, mode: Mode) -> Cell:
    w = f * WR_RECIPE[mode]
    label = f"{w:g} (x{f:g})"
    if f == 1.0:
        return Cell("datafree-vdsr", label, "train", VDSR_DF, (2,), modes=(mode,))
    if f == 0.0:
        return replace(_ablation_cell("M4", True, False, True), label=label, row=(), modes=(mode,))
    return Cell(f"datafree-vdsr-wr{w:g}", label, "train",
                Recipe(VDSR_DF.quick, VDSR_DF.full, (f"method.w_r={w:g}",)), (2,), modes=(mode,))


def _edsr_df_cells() -> list[Cell]:
    cells: list[Cell] = []
    for s in ALL:
        cells += [
            Cell(f"teacher@datafree-edsr-x{s}", "Teacher", "teacher", EDSR_DF, (s,)),
            Cell(f"edsr-half-scratch-x{s}", "Student", "train", EDSR_HALF_STUDENT, (s,)),
            Cell("bicubic", "Bicubic", "bicubic", None, (s,)),
            Cell(f"datafree-edsr-x{s}-noise", "Noise", "train",
                 Recipe(EDSR_DF.quick, EDSR_DF.full, EDSR_DF.overrides + NOISE), (s,)),
            Cell(f"datafree-edsr-x{s}", "Ours", "train", EDSR_DF, (s,)),
        ]
    return cells


# -- DUKD (with data) -----------------------------------------------------------------------------------
DUKD_METHODS = {  # model -> methods of Table 2, in the paper's order
    "EDSR": ("Scratch", "KD", "FAKD", "CSD", "DUKD"),
    "RCAN": ("Scratch", "KD", "FAKD", "DUKD"),
    "SwinIR": ("Scratch", "KD", "DUKD"),
}


def _dukd_cell(model: str, method: str, s: int) -> Cell:
    stem = f"{model.lower()}-x{s}-{method.lower()}"
    return Cell(stem, method, "train", Recipe(f"{stem}-quick", stem), (s,), (("model", model),))


DUKD_T2_PAPER = """
2 EDSR Scratch 38.00 0.9605 33.57 0.9171 32.17 0.8996 31.96 0.9268
2 EDSR KD 38.04 0.9606 33.58 0.9172 32.19 0.8998 31.98 0.9269
2 EDSR FAKD 37.97 0.9604 33.47 0.9170 32.11 0.8987 31.66 0.9240
2 EDSR CSD 38.06 0.9607 33.65 0.9179 32.22 0.9004 32.26 0.9300
2 EDSR DUKD 38.15 0.9610 33.80 0.9195 32.27 0.9007 32.53 0.9320
2 RCAN Scratch 38.13 0.9610 33.78 0.9194 32.26 0.9007 32.63 0.9327
2 RCAN KD 38.18 0.9611 33.83 0.9197 32.29 0.9010 32.67 0.9329
2 RCAN FAKD 38.16 0.9611 33.82 0.9190 32.27 0.9010 32.53 0.9320
2 RCAN DUKD 38.23 0.9614 33.90 0.9201 32.33 0.9016 32.87 0.9349
2 SwinIR Scratch 38.01 0.9607 33.57 0.9178 32.19 0.9000 32.05 0.9279
2 SwinIR KD 38.04 0.9608 33.61 0.9184 32.22 0.9003 32.09 0.9282
2 SwinIR DUKD 38.13 0.9610 33.78 0.9194 32.26 0.9007 32.63 0.9327
3 EDSR Scratch 34.39 0.9270 30.32 0.8417 29.08 0.8046 27.99 0.8489
3 EDSR KD 34.43 0.9273 30.34 0.8422 29.10 0.8050 28.00 0.8491
3 EDSR FAKD 34.20 0.9259 30.24 0.8409 29.02 0.8031 27.69 0.8434
3 EDSR CSD 34.45 0.9275 30.32 0.8430 29.11 0.8061 28.21 0.8549
3 EDSR DUKD 34.59 0.9287 30.47 0.8448 29.20 0.8073 28.44 0.8578
3 RCAN Scratch 34.61 0.9288 30.45 0.8444 29.18 0.8074 28.59 0.8610
3 RCAN KD 34.61 0.9291 30.47 0.8447 29.21 0.8080 28.62 0.8612
3 RCAN FAKD 34.65 0.9291 30.45 0.8442 29.21 0.8087 28.52 0.8602
3 RCAN DUKD 34.74 0.9296 30.54 0.8458 29.25 0.8088 28.79 0.8646
3 SwinIR Scratch 34.41 0.9273 30.43 0.8437 29.12 0.8062 28.20 0.8537
3 SwinIR KD 34.44 0.9275 30.45 0.8443 29.14 0.8066 28.23 0.8545
3 SwinIR DUKD 34.55 0.9285 30.53 0.8456 29.20 0.8080 28.53 0.8604
4 EDSR Scratch 32.29 0.8965 28.68 0.7840 27.64 0.7380 26.21 0.7893
4 EDSR KD 32.30 0.8965 28.70 0.7842 27.64 0.7382 26.21 0.7897
4 EDSR FAKD 32.07 0.8938 28.57 0.7819 27.55 0.7358 25.86 0.7798
4 EDSR CSD 32.34 0.8974 28.72 0.7856 27.68 0.7396 26.34 0.7948
4 EDSR DUKD 32.47 0.8981 28.80 0.7866 27.71 0.7403 26.45 0.7963
4 RCAN Scratch 32.31 0.8970 28.69 0.7840 27.64 0.7380 26.37 0.7950
4 RCAN KD 32.45 0.8980 28.76 0.7860 27.67 0.7400 26.49 0.7980
4 RCAN FAKD 32.46 0.8980 28.75 0.7860 27.68 0.7400 26.42 0.7970
4 RCAN DUKD 32.56 0.8990 28.83 0.7870 27.72 0.7410 26.62 0.8020
4 SwinIR Scratch 32.31 0.8955 28.67 0.7833 27.61 0.7379 26.15 0.7884
4 SwinIR KD 32.27 0.8954 28.67 0.7833 27.62 0.7380 26.15 0.7887
4 SwinIR DUKD 32.41 0.8973 28.79 0.7860 27.69 0.7405 26.43 0.7972
"""
DUKD_T3_PAPER = """
— RCAN 32.31 0.8966 28.69 0.7842 27.64 0.7384 26.37 0.7949
EDSR RCAN 32.51 0.8986 28.80 0.7868 27.71 0.7406 26.59 0.8014
SwinIR RCAN 32.50 0.8986 28.82 0.7872 27.72 0.7408 26.59 0.8007
"""
# DUKD Table 4 (EDSR 64f/32b teacher -> 16f/32b student, x4): row label, zoom-in, zoom-out, augmentation.
DUKD_ABLATION = (
    ("KD", False, False, False),
    ("Zoom-in", True, False, False),
    ("Zoom-out", False, True, False),
    ("Zoom-in + zoom-out", True, True, False),
    ("Zoom-in + aug.", True, False, True),
    ("DUKD (all)", True, True, True),
)


def _dukd_ablation_cell(label: str, zi: bool, zo: bool, aug: bool, mode: Mode) -> Cell:
    """--quick: the quick EDSR x4 recipe is this very pair (64f/32b -> 16f/32b), so its DUKD run is shared with
    DUKD Table 2; --full: a recipe of its own (Table 2's full EDSR pair is 256f -> 64f)."""
    prefix = "edsr-x4-dukd" if mode == "quick" else "edsr64-x4-dukd"
    overrides = () if (zi, zo, aug) == (True, True, True) else (
        f"method.zoom_in={str(zi).lower()}", f"method.zoom_out={str(zo).lower()}", f"method.augment={str(aug).lower()}"
    )
    parts = "-".join(t for t, on in (("zi", zi), ("zo", zo), ("aug", aug)) if on) or "none"
    cid = prefix if not overrides else f"{prefix}-{parts}"
    return Cell(cid, label, "train", Recipe("edsr-x4-dukd-quick", "edsr64-x4-dukd", overrides), (4,),
                (("zoom-in", zi), ("zoom-out", zo), ("aug.", aug)), modes=(mode,))


DUKD_FIGURES = ("loss", "visual", "agreement", "gain")

# DUKD Fig. 4 (PSNR gain over scratch vs student size, x4): EDSR students of three widths (32 blocks), each trained
# from scratch, with response KD and with DUKD from one teacher. The width of the Table 2 recipes (--quick 16f from
# the 64f teacher, --full 64f from the 256f one) reuses Table 2's runs; the others override student.kwargs.n_feats.
# The paper gives the figure only (sizes unstated in the text): widths here span 75-98 % parameter reduction.
FIG4_FEATS: dict[Mode, tuple[int, ...]] = {"quick": (8, 16, 32), "full": (32, 64, 128)}
FIG4_METHODS = ("Scratch", "KD", "DUKD")
# Adam's stable learning rate shrinks as the network widens. The quick recipes' 2e-3 was tuned on the 16f student;
# on the 32f one it diverged (scratch, seed 10: loss 0.038 -> 0.41 at iterations 650-750, Set5 20.4 dB after the
# decay), so every method at that width runs at half of it: the gain is measured at one recipe per width. The full
# recipes' paper lr (1e-4) needs no change.
FIG4_LR: dict[tuple[Mode, int], str] = {("quick", 32): "optim.lr=1.0e-3"}


def _size_cell(method: str, feats: int, mode: Mode) -> Cell:
    base = _dukd_cell("EDSR", method, 4)
    assert base.recipe is not None
    row = (("student", f"EDSR {feats}f/32b"),)
    if feats == FIG4_FEATS[mode][1]:  # the recipe's own student
        return replace(base, row=row, modes=(mode,))
    lr = (FIG4_LR[mode, feats],) if (mode, feats) in FIG4_LR else ()
    recipe = replace(base.recipe, overrides=(f"student.kwargs.n_feats={feats}", *lr))
    return Cell(f"{base.id}-f{feats}", method, "train", recipe, (4,), row, modes=(mode,))


# -- the tables -----------------------------------------------------------------------------------------
TABLES: dict[str, PaperTable] = {
    "dfsr-table1": PaperTable(
        "dfsr-table1", "DFSR Table 1: VDSR teacher -> VDSR-half student, data-free (PSNR/SSIM)",
        ("dataset", "scale"), "method", tuple(_vdsr_cells()),
        {"quick": QUICK_SETS, "full": FULL_SETS},
        _rows(DFSR_T1_PAPER, ("dataset", "scale"), DFSR_METHODS, "method"),
        ("Student: VDSR-half trained on the 291 images (T91 + BSD200), one run per scale; the paper's student is "
         "one multi-scale network.",
         "Noise and Ours are one multi-scale network each (x2/x3/x4, a random scale per batch), as in the paper; "
         "in --quick their 1000 steps are shared by the three scales (Table 2's quick runs are x2 only)."),
        references=("Teacher", "Student"),
    ),
    "dfsr-table2": PaperTable(
        "dfsr-table2", "DFSR Table 2: ablation on VDSR x2 (AD adversarial, RS reconstruction, PD progressive)",
        ("method", "AD", "RS", "PD"), "dataset",
        tuple([_ablation_cell(n, ad, rs, pd) for n, ad, rs, pd, _p in DFSR_ABLATION]
              + [Cell("datafree-vdsr-m1-lr", "M1 (LR noise)", "train",
                      Recipe(VDSR_DF.quick, VDSR_DF.full, NOISE), (2,), (("AD", False), ("RS", False), ("PD", False))),
                 Cell("datafree-vdsr-data-kd", "KD on 291 images", "train",
                      Recipe("datafree-vdsr-quick-data", "datafree-vdsr-quick-data"), (2,),
                      (("AD", None), ("RS", None), ("PD", None)), modes=("quick",)),
                 Cell("vdsr-half-scratch-x2", "Student (291 images)", "train", VDSR_STUDENT, (2,),
                      (("AD", None), ("RS", None), ("PD", None)))]),
        {"quick": ("Set5",), "full": ("Set5",)},
        tuple({"method": n, "AD": ad, "RS": rs, "PD": pd, "dataset": "Set5", "psnr": p}
              for n, ad, rs, pd, p in DFSR_ABLATION)
        + ({"method": "Student (291 images)", "AD": None, "RS": None, "PD": None, "dataset": "Set5", "psnr": 37.36},),
        ("The multi-scale runs are measured at x2 only, as in the paper.",
         "M1 feeds uniform noise at VDSR's input size (the paper's Noise); M1 (LR noise) draws it at LR size and "
         "bicubic-upscales it like a generator's output. KD on 291 images: the same distillation on real patches, "
         "the ceiling of any synthetic input distribution at this budget (--quick only)."),
        metrics=(("psnr", "PSNR"), ("ssim", "SSIM")),
        references=("KD on 291 images", "Student (291 images)"),
    ),
    "dfsr-fig4": PaperTable(
        "dfsr-fig4", "DFSR Fig. 4: influence of the reconstruction weight w_R (VDSR, Set5 x2)",
        ("w_R",), "dataset", tuple(_wr_cell(f, m) for m in ("quick", "full") for f in WR_FACTORS),
        {"quick": ("Set5",), "full": ("Set5",)}, (),
        ("The paper gives this as a plot (best at w_R = 1), without numbers. Values are multiples of the recipe's "
         "w_R (quick: 30 with summed MSE; full: the paper's 1 with mean L1); x0 is the M4 run of Table 2.",),
        label_key="w_R",
    ),
    "dfsr-table4": PaperTable(
        "dfsr-table4", "DFSR Table 4: EDSR teacher -> EDSR-half student, data-free (PSNR/SSIM)",
        ("dataset", "scale"), "method", tuple(_edsr_df_cells()),
        {"quick": QUICK_SETS, "full": FULL_SETS},
        _rows(DFSR_T4_PAPER, ("dataset", "scale"), DFSR_METHODS, "method"),
        ("Teachers: the paper's EDSR (256 features, 32 blocks) trained on DIV2K; --quick uses the shipped teachers.",),
        references=("Teacher", "Student"),
    ),
    "dukd-table2": PaperTable(
        "dukd-table2", "DUKD Table 2: Scratch / KD / FAKD / CSD / DUKD students of EDSR, RCAN, SwinIR",
        ("scale", "model", "method"), "dataset",
        tuple(replace(_dukd_cell(model, method, s), modes=("quick", "full") if s == 4 else ("full",))
              for s in ALL for model, methods in DUKD_METHODS.items() for method in methods),
        {"quick": QUICK_SETS, "full": FULL_SETS},
        _rows(DUKD_T2_PAPER, ("scale", "model", "method"), FULL_SETS, "dataset"),
        ("--quick runs the x4 cells only (the quick recipes are x4); --full all three scales.",
         "The paper's models are trained on DIV2K; --quick recipes train on T91 + BSD200 + General100."),
        figures=DUKD_FIGURES,
    ),
    "dukd-table3": PaperTable(
        "dukd-table3", "DUKD Table 3: heterogeneous distillation into RCAN (x4)",
        ("teacher", "student"), "dataset",
        (
            Cell("rcan-x4-scratch", "—", "train", Recipe("rcan-x4-scratch-quick", "rcan-x4-scratch"), (4,),
                 (("student", "RCAN"),)),
            Cell("edsr-rcan-x4-dukd", "EDSR", "train", Recipe("edsr-rcan-x4-dukd-quick", "edsr-rcan-x4-dukd"), (4,),
                 (("student", "RCAN"),)),
            Cell("swinir-rcan-x4-dukd", "SwinIR", "train",
                 Recipe("swinir-rcan-x4-dukd-quick", "swinir-rcan-x4-dukd"), (4,), (("student", "RCAN"),)),
        ),
        {"quick": QUICK_SETS, "full": FULL_SETS},
        _rows(DUKD_T3_PAPER, ("teacher", "student"), FULL_SETS, "dataset"),
        label_key="teacher",
        figures=DUKD_FIGURES,
    ),
    "dukd-table4": PaperTable(
        "dukd-table4", "DUKD Table 4: ablation of zoom-in, zoom-out and invertible augmentations (EDSR x4)",
        ("method", "zoom-in", "zoom-out", "aug."), "dataset",
        tuple(_dukd_ablation_cell(*row, mode) for mode in ("quick", "full") for row in DUKD_ABLATION),
        {"quick": QUICK_SETS, "full": FULL_SETS}, (),
        ("Teacher EDSR 64f/32b, student 16f/32b. The paper's numbers for this table are not in the text available "
         "here; it reports +0.31 dB on Urban100 from zoom-in and +0.16 dB more from zoom-out and augmentations.",),
        figures=DUKD_FIGURES,
    ),
    "dukd-fig4": PaperTable(
        "dukd-fig4", "DUKD Fig. 4: PSNR gain over scratch vs student size (EDSR x4)",
        ("student", "method"), "dataset",
        tuple(_size_cell(m, f, mode) for mode in ("quick", "full") for f in FIG4_FEATS[mode] for m in FIG4_METHODS),
        {"quick": QUICK_SETS, "full": FULL_SETS}, (),
        ("The paper gives this as a plot (Set14 and Urban100, x4) without numbers or student sizes. Teacher: EDSR "
         "64f/32b (--quick) or 256f/32b (--full); students EDSR of three widths, 32 blocks; the middle width is "
         "Table 2's student and shares its runs.",
         "--quick: the 32f students (all three methods) train at Adam lr 1e-3, half the 16f-tuned recipe's 2e-3, "
         "which diverged on the 32f scratch student.",),
        figures=("loss", "gain"),
    ),
}


# -- planning -------------------------------------------------------------------------------------------
@dataclass
class Planned:
    cell: Cell
    scales: list[int]
    config: Path | None = None
    overrides: list[str] = field(default_factory=list)
    run_dir: Path | None = None  # train cells
    model: str | None = None  # reference cells: checkpoint path or "bicubic"
    results_file: Path | None = None
    status: str = "todo"  # done | evaluate | resume | train | measure | blocked
    problems: list[str] = field(default_factory=list)
    cfg: Any = None  # the resolved TrainConfig of train cells

    def commands(self, sets: Sequence[str]) -> list[str]:
        q = shlex.quote
        data = ",".join(sets)
        if self.cell.kind == "train":
            sets_ = " ".join(f"--set {q(o)}" for o in self.overrides)
            train = f"srkd train {q(str(self.config))} {sets_} --out {q(str(self.run_dir))}".replace("  ", " ")
            if self.status == "resume":
                train += " --resume auto"
            model = str(self.run_dir / "last.safetensors") if self.run_dir else "?"
            evals = [f"srkd eval --model {q(model)} --scale {s} --data {q(data)}" for s in self.scales]
            return ([] if self.status in ("done", "evaluate") else [train]) + ([] if self.status == "done" else evals)
        if self.status == "done":
            return []
        model = self.model or f"<teacher.checkpoint of {self.config}>"
        return [f"srkd eval --model {q(str(model))} --scale {s} --data {q(data)}" for s in self.scales]


@dataclass
class Plan:
    table: PaperTable
    mode: Mode
    root: Path
    sets: list[str]  # the benchmark sets' names (table rows/columns)
    cells: list[Planned]
    set_problems: list[str] = field(default_factory=list)
    set_specs: list[str] = field(default_factory=list)  # as given (names or folders)

    @property
    def problems(self) -> list[str]:
        """Each missing file or blocking fact once, with the cells it blocks."""
        cells: dict[str, list[str]] = {}
        for p in self.cells:
            for m in p.problems:
                ids = cells.setdefault(m, [])
                if p.cell.id not in ids:
                    ids.append(p.cell.id)
        return list(self.set_problems) + [f"{m} (cell{'s' if len(ids) > 1 else ''} {', '.join(ids)})"
                                          for m, ids in cells.items()]

    @property
    def out(self) -> Path:
        return self.root / self.table.key

    def describe(self) -> str:
        lines = [f"{self.table.key} (--{self.mode}): {self.table.title}",
                 f"runs: {self.root}   report: {self.out}   sets: {', '.join(self.sets)}", ""]
        for p in self.cells:
            sc = "/".join(f"x{s}" for s in p.scales)
            src = f"{p.config}" + (" " + " ".join(p.overrides) if p.overrides else "") if p.config else (p.model or "")
            lines.append(f"[{p.status:>8}] {p.cell.id:<28} {p.cell.label:<22} {sc:<9} {src}")
            lines += [f"           $ {c}" for c in p.commands(self.sets)]
            lines += [f"           ! {m}" for m in p.problems]
        if self.problems:
            lines += ["", f"missing or blocking ({len(self.problems)}):"] + [f"  - {m}" for m in self.problems]
        return "\n".join(lines)


def default_configs_dir() -> Path:
    local = Path("configs")
    if local.is_dir():
        return local
    return Path(__file__).resolve().parents[2] / "configs"  # the source checkout, when installed editable


def _same_config(run_dir: Path, cfg: Any) -> bool:
    """Does the run folder hold a run of this very config (bookkeeping keys aside)?"""
    import yaml

    from srkd.engine.config import resolved_config
    from srkd.report.build import BOOKKEEPING, _flat

    try:
        saved = resolved_config(yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8")) or {})
    except (OSError, yaml.YAMLError):
        return False
    now = json.loads(json.dumps(cfg.model_dump(mode="json")))
    # precision is how the run executed, like the device: a run of the recipe from before it said "auto" (bf16)
    # is still that recipe's run
    skip = BOOKKEEPING | {"train.precision"}
    a = {k: v for k, v in _flat(saved).items() if k not in skip}
    b = {k: v for k, v in _flat(now).items() if k not in skip}
    return a == b


def _teacher_problem(teacher: str | None, scale: int, config: Path) -> str | None:
    """Why the teacher a config names cannot serve this cell (missing file, another scale), or None."""
    if not teacher:
        return None
    if not Path(teacher).is_file():
        return f"teacher checkpoint {teacher} (named by {config})"
    from srkd.checkpoint.io import read_metadata
    from srkd.models import get_class

    try:
        meta = read_metadata(teacher)
    except SrkdError as exc:
        return str(exc)
    if scale not in meta["scales"] and not getattr(get_class(meta["arch"]), "upsample_input", False):
        served = "/".join(f"x{s}" for s in meta["scales"])
        return f"teacher checkpoint {teacher} is a {served} model, the cell needs x{scale} (named by {config})"
    return None


def plan(
    table: str,
    mode: Mode = "quick",
    *,
    out: str | Path | None = None,
    sets: Sequence[str] | None = None,
    scales: Sequence[int] | None = None,
    only: Sequence[str] | None = None,
    overrides: Sequence[str] = (),
    resume: bool = False,
    configs_dir: str | Path | None = None,
    data_root: str | None = None,
) -> Plan:
    """What ``srkd reproduce`` would do: every cell with its config, run folder, status and problems.

    Nothing is trained or measured here; configs are loaded and validated, and the files they name are checked.
    """
    from srkd.config_base import load_config
    from srkd.engine.config import TrainConfig
    from srkd.engine.state import list_checkpoints
    from srkd.report.build import reference_cache
    from srkd.report.runs import RESULTS_FILE, WEIGHTS, missing, read_results, resolve_sets

    if table not in TABLES:
        raise SrkdError(f"unknown table {table!r} (known: {', '.join(TABLES)})")
    t = TABLES[table]
    root = Path(out) if out is not None else Path("runs") / "reproduce" / mode
    cdir = Path(configs_dir) if configs_dir is not None else default_configs_dir()
    set_specs = list(sets or t.sets[mode])
    cells = t.cells_of(mode)
    if only:
        cells = [c for c in cells if any(fnmatch.fnmatch(c.id, pat) or fnmatch.fnmatch(c.label, pat) for pat in only)]
    if scales:
        cells = [replace(c, scales=tuple(s for s in c.scales if s in scales)) for c in cells]
        cells = [c for c in cells if c.scales]
    if not cells:
        raise SrkdError(f"{table}: no cell matches --only/--scales (cells: {', '.join(dict.fromkeys(c.id for c in t.cells))})")

    names: list[str] = []
    set_problems: list[str] = []
    for spec in set_specs:
        try:
            names.append(resolve_sets([spec], data_root)[0].name)
        except SrkdError as exc:
            names.append(spec)
            set_problems.append(f"dataset {spec}: {exc}")

    planned: list[Planned] = []
    for cell in cells:
        p = Planned(cell, list(cell.scales))
        planned.append(p)
        if cell.kind == "train":
            p.run_dir = root / cell.id
            p.results_file = p.run_dir / RESULTS_FILE
        if cell.kind == "bicubic":
            p.model, p.results_file = "bicubic", reference_cache(root / "cache", "bicubic")
            p.status = "done" if not missing(read_results(p.results_file, "bicubic"), names, p.scales) else "measure"
            continue
        assert cell.recipe is not None
        stem, own = _fmt(cell.recipe, cell.scales[0], mode)
        p.config = cdir / f"{stem}.yaml"
        p.overrides = list(own) + (list(overrides) if cell.kind == "train" else [])
        if not p.config.is_file():
            p.problems.append(f"config {p.config}")
            p.status = "blocked"
            continue
        try:
            cfg = load_config(TrainConfig, p.config, p.overrides)
        except SrkdError as exc:
            p.problems.append(str(exc))
            p.status = "blocked"
            continue
        teacher = cfg.teacher.checkpoint if cfg.teacher is not None else None
        teacher_problem = _teacher_problem(teacher, cfg.scale, p.config)
        if cell.kind == "teacher":
            if not teacher:
                p.problems.append(f"{p.config}: names no teacher.checkpoint")
            elif teacher_problem:
                p.problems.append(teacher_problem)
            else:
                p.model, p.results_file = teacher, reference_cache(root / "cache", teacher)
                p.status = "done" if not missing(read_results(p.results_file, teacher), names, p.scales) else "measure"
            if p.problems:
                p.status = "blocked"
            continue

        from srkd.distill import get_method

        if get_method(cfg.method.name).Method.uses_teacher(cfg.method) and teacher_problem:
            p.problems.append(teacher_problem)
        if cfg.student.init and not Path(cfg.student.init).is_file():
            p.problems.append(f"student.init checkpoint {cfg.student.init} (named by {p.config})")
        run_dir = p.run_dir
        assert run_dir is not None and p.results_file is not None
        cfg.out_dir = str(run_dir)
        p.cfg = cfg
        if (run_dir / "config.yaml").is_file() and not _same_config(run_dir, cfg):
            p.problems.append(f"{run_dir} holds a run of another config: remove it, or choose another --out")
        weights = run_dir / WEIGHTS
        trained = 0
        if weights.is_file():
            from srkd.report.runs import Run

            trained = Run(run_dir, {}).trained_iterations
        if weights.is_file() and trained >= cfg.train.iterations:
            p.status = "done" if not missing(read_results(p.results_file, weights), names, p.scales) else "evaluate"
        elif list_checkpoints(run_dir):
            p.status = "resume"
            if not resume:
                p.problems.append(f"{run_dir} holds an unfinished run: continue it with --resume")
        else:
            p.status = "train"
        if p.problems:
            p.status = "blocked"
    return Plan(t, mode, root, names, planned, set_problems, set_specs)


def _entries(plan: Plan) -> list[dict[str, Any]]:
    """The measured numbers in the table's long format (only what is already measured)."""
    from srkd.report.runs import WEIGHTS, read_results

    out = []
    for p in plan.cells:
        if p.results_file is None:
            continue
        model = p.model if p.cell.kind != "train" else (p.run_dir / WEIGHTS if p.run_dir else None)
        if model is None:
            continue
        res = read_results(p.results_file, model) if (model == "bicubic" or Path(model).is_file()) else {}
        for s in p.scales:
            for name in plan.sets:
                r = res.get(s, {}).get(name)
                if r is not None:
                    out.append({plan.table.label_key: p.cell.label, **dict(p.cell.row), "dataset": name, "scale": s,
                                "psnr": r["psnr_y"], "ssim": r["ssim_y"]})
    return out


def paper_sections(plan: Plan) -> list[Any]:
    """The table in the paper's layout: measured, published, and the PSNR difference."""
    from srkd.report.html import Section, Table
    from srkd.report.tables import pivot_table

    t = plan.table
    measured = _entries(plan)
    order = list(dict.fromkeys(c.label for c in t.cells_of(plan.mode)))  # all cells, not just --only's
    col_order = order if t.column == t.label_key else None
    row_order = {"dataset": plan.sets} if "dataset" in t.rows else {}
    if t.label_key in t.rows:
        row_order[t.label_key] = order
    fmt = {"scale": lambda s: f"×{s}"}
    blocks: list[Any] = []
    within = t.rows.index(t.label_key) if t.label_key in t.rows else None
    if within is None:
        where = "of each row"
    else:
        group = " and ".join(t.rows[:within])
        where = f"of each column{f' per {group}' if group else ''}"
    aside = f", {' / '.join(t.references)} aside" if t.references else ""
    if measured:
        md, html = pivot_table(measured, t.rows, t.column, metrics=t.metrics, column_order=col_order,
                               row_order=row_order, fmt_row=fmt, no_best=t.references, best_within=within)
        blocks.append(Table(md, html, f"Measured with `srkd reproduce {t.key} --{plan.mode}` (PSNR dB / SSIM, Y "
                                      f"channel, border = scale); best {where} in bold{aside}."))
    else:
        blocks.append("Not shown: no cell is measured yet.")
    if t.paper:
        md, html = pivot_table(list(t.paper), t.rows, t.column, metrics=t.metrics, column_order=col_order,
                               row_order=row_order, fmt_row=fmt, no_best=t.references, best_within=within)
        blocks.append(Table(md, html, "Published in the paper."))
        keys = (*t.rows, t.column)
        published = {tuple(e[k] for k in keys): e for e in t.paper}
        diffs = [{**e, "dpsnr": e["psnr"] - published[tuple(e[k] for k in keys)]["psnr"]}
                 for e in measured if tuple(e[k] for k in keys) in published]
        if diffs:
            md, html = pivot_table(diffs, t.rows, t.column, metrics=(("dpsnr", "ΔPSNR"),), column_order=col_order,
                                   row_order=row_order, fmt_row=fmt, no_best=order, best_within=within)
            blocks.append(Table(md, html, "Measured minus published PSNR (dB)."))
    blocks += list(t.notes)
    if plan.mode == "quick":
        blocks.append("Note: --quick recipes are sized for a 2-core CPU (short schedules, smaller training sets); "
                      "expect lower numbers than the paper's.")
    return [Section(t.title, blocks)]


def execute(
    plan: Plan,
    *,
    device: str = "auto",
    data_root: str | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> tuple[Path, Path]:
    """Run the plan: measure references, train (or resume) and evaluate each cell, then write the report."""
    from srkd.engine.trainer import train
    from srkd.report.runs import WEIGHTS, evaluate_cached, resolve_sets

    if plan.problems:
        raise SrkdError(
            f"{plan.table.key} --{plan.mode} cannot start; missing or blocking: " + "; ".join(plan.problems)
        )
    bsets = resolve_sets(plan.set_specs or plan.sets, data_root)
    refs = [p for p in plan.cells if p.cell.kind != "train"]
    runs = [p for p in plan.cells if p.cell.kind == "train"]
    for p in refs:
        if p.status != "done":
            log(f"measuring {p.cell.label} ({p.model}) at {', '.join(f'x{s}' for s in p.scales)}")
            evaluate_cached(p.model, p.results_file, bsets, p.scales, device=device,  # type: ignore[arg-type]
                            data_root=data_root, progress=progress)
    for i, p in enumerate(runs, 1):
        assert p.run_dir is not None
        if p.status in ("train", "resume"):
            log(f"[{i}/{len(runs)}] training {p.cell.id} ({p.cell.label}): {p.config} {' '.join(p.overrides)}")
            train(p.cfg, resume="auto" if p.status == "resume" else None)
        if p.status != "done":
            log(f"[{i}/{len(runs)}] evaluating {p.cell.id}")
            evaluate_cached(p.run_dir / WEIGHTS, p.results_file, bsets, p.scales, device=device,  # type: ignore[arg-type]
                            data_root=data_root, progress=progress,
                            extra={"cell": p.cell.id, "config": str(p.config), "overrides": p.overrides})
        p.status = "done"
    return write_report(plan, device=device, data_root=data_root, progress=progress, log=log)


def write_report(
    plan: Plan,
    *,
    device: str = "auto",
    data_root: str | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> tuple[Path, Path]:
    """``<out>/<table>/report.{md,html}``: the paper-layout tables first, then the figures of the runs."""
    from srkd.report.build import build_report, results_section
    from srkd.report.runs import Run, load_run

    labels = [p.cell.label for p in plan.cells if p.cell.kind == "train"]
    runs: list[Run] = []
    seen: set[Path] = set()
    for p in plan.cells:
        if p.cell.kind != "train" or p.run_dir is None or p.run_dir in seen or not (p.run_dir / "config.yaml").is_file():
            continue
        seen.add(p.run_dir)
        label = p.cell.label if labels.count(p.cell.label) == 1 else f"{p.cell.label} ({p.cell.id})"
        runs.append(load_run(p.run_dir, label))
    all_scales = sorted({s for p in plan.cells for s in p.scales})
    preface = paper_sections(plan)
    if not runs:
        from srkd.report.html import html_page, markdown_page

        plan.out.mkdir(parents=True, exist_ok=True)
        md, html = plan.out / "report.md", plan.out / "report.html"
        md.write_text(markdown_page(plan.table.title, preface, plan.out / "figures"), encoding="utf-8")
        html.write_text(html_page(plan.table.title, preface), encoding="utf-8")
        return md, html
    return build_report(
        runs, plan.out, sets=plan.set_specs or plan.sets, scales=all_scales, device=device, data_root=data_root,
        figures=plan.table.figures, title=f"srkd reproduce {plan.table.key} --{plan.mode}",
        preface=lambda data: preface + ([] if "Teacher" in plan.table.references else [results_section(data, False)]),
        cache_dir=plan.root / "cache", progress=progress, log=log,
        generic_table=False,
    )


__all__ = ["Cell", "Plan", "Planned", "PaperTable", "Recipe", "TABLES", "execute", "plan", "write_report"]
