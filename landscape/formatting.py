"""Table cells and tables: the one ``value ± se`` formatter and the one table renderer.

Cells (:func:`fmt`): a real number is written with ``digits`` significant digits
(``f"{x:.4g}"``), its uncertainty with ``se_digits`` (``f"{se:.2g}"``) after ``" ± "``.
Integers are written exactly, strings as they are. A missing value (None or NaN) is
``"-"``; a missing or non-finite uncertainty is left out (one value cannot give a
spread: see :mod:`landscape.uncertainty`). Whether the ``±`` part is a standard error or
a standard deviation is for the caller's header or note to say.

Tables (:func:`render_table`): a header row and body rows of cells, one of

- ``"text"``: left-aligned columns two spaces apart under a dashed rule (the terminal);
- ``"markdown"``: a pipe table (``|`` inside a cell escaped as ``\\|``);
- ``"latex"``: a booktabs ``tabular`` (``\\toprule``/``\\midrule``/``\\bottomrule``, needs
  ``\\usepackage{booktabs}``) with every cell escaped by :func:`latex_escape`, except a
  :class:`TeX` cell (already LaTeX, e.g. ``TeX(r"$\\lambda_{\\max}$")``), passed through as it is;
- ``"csv"``: RFC 4180 via :mod:`csv` (``\\r\\n`` line ends), cells written raw (numbers
  unrounded, None as an empty field), so the file keeps the stored values;
- ``"html"``: a ``<table>`` with ``<thead>``/``<tbody>``, every cell HTML-escaped.

Outside CSV a cell that is not a string is formatted with :func:`fmt`. File kinds
(markdown, latex, csv) end with a newline; text and html do not.

A leaf: imports the standard library only and computes nothing.
"""
from __future__ import annotations

import csv
import html
import io
import math
import numbers
from typing import Any, Literal, Mapping, Sequence

TableKind = Literal["text", "markdown", "latex", "csv", "html"]
TABLE_KINDS: tuple[str, ...] = ("text", "markdown", "latex", "csv", "html")


def _is_real(x: Any) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def fmt(value: Any, se: Any = None, digits: int = 4, se_digits: int = 2) -> str:
    """One cell: ``"1.234e-03 ± 5e-05"`` for ``fmt(1.234e-3, 5e-5)``.

    ``value``: None or NaN -> ``"-"``; an integer (Python or numpy) -> its digits; another
    real number -> ``digits`` significant digits (``inf`` stays ``"inf"``); anything else ->
    ``str(value)``. ``se`` is appended as ``" ± <se_digits significant digits>"`` only when it
    is a finite real number and ``value`` was a number.
    """
    if value is None or (_is_real(value) and math.isnan(float(value))):
        return "-"
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        text = str(int(value))
    elif _is_real(value):
        text = f"{float(value):.{digits}g}"
    else:
        return str(value)
    if _is_real(se) and math.isfinite(float(se)):
        text += f" ± {float(se):.{se_digits}g}"
    return text


class TeX(str):
    """A cell already written in LaTeX: the latex renderer passes it through unescaped (the other
    kinds treat it as the plain string it is, so give those the readable label instead)."""


def cell_text(value: Any) -> str:
    """A string cell as it is, anything else through :func:`fmt`."""
    return value if isinstance(value, str) else fmt(value)


# ------------------------------------------------------------------------------ LaTeX

_TEX_TEXT = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
             "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
_TEX_MATH = {"ℓ∞": r"\ell_\infty", "ℓ2": r"\ell_2", "±": r"\pm", "λ": r"\lambda", "φ": r"\varphi",
             "ε": r"\varepsilon", "τ": r"\tau", "ρ": r"\rho", "σ": r"\sigma", "Ψ": r"\Psi", "ψ": r"\psi",
             "ℓ": r"\ell", "∞": r"\infty", "−": "-", "×": r"\times", "≤": r"\leq", "≥": r"\geq"}
_TEX_KEYS = sorted(_TEX_MATH, key=len, reverse=True)


def latex_escape(text: str) -> str:
    """``text`` safe inside a LaTeX table cell.

    The ten special characters ``\\ & % $ # _ { } ~ ^`` are escaped (``\\&``,
    ``\\textbackslash{}`` ...); the Greek letters and symbols of the report labels (``± λ φ
    ε τ ρ σ Ψ ℓ ∞ − × ≤ ≥``, with ``ℓ∞``, ``ℓ2`` as ``$\\ell_\\infty$``, ``$\\ell_2$``) become
    inline math, adjacent symbols sharing one ``$...$``. Other characters pass unchanged.
    """
    parts: list[tuple[bool, str]] = []   # (is math, content)
    i = 0
    while i < len(text):
        key = next((k for k in _TEX_KEYS if text.startswith(k, i)), None)
        if key is not None:
            if parts and parts[-1][0]:
                parts[-1] = (True, parts[-1][1] + _TEX_MATH[key])
            else:
                parts.append((True, _TEX_MATH[key]))
            i += len(key)
            continue
        parts.append((False, _TEX_TEXT.get(text[i], text[i])))
        i += 1
    return "".join(f"${s}$" if math_mode else s for math_mode, s in parts)


# ------------------------------------------------------------------------------ tables


def _text(header: Sequence[str], cells: list[list[str]]) -> str:
    head = [str(h) for h in header]
    widths = [max(len(h), *(len(row[i]) for row in cells)) if cells else len(h) for i, h in enumerate(head)]
    out = ["  ".join(h.ljust(w) for h, w in zip(head, widths)), "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in cells]
    return "\n".join(out)


def _markdown(header: Sequence[str], cells: list[list[str]]) -> str:
    def line(row: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).replace("|", r"\|") for c in row) + " |"
    return "\n".join([line(header), "|" + "---|" * len(header), *map(line, cells)]) + "\n"


def _tex_cell(c: Any) -> str:
    return str(c) if isinstance(c, TeX) else latex_escape(str(c))



def _latex(header: Sequence[str], cells: list[list[str]]) -> str:
    def line(row: Sequence[str]) -> str:
        return " & ".join(_tex_cell(c) for c in row) + r" \\"
    out = [r"\begin{tabular}{" + "l" * len(header) + "}", r"\toprule", line(header), r"\midrule",
           *map(line, cells), r"\bottomrule", r"\end{tabular}"]
    return "\n".join(out) + "\n"


def _html(header: Sequence[str], cells: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in cells)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _csv(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


_RENDERERS = {"text": _text, "markdown": _markdown, "latex": _latex, "html": _html}


def render_table(header: Sequence[str], rows: Sequence[Sequence[Any]], kind: TableKind = "text") -> str:
    """The table ``header`` + ``rows`` as ``kind`` (see the module docstring for each kind)."""
    if kind not in TABLE_KINDS:
        raise ValueError(f"table kind {kind!r}: choose one of {', '.join(TABLE_KINDS)}")
    width = len(header)
    for i, row in enumerate(rows):
        if len(row) != width:
            raise ValueError(f"table row {i}: {len(row)} cells for {width} columns")
    if kind == "csv":
        return _csv(header, rows)
    cells = [[c if isinstance(c, TeX) else cell_text(c) for c in row] for row in rows]
    return _RENDERERS[kind](header, cells)


def render(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], headers: Sequence[str] | None = None,
           kind: TableKind = "text") -> str:
    """:func:`render_table` of dict rows: the cells ``row.get(column, "")`` under ``headers`` (default ``columns``)."""
    return render_table(list(headers or columns), [[r.get(c, "") for c in columns] for r in rows], kind)


__all__ = ["TABLE_KINDS", "TeX", "TableKind", "cell_text", "fmt", "latex_escape", "render", "render_table"]
