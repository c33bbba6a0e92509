// The Query page: the catalogue's Parquet export, shipped inside the site, in DuckDB-WASM.
// Everything loads from this site (no CDN). A query is shareable: ?sql=... runs on load, and
// the page names the catalogue commit it was built from, so a link is pinned to that release.
import * as duckdb from "./vendor/duckdb/duckdb-browser.mjs";

const here = new URL("./", import.meta.url);
const status = document.getElementById("query-status");
const box = document.getElementById("query-sql");
const result = document.getElementById("query-result");
const download = document.getElementById("query-csv");
const manifest = await (await fetch(new URL("../data/manifest.json", here))).json();

function show(text) { status.textContent = text; }

async function open() {
  const worker = new Worker(new URL("vendor/duckdb/duckdb-browser-eh.worker.js", here));
  const db = new duckdb.AsyncDuckDB(new duckdb.VoidLogger(), worker);
  await db.instantiate(new URL("vendor/duckdb/duckdb-eh.wasm", here).href);
  const conn = await db.connect();
  for (const [name, info] of Object.entries(manifest.tables)) {
    const bytes = new Uint8Array(await (await fetch(new URL(`../data/${info.path}`, here))).arrayBuffer());
    await db.registerFileBuffer(`${name}.parquet`, bytes);
    await conn.query(`CREATE VIEW ${name} AS SELECT * FROM '${name}.parquet'`);
  }
  await conn.query("CREATE VIEW findings_current AS SELECT * FROM findings WHERE status = 'current'");
  return conn;
}

function cell(value) {
  if (value === null || value === undefined) return "";
  if (typeof value === "bigint") return value.toString();
  if (value instanceof Date) return value.toISOString();
  if (typeof value === "object") return JSON.stringify(value, (k, v) => typeof v === "bigint" ? v.toString() : v);
  return String(value);
}

function csvField(text) { return /[",\n]/.test(text) ? `"${text.replaceAll('"', '""')}"` : text; }

function render(table) {
  const names = table.schema.fields.map((f) => f.name);
  const rows = table.toArray().map((row) => names.map((n) => cell(row[n])));
  result.replaceChildren();
  const head = result.createTHead().insertRow();
  for (const n of names) { const th = document.createElement("th"); th.textContent = n; head.appendChild(th); }
  const body = result.createTBody();
  for (const row of rows) {
    const tr = body.insertRow();
    for (const value of row) tr.insertCell().textContent = value;  // text, never HTML
  }
  const csv = [names, ...rows].map((r) => r.map(csvField).join(",")).join("\n") + "\n";
  download.href = URL.createObjectURL(new Blob([csv], { type: "text/csv" }));
  download.hidden = false;
  show(`${rows.length} row${rows.length === 1 ? "" : "s"}`);
  result.dataset.rows = String(rows.length);
}

const conn = await open().catch((error) => { show(`could not load the catalogue: ${error}`); throw error; });

async function run(sql) {
  show("running ...");
  const url = new URL(window.location.href);
  url.searchParams.set("sql", sql);
  window.history.replaceState(null, "", url);
  document.getElementById("query-link").href = url.href;
  try {
    render(await conn.query(sql));
  } catch (error) {
    result.replaceChildren();
    show(`error: ${error.message ?? error}`);
  }
  document.body.dataset.queryDone = "1";
}

document.getElementById("query-run").addEventListener("click", () => run(box.value));
for (const example of document.querySelectorAll("[data-example]")) {
  example.addEventListener("click", (event) => { event.preventDefault(); box.value = example.dataset.example; run(box.value); });
}
const shared = new URL(window.location.href).searchParams.get("sql");
show("ready");
if (shared) { box.value = shared; await run(shared); } else { document.body.dataset.queryDone = "1"; }
