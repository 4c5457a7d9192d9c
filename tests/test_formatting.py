"""landscape.formatting: the value +- SE cell and the one table renderer (text, Markdown, LaTeX, CSV, HTML)."""
import csv
import io
import math

import numpy as np
import pytest

from landscape.formatting import fmt, latex_escape, render, render_table


def test_cells():
    assert fmt(1.23456e-3, 5.04e-5) == "0.001235 ± 5e-05"
    assert fmt(0.5, 0.0123) == "0.5 ± 0.012"
    assert fmt(3) == "3" and fmt(np.int64(7)) == "7" and fmt(np.float32(0.25)) == "0.25"
    assert fmt(None) == "-" and fmt(float("nan"), 0.1) == "-"
    assert fmt(2.0, float("nan")) == "2" and fmt(2.0, None) == "2"    # no SE: no ± part
    assert fmt(math.inf) == "inf" and fmt(True) == "True" and fmt("abc", 0.1) == "abc"
    assert fmt(1234.5678, digits=3) == "1.23e+03"


def test_latex_escaping():
    assert latex_escape("a_b & 50% #1 $x$ {y} ~ ^") == (
        r"a\_b \& 50\% \#1 \$x\$ \{y\} \textasciitilde{} \textasciicircum{}")
    assert latex_escape("back\\slash") == r"back\textbackslash{}slash"
    assert latex_escape("0.12 ± 0.01") == r"0.12 $\pm$ 0.01"
    assert latex_escape("adaptive ℓ∞") == r"adaptive $\ell_\infty$"
    assert latex_escape("±λ") == r"$\pm\lambda$"                      # one math group, never "$$"
    assert latex_escape("Keskar φ random ε=0.001") == r"Keskar $\varphi$ random $\varepsilon$=0.001"
    tex = render_table(["λ_max", "x"], [["1 ± 0.1", "a&b"]], "latex")
    assert tex.splitlines() == [r"\begin{tabular}{ll}", r"\toprule", r"$\lambda$\_max & x \\", r"\midrule",
                                r"1 $\pm$ 0.1 & a\&b \\", r"\bottomrule", r"\end{tabular}"]


def test_csv_round_trip_keeps_raw_values():
    header = ["name", "value", "note"]
    rows = [["a,b", 0.1 + 0.2, 'say "hi"'], ["c", 3, None], ["d", 1e-17, "two\nlines"]]
    text = render_table(header, rows, "csv")
    back = list(csv.reader(io.StringIO(text)))
    assert back[0] == header
    assert back[1] == ["a,b", repr(0.1 + 0.2), 'say "hi"'] and float(back[1][1]) == 0.1 + 0.2
    assert back[2] == ["c", "3", ""] and back[3] == ["d", "1e-17", "two\nlines"]


def test_text_markdown_html():
    rows = [{"a": 1.5, "b": "x"}, {"a": None}]
    assert render(rows, ["a", "b"]).splitlines() == ["a    b", "---  -", "1.5  x", "-     "]
    assert render_table(["A", "B"], [[1.5, "x|y"]], "markdown") == "| A | B |\n|---|---|\n| 1.5 | x\\|y |\n"
    assert render_table(["<a>"], [["1 & 2"]], "html") == (
        "<table><thead><tr><th>&lt;a&gt;</th></tr></thead><tbody><tr><td>1 &amp; 2</td></tr></tbody></table>")
    with pytest.raises(ValueError, match="kind"):
        render_table(["a"], [], "rtf")
    with pytest.raises(ValueError, match="row 0"):
        render_table(["a", "b"], [[1]], "text")
