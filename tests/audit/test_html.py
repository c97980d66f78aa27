"""`regate matrix --format html` opened in a real headless chromium: the table renders (screenshot
pixels), and the page's own script filters and sorts it (the DOM after the script ran)."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest

from regate import compiler
from regate.audit import html, matrix
from tests.support import browser, png

from ..compiler.conftest import ROOT

# The cell colours of the page's style sheet.
ALLOW, DENY, SOME = (0xC9, 0xF2, 0xC9), (0xF6, 0xC4, 0xC4), (0xFB, 0xE7, 0xA6)


@pytest.fixture(scope="module")
def example(tmp_path_factory, opa_bin):
    m = matrix.build(compiler.load_config(ROOT / "examples" / "regate.yaml"))
    page = tmp_path_factory.mktemp("html") / "matrix.html"
    page.write_text(html.matrix_html(m))
    return m, page


class Table(HTMLParser):
    """The matrix as the browser left it: headers, rows (in DOM order) and the status line."""

    def __init__(self, text: str):
        super().__init__()
        self.heads: list[dict] = []
        self.rows: list[dict] = []
        self.shown = ""
        self._in_shown = False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "th" and "aria-sort" in a:
            self.heads.append({"label": a["data-label"], "sort": a["aria-sort"], "hidden": "hidden" in a})
        elif tag == "tr" and "data-index" in a:
            self.rows.append({"index": int(a["data-index"]), "hidden": "hidden" in a, "label": None})
        elif tag == "th" and a.get("scope") == "row":
            self.rows[-1]["label"] = a["data-label"]
        elif tag == "span" and a.get("id") == "shown":
            self._in_shown = True

    def handle_data(self, data):
        if self._in_shown:
            self.shown += data

    def handle_endtag(self, tag):
        self._in_shown = False


def test_the_table_renders(example, tmp_path):
    m, page = example
    image = browser.screenshot(page, tmp_path / "matrix.png")
    width, height, _ = png.pixels(image)
    assert (width, height) == (1400, 1000)
    colours = png.colour_counts(image)
    # Every kind of cell is painted, each over many cells' worth of pixels (a cell is ~150x40).
    cells = [m.cell(p, c) for p in m.principals for c in m.columns]
    assert any(c.allowed == len(c.outcomes) for c in cells) and any(c.allowed == 0 for c in cells)
    for colour in (ALLOW, DENY, SOME):
        assert colours[colour] > 20_000, (colour, colours.most_common(5))


def test_the_script_filters_and_counts(example):
    m, page = example
    table = Table(browser.dom(page))
    assert table.shown == f"{len(m.principals)} of {len(m.principals)} principals, {len(m.columns)} of " \
                          f"{len(m.columns)} columns"
    assert [r["label"] for r in table.rows] == [p.label for p in m.principals]
    assert not any(r["hidden"] for r in table.rows)

    table = Table(browser.dom(page, fragment="#principal=virtual&column=routes"))
    visible = [r["label"] for r in table.rows if not r["hidden"]]
    assert visible == ["virtual key of a team", "virtual key of a user", "virtual key limited to gpt-4o-mini"]
    shown_columns = [h["label"] for h in table.heads[1:] if not h["hidden"]]
    assert shown_columns == [c.label for c in m.columns if "routes" in c.label]
    assert table.shown == f"3 of {len(m.principals)} principals, {len(shown_columns)} of {len(m.columns)} columns"


@pytest.mark.parametrize("direction", ["asc", "desc"])
def test_the_script_sorts_by_a_column(example, direction):
    m, page = example
    column = next(i for i, c in enumerate(m.columns) if c.label == "spend_tracking_routes")
    table = Table(browser.dom(page, fragment=f"#sort={column + 1}&dir={direction}"))
    share = {p.label: m.cell(p, m.columns[column]).allowed / len(m.columns[column].paths) for p in m.principals}
    order = [r["label"] for r in table.rows]
    shares = [share[label] for label in order]
    assert shares == sorted(shares, reverse=direction == "desc")
    assert len(set(shares)) > 2  # the column really discriminates
    assert table.heads[column + 1]["sort"] == ("descending" if direction == "desc" else "ascending")
    assert {h["sort"] for i, h in enumerate(table.heads) if i != column + 1} == {"none"}


def test_the_page_stands_alone(example):
    _, page = example
    text = page.read_text()
    assert "<link" not in text and " src=" not in text
    assert "http://" not in text and "https://" not in text
