// Filters the rows of tables by the choices of a `form.table-filters`: each `select[data-filter=NAME]`
// keeps the rows whose `data-NAME` equals its value ("" keeps every row). A table follows the form
// its `data-filtered-by` names; an element `[data-count-of=TABLE-ID]` shows how many rows are shown.
// Served from the site itself (the pages' Content-Security-Policy allows no other script).
(function () {
  const attach = (form) => {
    const selects = [...form.querySelectorAll("select[data-filter]")];
    const tables = [...document.querySelectorAll("table[data-filtered-by]")]
      .filter((table) => table.dataset.filteredBy === form.id);
    const apply = () => {
      tables.forEach((table) => {
        let shown = 0;
        [...table.tBodies[0].rows].forEach((row) => {
          const keep = selects.every((s) => s.value === "" || row.dataset[s.dataset.filter] === s.value);
          row.hidden = !keep;
          shown += keep ? 1 : 0;
        });
        document.querySelectorAll("[data-count-of]").forEach((count) => {
          if (count.dataset.countOf === table.id) count.textContent = String(shown);
        });
      });
    };
    selects.forEach((s) => s.addEventListener("change", apply));
    form.addEventListener("submit", (event) => event.preventDefault());
    apply(); // a choice the browser restored on "back" applies at once
  };
  const start = () => document.querySelectorAll("form.table-filters").forEach(attach);
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
