// The Compare page: two models' findings side by side, or the catalogue at two commits, matched as
// `modelsci compare` matches them, by the same SQL (catalogue-sql.json's `compare`), in DuckDB-WASM.
// ?a=ID&b=ID compares two models on load, ?c1=COMMIT&c2=COMMIT two commits.
const status = document.getElementById("compare-status");
const pickA = document.getElementById("compare-a");
const pickB = document.getElementById("compare-b");
const pickC1 = document.getElementById("compare-c1");
const pickC2 = document.getElementById("compare-c2");
const result = document.getElementById("compare-result");
const params = new URL(window.location.href).searchParams;

function show(text) { status.textContent = text; }
function quote(text) { return `'${text.replaceAll("'", "''")}'`; }

const { CatalogueDB, loadConfig, renderTable } = await import("./catalogue-db.js");
let catalogue;
try {
  catalogue = await CatalogueDB.open(await loadConfig());
} catch (error) {
  show(`could not load the catalogue: ${error.message ?? error}`);
  document.body.dataset.compareDone = "1";
  throw error;
}
const conn = catalogue.conn;
const models = (await conn.query("SELECT * FROM models ORDER BY id")).toArray().map((m) => m.toJSON());
for (const pick of [pickA, pickB]) {
  for (const m of models) pick.add(new Option(`${m.name ?? m.source_uri ?? m.id} (${m.id.slice(7, 19)})`, m.id));  // text, never HTML
}
const commits = (await conn.query("SELECT id, seq, message FROM store.commits ORDER BY seq")).toArray().map((c) => c.toJSON());
for (const pick of [pickC1, pickC2]) {
  for (const c of commits) pick.add(new Option(`#${c.seq} ${c.id.slice(7, 19)} ${c.message}`.slice(0, 100), String(c.seq)));
}
const chosen = (ref, fallback) => models.find((m) => ref && m.id.startsWith(ref.startsWith("sha256:") ? ref : `sha256:${ref}`))?.id ?? fallback;
pickA.value = chosen(params.get("a"), models[0]?.id);
pickB.value = chosen(params.get("b"), models[1]?.id ?? models[0]?.id);
pickC1.value = params.get("c1") ?? String(commits[0]?.seq);
pickC2.value = params.get("c2") ?? String(commits.at(-1)?.seq);

async function show_comparison(search, build) {
  show("comparing ...");
  const url = new URL(window.location.href);
  url.search = new URLSearchParams(search).toString();
  document.getElementById("compare-link").href = url.href;
  window.history.replaceState(null, "", url.href);
  try {
    const { rows } = renderTable(result, await build());
    show(`${rows.length} key${rows.length === 1 ? "" : "s"}`);
  } catch (error) {
    result.replaceChildren();
    show(`error: ${error.message ?? error}`);
  }
  document.body.dataset.compareDone = "1";
}

function compareModels() {
  const { side, join } = catalogue.config.compare;
  return show_comparison({ a: pickA.value, b: pickB.value }, async () => await conn.query(
    `WITH side_a AS (${side} WHERE model_id = ${quote(pickA.value)}), `
    + `side_b AS (${side} WHERE model_id = ${quote(pickB.value)}) ${join}`));
}

function compareCommits() {
  const { side, join_commits: join } = catalogue.config.compare;
  return show_comparison({ c1: pickC1.value, c2: pickC2.value }, async () => {
    try {  // each side read as of its commit, as `modelsci compare --commits` reads them
      await catalogue.pin(pickC1.value);
      await conn.query(`CREATE OR REPLACE TEMP TABLE side_a AS ${side}`);
      await catalogue.pin(pickC2.value);
      await conn.query(`CREATE OR REPLACE TEMP TABLE side_b AS ${side}`);
    } finally {
      await catalogue.pin(null);
    }
    return await conn.query(join);
  });
}

document.getElementById("compare-run").addEventListener("click", compareModels);
document.getElementById("compare-commits").addEventListener("click", compareCommits);
if (params.has("c1") || params.has("c2")) await compareCommits();
else if (models.length) await compareModels();
else { show("no models in this catalogue"); document.body.dataset.compareDone = "1"; }
