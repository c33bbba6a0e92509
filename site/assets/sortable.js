// Click a column's head of a `table.sortable` to sort its rows by that column; click again to reverse.
// Numbers (a cell's leading number, so "0.97 – 0.99" sorts by its low end) sort as numbers, the rest as text.
// Served from the site itself (the pages' Content-Security-Policy allows no other script).
(function () {
  const key = (cell) => {
    const text = (cell ? cell.textContent : "").trim();
    const number = parseFloat(text);
    return Number.isNaN(number) ? text.toLowerCase() : number;
  };
  const compare = (a, b) => {
    if (typeof a === typeof b) return a < b ? -1 : a > b ? 1 : 0;
    return typeof a === "number" ? -1 : 1; // numbers before text (and empty cells)
  };
  const sortable = (table) => {
    const heads = table.tHead ? [...table.tHead.rows[0].cells] : [];
    heads.forEach((head, column) => {
      head.classList.add("sortable-head");
      head.title = "sort by this column";
      head.addEventListener("click", () => {
        const descending = head.dataset.sorted === "asc";
        heads.forEach((h) => delete h.dataset.sorted);
        head.dataset.sorted = descending ? "desc" : "asc";
        const body = table.tBodies[0];
        const rows = [...body.rows].map((row, i) => ({ row, i, k: key(row.cells[column]) }));
        rows.sort((x, y) => (descending ? -1 : 1) * compare(x.k, y.k) || x.i - y.i);
        rows.forEach(({ row }) => body.appendChild(row));
      });
    });
  };
  const start = () => document.querySelectorAll("table.sortable").forEach(sortable);
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
