"""The access matrix as one static HTML page: no server, no external assets.

The table is plain HTML (it reads without scripts); a small inline script sorts rows by any
column (click its header) and filters principals and columns. The view lives in the URL's
fragment (`#principal=team&column=routes&sort=2&dir=desc`), so a filtered view is a link.
"""

from __future__ import annotations

from html import escape

from .matrix import Cell, Matrix

STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #1a1a1a; }
h1 { font-size: 1.3em; }
.controls { display: flex; gap: 1.5em; align-items: center; margin: 1em 0; flex-wrap: wrap; }
.controls input { font: inherit; padding: .25em .5em; width: 16em; }
table { border-collapse: collapse; }
th, td { border: 1px solid #c8c8c8; padding: .3em .6em; text-align: left; vertical-align: top; }
thead th { position: sticky; top: 0; background: #eef0f4; }
thead button { font: inherit; font-weight: 600; border: 0; background: none; cursor: pointer; padding: 0; }
th[aria-sort=ascending] button::after { content: " \\25B2"; }
th[aria-sort=descending] button::after { content: " \\25BC"; }
tbody th { font-weight: normal; background: #fafafa; }
td.allow { background: #c9f2c9; }
td.deny { background: #f6c4c4; }
td.some { background: #fbe7a6; }
.credential { color: #666; font-size: .85em; }
"""

SCRIPT = """
(function () {
  const table = document.getElementById("matrix");
  const body = table.tBodies[0];
  const heads = Array.from(table.tHead.rows[0].cells);
  const principalFilter = document.getElementById("principal-filter");
  const columnFilter = document.getElementById("column-filter");
  const shown = document.getElementById("shown");
  const view = {principal: "", column: "", sort: "", dir: "asc"};

  function sortKey(row, col) {
    const cell = row.cells[col];
    return col === 0 ? cell.dataset.label.toLowerCase() : Number(cell.dataset.allowed);
  }

  function apply() {
    const p = view.principal.toLowerCase(), c = view.column.toLowerCase();
    let rows = 0, cols = 0;
    for (const row of body.rows) {
      row.hidden = !row.cells[0].dataset.search.includes(p);
      rows += row.hidden ? 0 : 1;
    }
    heads.forEach((head, i) => {
      const hide = i > 0 && !head.dataset.label.toLowerCase().includes(c);
      head.hidden = hide;
      for (const row of body.rows) row.cells[i].hidden = hide;
      cols += i > 0 && !hide ? 1 : 0;
      head.setAttribute("aria-sort", String(i) === view.sort ? (view.dir === "desc" ? "descending" : "ascending") : "none");
    });
    if (view.sort !== "") {
      const col = Number(view.sort), sign = view.dir === "desc" ? -1 : 1;
      const sorted = Array.from(body.rows).sort((a, b) => {
        const x = sortKey(a, col), y = sortKey(b, col);
        return (x < y ? -1 : x > y ? 1 : Number(a.dataset.index) - Number(b.dataset.index)) * sign;
      });
      for (const row of sorted) body.appendChild(row);
    }
    shown.textContent = rows + " of " + body.rows.length + " principals, " + cols + " of " + (heads.length - 1) + " columns";
    const hash = new URLSearchParams(Object.entries(view).filter(([k, v]) => v !== "" && !(k === "dir" && v === "asc")));
    history.replaceState(null, "", hash.toString() ? "#" + hash : location.pathname);
  }

  const initial = new URLSearchParams(location.hash.slice(1));
  for (const key of Object.keys(view)) if (initial.has(key)) view[key] = initial.get(key);
  principalFilter.value = view.principal;
  columnFilter.value = view.column;
  principalFilter.addEventListener("input", () => { view.principal = principalFilter.value; apply(); });
  columnFilter.addEventListener("input", () => { view.column = columnFilter.value; apply(); });
  heads.forEach((head, i) => head.querySelector("button").addEventListener("click", () => {
    view.dir = view.sort === String(i) && view.dir === "asc" ? "desc" : "asc";
    view.sort = String(i);
    apply();
  }));
  apply();
})();
"""


def _cell_class(cell: Cell) -> str:
    return "allow" if cell.allowed == len(cell.outcomes) else "deny" if cell.allowed == 0 else "some"


def matrix_html(m: Matrix) -> str:
    heads = ['<th data-label="principal" aria-sort="none"><button type="button">principal</button></th>']
    for c in m.columns:
        title = f"{c.kind}: {len(c.paths)} path{'s' if len(c.paths) != 1 else ''}"
        heads.append(f'<th data-label="{escape(c.label)}" title="{escape(title)}" aria-sort="none">'
                     f'<button type="button">{escape(c.label)}</button></th>')
    rows = []
    for i, p in enumerate(m.principals):
        search = escape(f"{p.label} {p.kind} {p.describe()}".lower())
        cells = [f'<th scope="row" data-label="{escape(p.label)}" data-search="{search}">{escape(p.label)}'
                 f'<div class="credential">{escape(p.describe())}</div></th>']
        for c in m.columns:
            cell = m.cell(p, c)
            allowed = f"{cell.allowed / len(cell.outcomes):.4f}"
            cells.append(f'<td class="{_cell_class(cell)}" data-allowed="{allowed}">{escape(cell.text())}</td>')
        rows.append(f'<tr data-index="{i}">' + "".join(cells) + "</tr>")
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>regate access matrix: {escape(m.source)}</title>
<style>{STYLE}</style>
</head>
<body>
<h1>Access matrix of <code>{escape(m.source)}</code></h1>
<p>Who may call what, decided by OPA on the compiled bundle (any method: routes carry none).
<code>allow 8/30</code>: 8 of the column's 30 paths are allowed. Click a column to sort.</p>
<div class="controls">
<label>Principals <input id="principal-filter" type="search" placeholder="filter principals"></label>
<label>Columns <input id="column-filter" type="search" placeholder="filter columns"></label>
<span id="shown"></span>
</div>
<table id="matrix">
<thead><tr>{"".join(heads)}</tr></thead>
<tbody>
{chr(10).join(rows)}
</tbody>
</table>
<script>{SCRIPT}</script>
</body>
</html>
"""
