// text2sql serve's page: pick a database, ask, see the SQL and the result table.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { answer: null };

// What each error kind means, in plain words (kinds from the read-only runner).
const KINDS = {
  empty_prediction: "The model wrote no SQL for this question.",
  parse_error: "The SQL is not valid SQLite, so it was not run.",
  not_read_only: "Refused: only a single read-only query (SELECT or WITH) runs here. Nothing was executed.",
  unknown_table: "Unknown table: the SQL names a table this database does not have.",
  unknown_column: "Unknown column: the SQL names a column that does not exist here (or one that is ambiguous).",
  timeout: "Timeout: the query ran past the time limit and was stopped.",
  too_large: "Too large: the result is bigger than the server sends.",
  execution_error: "The database could not run this query.",
};

const KEYWORDS = new Set(("select from where group by order having limit offset join left right inner outer " +
  "cross full on as and or not in is null like between case when then else end distinct union all except " +
  "intersect with asc desc exists cast over partition natural using top fetch first rows only interval " +
  "recursive values true false").split(" "));

function escapeHtml(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}

// A small SQL highlighter: strings, numbers, keywords, function names.
function highlight(sql) {
  const token = /('(?:[^']|'')*'|"(?:[^"]|"")*"|`[^`]*`)|(\b\d+(?:\.\d+)?\b)|([A-Za-z_][A-Za-z0-9_]*)(\s*\()?|([\s\S])/g;
  let out = "", m;
  while ((m = token.exec(sql)) !== null) {
    if (m[1]) out += m[1][0] === "'" ? `<span class="str">${escapeHtml(m[1])}</span>` : escapeHtml(m[1]);
    else if (m[2]) out += `<span class="num">${m[2]}</span>`;
    else if (m[3]) {
      const word = escapeHtml(m[3]);
      if (KEYWORDS.has(m[3].toLowerCase())) out += `<span class="kw">${word}</span>`;
      else if (m[4]) out += `<span class="fn">${word}</span>`;
      else out += word;
      if (m[4]) out += escapeHtml(m[4]);
    } else out += escapeHtml(m[5]);
  }
  return out;
}

// A server started with --api-key wants `Authorization: Bearer KEY`: the key is asked for
// on the first 401, kept for this tab only (sessionStorage), and asked again when refused.
const KEY_SLOT = "text2sql-api-key";

function askForKey(refused) {
  const key = window.prompt(refused ? "That API key was refused. API key for this server:"
    : "This server needs an API key (from whoever started it):");
  if (key === null || !key.trim()) return false;
  sessionStorage.setItem(KEY_SLOT, key.trim());
  return true;
}

async function api(path, body) {
  for (;;) {
    const headers = body === undefined ? {} : { "Content-Type": "application/json" };
    const key = sessionStorage.getItem(KEY_SLOT);
    if (key) headers.Authorization = `Bearer ${key}`;
    const response = await fetch(path, body === undefined ? { headers } : {
      method: "POST", headers, body: JSON.stringify(body),
    });
    let data;
    try { data = await response.json(); } catch (e) { data = { error: `HTTP ${response.status}` }; }
    if (response.status === 401) {
      sessionStorage.removeItem(KEY_SLOT);
      if (askForKey(Boolean(key))) continue;
    }
    // errors under /v1 are OpenAI's object: {"error": {"message", "type", "param", "code"}}
    const error = data.error && typeof data.error === "object" ? data.error.message : data.error;
    if (!response.ok) throw new Error(error || `HTTP ${response.status}`);
    return data;
  }
}

async function loadDatabases() {
  const { databases } = await api("/v1/databases");
  $("db").innerHTML = databases.map((d) => `<option>${escapeHtml(d.name)}</option>`).join("");
  const wanted = new URLSearchParams(location.search).get("db");
  if (wanted && databases.some((d) => d.name === wanted)) $("db").value = wanted;
  await loadSchema();
}

async function loadSchema() {
  const db = $("db").value;
  $("tables").textContent = "";
  if (!db) return;
  const schema = await api(`/v1/databases/${encodeURIComponent(db)}/schema`);
  $("tables").innerHTML = schema.tables.map((t) =>
    `<div class="table-name">${escapeHtml(t.name)}</div>` +
    `<div class="columns">${t.columns.map((c) => escapeHtml(c.name)).join(", ")}</div>`).join("");
}

function showSql() {
  const a = state.answer;
  const dialect = $("dialect").value;
  const text = dialect === "sqlite" || !a.dialect_sql ? a.sql : a.dialect_sql;
  $("sql").firstElementChild.innerHTML = highlight(text || "(no SQL)");
}

function showTable(columns, rows) {
  const head = `<thead><tr>${columns.map((c) => `<th>${escapeHtml(c)}</th>`).join("")}</tr></thead>`;
  const body = rows.map((r) => `<tr>${r.map((v) => v === null ? '<td class="null">NULL</td>'
    : `<td>${escapeHtml(v)}</td>`).join("")}</tr>`).join("");
  $("result").innerHTML = head + `<tbody>${body}</tbody>`;
}

function showError(kind, message) {
  const box = $("error");
  box.hidden = false;
  box.dataset.kind = kind || "";
  box.innerHTML = `${escapeHtml(KINDS[kind] || message)}` +
    (KINDS[kind] && message ? `<span class="detail">${escapeHtml(message)}</span>` : "");
}

function render(a) {
  state.answer = a;
  $("answer").hidden = false;
  $("error").hidden = true;
  showSql();
  $("result").innerHTML = "";
  if (a.error_kind) showError(a.error_kind, a.error);
  else showTable(a.columns, a.rows);
  const t = a.timings || {};
  const parts = [];
  if (!a.error_kind) parts.push(`${a.rows.length} row${a.rows.length === 1 ? "" : "s"}${a.truncated ? " (more not shown)" : ""}`);
  if (t.generate_s !== undefined) parts.push(`SQL written in ${t.generate_s.toFixed(2)} s`);
  if (t.execute_s !== undefined) parts.push(`run in ${t.execute_s.toFixed(3)} s`);
  if (a.tables) parts.push(`tables linked: ${a.tables.join(", ")}`);
  $("meta").textContent = parts.join(" · ");
}

// Ask the server (a question, or SQL of one's own) and show the answer.
async function request(body, busyText) {
  $("go").disabled = $("run").disabled = true;
  $("status").textContent = busyText;
  const dialect = $("dialect").value;
  try {
    render(await api("/v1/sql", { db: $("db").value, ...body, dialect: dialect === "sqlite" ? null : dialect }));
  } catch (e) {
    $("answer").hidden = false;
    $("result").innerHTML = "";
    $("meta").textContent = "";
    showError(null, e.message);
  } finally {
    $("status").textContent = "";
    $("go").disabled = $("run").disabled = false;
  }
}

function ask(event) {
  event.preventDefault();
  const question = $("question").value.trim();
  if (!question) return;
  $("editor").hidden = true;
  request({ question }, "Writing SQL…");
}

function editSql() {
  $("editor").hidden = false;
  $("edit-sql").value = state.answer ? state.answer.sql : "";
  $("edit-sql").focus();
}

function runEdited() {
  const sql = $("edit-sql").value;
  if (sql.trim()) request({ sql, question: $("question").value.trim() || null }, "Running…");
}

// A new dialect translates the SQL shown (execute: false; no model, nothing run).
async function changeDialect() {
  const a = state.answer;
  if (!a || !a.sql) return;
  const dialect = $("dialect").value;
  if (dialect !== "sqlite") {
    try {
      const t = await api("/v1/sql", { db: a.db, sql: a.sql, dialect, execute: false });
      a.dialect_sql = t.dialect_sql;
    } catch (e) { a.dialect_sql = `(cannot translate: ${e.message})`; }
  }
  showSql();
}

async function copySql() {
  const text = $("sql").textContent;
  try {
    await navigator.clipboard.writeText(text);
  } catch (e) {  // no clipboard API outside a secure context: select and copy
    const area = document.createElement("textarea");
    area.value = text;
    document.body.appendChild(area);
    area.select();
    document.execCommand("copy");
    area.remove();
  }
  $("copy").textContent = "Copied";
  setTimeout(() => { $("copy").textContent = "Copy"; }, 1500);
}

$("db").addEventListener("change", () => loadSchema().catch((e) => showError(null, e.message)));
$("ask").addEventListener("submit", ask);
$("dialect").addEventListener("change", changeDialect);
$("copy").addEventListener("click", copySql);
$("edit").addEventListener("click", editSql);
$("run").addEventListener("click", runEdited);
loadDatabases().catch((e) => { $("status").textContent = `Cannot list the databases: ${e.message}`; });
