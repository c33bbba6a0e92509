// The catalogue in DuckDB-WASM, shared by the Query and Compare pages. Every file comes from this
// site: DuckDB-WASM itself (assets/vendor/), the published Parquet tables and artifacts (data/),
// read with HTTP range requests, and the catalogue's own view definitions (catalogue-sql.json,
// written by `modelsci site build`), so the pages answer as `modelsci sql` does.
import * as arrow from "apache-arrow";
import * as duckdb from "./vendor/duckdb/duckdb-browser.mjs";

const here = new URL("./", import.meta.url);
const root = new URL("../", here);
const ARTIFACT = /artifacts\/[0-9a-f]{64}\.parquet/g;
const VIEW = /\bartifact_[a-z0-9_]+\b/gi;

export async function loadConfig() {
  return await (await fetch(new URL("catalogue-sql.json", here))).json();
}

export class CatalogueDB {
  constructor(db, conn, config) {
    this.db = db;
    this.conn = conn;
    this.config = config;
    this.registered = new Set();
    this.views = new Set();
    this.asOf = null;  // the commit seq the views are cut off at, or null for the built one
  }

  static async open(config) {
    const worker = new Worker(new URL("vendor/duckdb/duckdb-browser-eh.worker.js", here));
    const db = new duckdb.AsyncDuckDB(new duckdb.VoidLogger(), worker);
    await db.instantiate(new URL("vendor/duckdb/duckdb-eh.wasm", here).href);
    const conn = await db.connect();
    // Nothing is fetched from an extension host: what the pages need is built into this DuckDB.
    await conn.query("SET autoinstall_known_extensions = false");
    await conn.query("SET autoload_known_extensions = false");
    const self = new CatalogueDB(db, conn, config);
    for (const table of Object.values(config.tables)) await self.register(table.name, new URL(table.url, root).href);
    for (const statement of config.setup) await conn.query(statement);
    return self;
  }

  async register(name, url) {
    if (this.registered.has(name)) return;
    await this.db.registerFileURL(name, url, duckdb.DuckDBDataProtocol.HTTP, false);
    this.registered.add(name);
  }

  // The artifact files and artifact views a query names, registered and created before it runs.
  async prepare(sql) {
    const views = this.config.artifact_views;
    const wanted = [...new Set((sql.match(VIEW) || []).map((v) => v.toLowerCase()))].filter((v) => v in views);
    const files = new Set(sql.match(ARTIFACT) || []);
    for (const name of wanted) for (const path of views[name].paths) files.add(path);
    for (const path of files) await this.register(path, new URL(`data/${path}`, root).href);
    for (const name of wanted) {
      if (this.views.has(name)) continue;
      await this.conn.query(`CREATE OR REPLACE VIEW ${name} AS ${views[name].sql}`);
      this.views.add(name);
    }
  }

  async query(sql) {
    await this.prepare(sql);
    return await this.conn.query(sql);
  }

  // Cut the views off at a commit (given by id, id prefix or seq), as `--as-of` does; no commit, or
  // the one the site was built from, puts the current views back. Returns the commit's id and seq.
  async pin(commit) {
    const built = this.config.commit;
    let target = built;
    if (commit) {
      // As `--as-of` reads it: digits are a seq, anything else an id or id prefix.
      const prefix = (commit.startsWith("sha256:") ? commit : `sha256:${commit}`).toLowerCase();
      const where = /^[0-9]{1,11}$/.test(commit) ? `seq = ${commit}` : `starts_with(id, '${prefix.replaceAll("'", "''")}')`;
      const found = (await this.conn.query(`SELECT id, seq FROM store.commits WHERE ${where}`)).toArray();
      if (found.length !== 1) throw new Error(`no single commit ${commit} in this catalogue`);
      target = { id: found[0].id, seq: Number(found[0].seq) };
    }
    const current = !built || target.seq === built.seq;
    if (current && this.asOf === null) return built;
    const statements = current ? this.config.setup : this.config.history;
    for (const statement of statements) {
      await this.conn.query(statement.replaceAll(this.config.as_of_placeholder, String(target?.seq))
        .replace(/^CREATE SCHEMA store$/, "CREATE SCHEMA IF NOT EXISTS store")
        .replace(/^CREATE VIEW /, "CREATE OR REPLACE VIEW "));
    }
    this.views.clear();  // artifact views join the views just replaced
    this.asOf = current ? null : target.seq;
    return target;
  }
}

// A value as plain JavaScript: lists as arrays, structs and maps as objects, big integers exact.
export function plain(value, type) {
  if (value === null || value === undefined) return null;
  if (typeof value === "bigint") return Number.isSafeInteger(Number(value)) ? Number(value) : value.toString();
  if (type && arrow.DataType.isTimestamp(type) && typeof value === "number") return new Date(value).toISOString();
  if (type && arrow.DataType.isDate(type) && typeof value === "number") return new Date(value).toISOString().slice(0, 10);
  if (value instanceof Date) return value.toISOString();
  if (value instanceof arrow.Vector) return Array.from(value, (v) => plain(v, type?.children?.[0]?.type));
  if (ArrayBuffer.isView(value)) return Array.from(value, (v) => plain(v));
  if (typeof value === "object") {
    const json = typeof value.toJSON === "function" ? value.toJSON() : value;
    const fields = type?.children ?? [];
    return Object.fromEntries(Object.entries(json).map(([k, v]) => [k, plain(v, fields.find((f) => f.name === k)?.type)]));
  }
  return value;
}

// A cell's text: lists and structs as JSON, JSON text as it is, numbers as JavaScript writes them.
export function cellText(value, type) {
  const v = plain(value, type);
  if (v === null) return "";
  if (typeof v === "object") return JSON.stringify(v);
  return String(v);
}

// Fill a <table> with a result, as text (never HTML); returns the rows as text.
export function renderTable(table, result) {
  const fields = result.schema.fields;
  const rows = result.toArray().map((row) => fields.map((f) => cellText(row[f.name], f.type)));
  table.replaceChildren();
  const head = table.createTHead().insertRow();
  for (const f of fields) { const th = document.createElement("th"); th.textContent = f.name; head.appendChild(th); }
  const body = table.createTBody();
  for (const row of rows) {
    const tr = body.insertRow();
    for (const value of row) tr.insertCell().textContent = value;
  }
  table.dataset.rows = String(rows.length);
  return { names: fields.map((f) => f.name), rows };
}
