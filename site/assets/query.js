// The Query page: SQL on the published catalogue in DuckDB-WASM, every file from this site.
// A query is shareable: ?sql=... runs on load, and ?commit=... answers as of that catalogue commit
// (the "copy link" pins the commit the answer came from).
const status = document.getElementById("query-status");
const box = document.getElementById("query-sql");
const result = document.getElementById("query-result");
const download = document.getElementById("query-csv");
const link = document.getElementById("query-link");
const params = new URL(window.location.href).searchParams;
const shared = params.get("sql");
if (shared) box.value = shared;  // shown at once, before DuckDB has loaded

function show(text) { status.textContent = text; }

const { CatalogueDB, loadConfig, renderTable } = await import("./catalogue-db.js");
let catalogue, pinned;
try {
  const config = await loadConfig();
  catalogue = await CatalogueDB.open(config);
  pinned = await catalogue.pin(params.get("commit"));
  const version = (await catalogue.conn.query("SELECT version() AS v")).toArray()[0].v;
  document.getElementById("query-engine").textContent = `DuckDB ${version}`;
} catch (error) {
  show(`could not load the catalogue: ${error.message ?? error}`);
  document.body.dataset.queryDone = "1";
  throw error;
}
if (pinned) {
  document.getElementById("query-commit").textContent = pinned.id;
  document.getElementById("query-seq").textContent = `#${pinned.seq}`;
}

function csvField(text) { return /[",\n]/.test(text) ? `"${text.replaceAll('"', '""')}"` : text; }

function shareable(sql) {
  const url = new URL(window.location.href);
  url.search = "";
  url.searchParams.set("sql", sql);
  if (pinned) url.searchParams.set("commit", pinned.id);
  return url.href;
}

async function run(sql) {
  show("running ...");
  link.href = shareable(sql);
  window.history.replaceState(null, "", link.href);
  try {
    const { names, rows } = renderTable(result, await catalogue.query(sql));
    const csv = [names, ...rows].map((r) => r.map(csvField).join(",")).join("\n") + "\n";
    download.href = URL.createObjectURL(new Blob([csv], { type: "text/csv" }));
    download.hidden = false;
    show(`${rows.length} row${rows.length === 1 ? "" : "s"}`);
  } catch (error) {
    result.replaceChildren();
    show(`error: ${error.message ?? error}`);
  }
  document.body.dataset.queryDone = "1";
}

document.getElementById("query-run").addEventListener("click", () => run(box.value));
document.getElementById("query-copy").addEventListener("click", async () => {
  const url = shareable(box.value);
  link.href = url;
  try { await navigator.clipboard.writeText(url); show("link copied"); } catch { show(`link: ${url}`); }
});
for (const example of document.querySelectorAll("[data-example]")) {
  example.addEventListener("click", (event) => { event.preventDefault(); box.value = example.dataset.example; run(box.value); });
}
show("ready");
if (shared) await run(shared); else document.body.dataset.queryDone = "1";
