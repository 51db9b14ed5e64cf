// The page talks to the same API as curl and the Python client (relative URLs, so it also works behind a path prefix).
// No framework and no build step: the app serves these files as they are.
"use strict";

const $ = (id) => document.getElementById(id);
let labelsets = [];      // GET labelsets
let sampleRequest = 0;   // answers to older requests are dropped
let refreshTimer = null;
let activeQuery = null;  // the query the grid follows; null: the attribute toggles

/** fetch + the service's error envelope turned into one readable line (its details kept on the Error). */
async function api(path, options = {}) {
  let response;
  try {
    response = await fetch(path, options);
  } catch (e) {
    throw new Error(`the server cannot be reached (${e.message})`);
  }
  if (response.ok) return response.json();
  let text = `${response.status} ${response.statusText}`;
  let details = {};
  try {
    const body = await response.json();
    if (body.error) {
      text = `${body.error.message} (${response.status} ${body.error.code})`;
      details = body.error.details || {};
    }
  } catch (_) { /* not JSON: keep the status line */ }
  throw Object.assign(new Error(text), { details });
}

function show(el, message) {
  el.textContent = message || "";
  el.hidden = !message;
}

function adminHeaders() {
  const token = $("token").value.trim();
  if (!token) throw new Error("type the admin token first");
  return { Authorization: `Bearer ${token}` };
}

// ---- attribute controls: one radio group per attribute ----------------------------------------

function renderAttrs(fieldset, attrs, prefix, offLabel, anyLabel) {
  fieldset.querySelectorAll(".attr").forEach((el) => el.remove());
  attrs.forEach((a) => {
    const group = document.createElement("div");
    group.className = "attr";
    group.setAttribute("role", "radiogroup");
    group.setAttribute("aria-label", a);
    const name = document.createElement("span");
    name.className = "attr-name";
    name.textContent = a;
    group.append(name);
    [["on", "1"], [offLabel, "0"], [anyLabel, ""]].forEach(([label, value]) => {
      const id = `${prefix}-${a}-${label.replace(/\W/g, "")}`;
      const input = Object.assign(document.createElement("input"), { type: "radio", name: `${prefix}-${a}`, id, value });
      input.checked = value === "";
      input.dataset.attr = a;
      const l = Object.assign(document.createElement("label"), { htmlFor: id, textContent: label });
      group.append(input, l);
    });
    fieldset.append(group);
  });
  fieldset.hidden = attrs.length === 0;
}

/** "smiling,-eyeglasses" from a fieldset's radio groups ("" = not named). */
function specOf(fieldset) {
  return [...fieldset.querySelectorAll("input[type=radio]:checked")]
    .filter((i) => i.value !== "")
    .map((i) => (i.value === "1" ? i.dataset.attr : `-${i.dataset.attr}`))
    .join(",");
}

function currentSet() {
  return labelsets.find((s) => s.name === $("labelset").value);
}

/** A classifier label set has no actor: only the energy sampler serves it (prior stays prior). */
function modeFor(chosen) {
  return chosen !== "prior" && (currentSet() || {}).method === "classifier" ? "energy" : chosen;
}

// ---- samples ------------------------------------------------------------------------------------

/** GET /sample for the toggles' spec, or for a query instead (the energy sampler: no mode, and the chosen label
 *  set is only where bare names are looked up first). `unseen`: a spec the data never shows is drawn all the same. */
function sampleQuery({ spec, query, unseen }, n) {
  const q = new URLSearchParams({ n: String(n), seed: $("seed").value || "0", format: "json" });
  if (query !== undefined) {
    q.set("q", query);
    if ($("labelset").value) q.set("labelset", $("labelset").value);
  } else {
    q.set("mode", modeFor($("mode").value));
    if ($("mode").value !== "prior") {
      q.set("labelset", $("labelset").value);
      if (spec) q.set("attrs", spec);
      if (unseen) q.set("allow_unseen", "true");
    }
  }
  return `sample?${q}`;
}

function image(png, alt) {
  return Object.assign(document.createElement("img"), { src: `data:image/png;base64,${png}`, alt });
}

function describeLabels(labels) {
  if (!labels) return "unconditional sample";
  const on = Object.entries(labels).filter(([, v]) => v).map(([k]) => k);
  return on.length ? on.join(", ") : "no attribute on";
}

/** What an image shows, for its alt text: a query's images carry no labels. */
function describeImage(body, im) {
  if (!body.query) return describeLabels(im.labels);
  return im.converged ? body.query : `${body.query} (not converged)`;
}

async function refresh() {
  const id = ++sampleRequest;
  const grid = $("grid");
  grid.setAttribute("aria-busy", "true");
  const what = activeQuery === null ? { spec: specOf($("attrs")) } : { query: activeQuery };
  try {
    const body = await api(sampleQuery(what, Number($("count").value)));
    if (id !== sampleRequest) return;
    grid.replaceChildren(...body.images.map((im) => image(im.png_base64, describeImage(body, im))));
    grid.dataset.seed = body.seed;
    grid.dataset.spec = what.spec ?? `q=${what.query}`;
    show($("sample-error"), "");
    if (what.query === undefined) {
      await compare(id, what.spec);
    } else {
      showQueryResult(body);
      $("compare").replaceChildren();  // one attribute changed per image means nothing for a query
    }
  } catch (e) {
    if (id !== sampleRequest) return;
    if (what.query === undefined) show($("sample-error"), e.message);
    else showQueryError(what.query, e.message, e.details?.position);  // a network error has none
  } finally {
    if (id === sampleRequest) grid.setAttribute("aria-busy", "false");
  }
}

/** A label row as a spec naming every attribute: nothing is left to draw, so the seed's z meets exactly this row. */
function rowSpec(set, row) {
  return set.labels.map((a) => (row[a] ? a : `-${a}`)).join(",");
}

/** The base's label row with one attribute flipped per row (categorical: each other class instead of its own). */
function variations(set, labels) {
  if (set.kind === "categorical") {
    return set.labels.filter((a) => !labels[a])
      .map((a) => ({ row: Object.fromEntries(set.labels.map((b) => [b, b === a])), caption: a }));
  }
  return set.labels.map((a) => ({ row: { ...labels, [a]: !labels[a] }, caption: `${labels[a] ? "−" : "+"} ${a}` }));
}

function figure(caption, draw) {
  const fig = document.createElement("figure");
  const text = Object.assign(document.createElement("figcaption"), { textContent: caption });
  if (draw.error) fig.append(Object.assign(document.createElement("p"), { className: "error", textContent: draw.error }), text);
  else fig.append(image(draw.png_base64, `same seed: ${describeLabels(draw.labels)}`), text);
  return fig;
}

/** Same seed, one attribute changed per image. The current settings' one image gives the base label row (the seed
 *  draws what they leave open); the base and each flip are then asked as whole rows, so the images differ in that
 *  attribute alone. A flip the data never shows is drawn too: it is what the row says. */
async function compare(id, spec) {
  const row = $("compare");
  const set = currentSet();
  if ($("mode").value === "prior" || !set || !set.labels.length) {
    row.replaceChildren();
    return;
  }
  const draw = async (what) => {
    try {
      return (await api(sampleQuery(what, 1))).images[0];
    } catch (e) {
      return { error: e.message };
    }
  };
  const first = await draw({ spec });
  let figures = [figure("base", first)];
  if (!first.error) {
    const rows = [{ row: first.labels, caption: `base: ${describeLabels(first.labels)}` }, ...variations(set, first.labels).slice(0, 12)];
    const draws = await Promise.all(rows.map((v) => draw({ spec: rowSpec(set, v.row), unseen: true })));
    figures = rows.map((v, i) => figure(v.caption, draws[i]));
  }
  if (id === sampleRequest) row.replaceChildren(...figures);
}

// ---- query box: draws with q= instead of the toggles ---------------------------------------------

function showQueryResult(body) {
  const ok = body.images.filter((im) => im.converged).length;
  $("query-text").textContent = body.query;
  $("query-converged").textContent = `${ok}/${body.images.length} converged`;
  $("query-result").hidden = false;
  clearQueryError();
}

function clearQueryError() {
  show($("query-error"), "");
  $("query-where").hidden = true;
  $("query").removeAttribute("aria-invalid");
}

/** The message, and the query as sent with the character at `position` marked and a caret under it (a mark past
 *  the end when the query ended too soon). */
function showQueryError(query, message, position) {
  $("query-result").hidden = true;
  show($("query-error"), message);
  $("query").setAttribute("aria-invalid", "true");
  if (!Number.isInteger(position)) {
    $("query-where").hidden = true;
    return;
  }
  // the server counts code points; all before the position are ASCII (the parser stops at the first other)
  const at = Math.min(position, query.length);
  const ch = [...query.slice(at)][0];  // the whole character, also outside the BMP
  const mark = Object.assign(document.createElement("mark"), { textContent: ch || " " });
  const where = ch ? `character ${JSON.stringify(ch)}` : "the end of the query";
  $("query-where").replaceChildren(
    query.slice(0, at), mark, query.slice(at + (ch || "").length), `\n${" ".repeat(at)}^\nposition ${at}: ${where}`,
  );
  $("query-where").hidden = false;
}

function drawQuery(event) {
  event.preventDefault();
  activeQuery = $("query").value;  // as typed: the error positions count from its first character
  clearTimeout(refreshTimer);
  refresh();
}

/** Touching a toggle hands the grid back to the toggles. */
function onAttrsChange() {
  activeQuery = null;
  $("query-result").hidden = true;
  clearQueryError();
  scheduleRefresh();
}

function scheduleRefresh() {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(refresh, 150);
}

function onLabelsetChange() {
  const set = currentSet();
  const attrs = set ? set.labels : [];
  renderAttrs($("attrs"), attrs, "s", "off", "don't care");
  renderAttrs($("edit-attrs"), attrs, "e", "off", "keep");
  $("attrs").disabled = $("mode").value === "prior";
  scheduleRefresh();
}

// ---- label sets ---------------------------------------------------------------------------------

function fmt(v) {
  return typeof v === "number" ? v.toFixed(3) : "–";
}

async function loadSets(keep) {
  const body = await api("labelsets");
  labelsets = body.labelsets;
  const select = $("labelset");
  const previous = keep || select.value;
  select.replaceChildren(...labelsets.map((s) => new Option(`${s.name} (${s.labels.length} labels)`, s.name)));
  const conditional = labelsets.find((s) => s.labels.length);
  select.value = labelsets.some((s) => s.name === previous) ? previous : (conditional || labelsets[0] || {}).name || "";
  $("sets-body").replaceChildren(...labelsets.map((s) => {
    const tr = document.createElement("tr");
    const name = Object.assign(document.createElement("button"), { type: "button", textContent: s.name, className: "link" });
    name.addEventListener("click", () => showSet(s.name));
    const cells = [name, s.version, s.kind, s.labels.join(", ") || "(realism)", fmt(s.metrics.D_actor), fmt(s.metrics.attr_val_accuracy)];
    cells.forEach((c) => {
      const td = document.createElement("td");
      td.append(c);
      tr.append(td);
    });
    return tr;
  }));
  onLabelsetChange();
}

async function showSet(name) {
  const box = $("set-detail");
  try {
    const d = await api(`labelsets/${encodeURIComponent(name)}`);
    const h = Object.assign(document.createElement("h3"), { textContent: `${d.name}: ${d.versions.length} version(s)` });
    const list = document.createElement("ul");
    d.versions.forEach((v) => {
      const li = document.createElement("li");
      li.textContent = `${v.version}${v.current ? " (serving)" : ""}, ${v.created || ""}, ${v.source || ""}: `
        + `critic on actor ${fmt(v.metrics.D_actor)}, latent classifier ${fmt(v.metrics.attr_val_accuracy)}`;
      list.append(li);
    });
    box.replaceChildren(h, list);
  } catch (e) {
    box.replaceChildren(Object.assign(document.createElement("p"), { className: "error", textContent: e.message }));
  }
}

// ---- edit an uploaded image ---------------------------------------------------------------------

async function edit(event) {
  event.preventDefault();
  const file = $("edit-file").files[0];
  try {
    if (!file) throw new Error("choose an image to edit");
    const spec = specOf($("edit-attrs"));
    if (!spec) throw new Error("set at least one attribute to on or off");
    const form = new FormData();
    form.append("image", file);
    form.append("attrs", spec);
    form.append("labelset", $("labelset").value);
    form.append("mode", modeFor($("edit-mode").value));
    form.append("format", "json");
    $("edit-before").src = URL.createObjectURL(file);
    const body = await api("transform", { method: "POST", body: form });
    $("edit-recon").src = `data:image/png;base64,${body.reconstruction_png_base64}`;
    $("edit-after").src = `data:image/png;base64,${body.edited_png_base64}`;
    $("edit-after").alt = `your image edited to ${describeLabels(body.target)}`;
    $("edit-after-caption").textContent = `after: ${describeLabels(body.target)}`;
    $("edit-result").hidden = false;
    show($("edit-error"), "");
  } catch (e) {
    show($("edit-error"), e.message);
  }
}

// ---- admin: register an artifact, train a label set --------------------------------------------

/** A form's submit handler for an admin action: one place that clears and shows the messages. */
function adminAction(work) {
  return async (event) => {
    event.preventDefault();
    show($("admin-ok"), "");
    show($("admin-error"), "");
    try {
      await work();
    } catch (e) {
      show($("admin-error"), e.message);
    }
  };
}

const register = adminAction(async () => {
  const form = new FormData();
  form.append("manifest", $("reg-manifest").files[0]);
  form.append("weights", $("reg-weights").files[0]);
  const name = $("reg-name").value.trim();
  const body = await api(`labelsets/${encodeURIComponent(name)}`, { method: "PUT", body: form, headers: adminHeaders() });
  show($("admin-ok"), `registered ${body.name}, version ${body.version}`);
  await loadSets();
});

const train = adminAction(async () => {
  const form = new FormData();
  const optional = { rule: $("job-rule").value, labels: $("job-labels").files[0], images: $("job-images").files[0] };
  Object.entries(optional).forEach(([key, value]) => { if (value) form.append(key, value); });
  form.append("kind", $("job-kind").value);
  form.append("method", $("job-method").value);
  form.append("steps", $("job-steps").value);
  const name = $("job-name").value.trim();
  const job = await api(`labelsets/${encodeURIComponent(name)}/jobs`, { method: "POST", body: form, headers: adminHeaders() });
  await follow(job.id);
});

async function follow(jobId) {
  for (;;) {
    const s = await api(`jobs/${encodeURIComponent(jobId)}`);
    const p = s.progress || { step: 0, steps: 1 };
    $("job-progress").max = p.steps;
    $("job-progress").value = p.step;
    $("job-state").textContent = `${s.name}: ${s.state}, step ${p.step} of ${p.steps}`;
    if (s.state === "succeeded") {
      // the worker published it; this server picks it up at its next registry poll
      for (let i = 0; i < 40 && !labelsets.some((x) => x.name === s.name); i++) {
        await loadSets();
        if (!labelsets.some((x) => x.name === s.name)) await new Promise((r) => setTimeout(r, 250));
      }
      show($("admin-ok"), `trained ${s.name}; it is serving now`);
      return;
    }
    if (s.state === "failed") throw new Error(`training ${s.name} failed: ${s.error ? s.error.message : "unknown error"}`);
    await new Promise((r) => setTimeout(r, 500));
  }
}

// ---- start ---------------------------------------------------------------------------------------

async function start() {
  $("labelset").addEventListener("change", onLabelsetChange);
  $("mode").addEventListener("change", () => { $("attrs").disabled = $("mode").value === "prior"; scheduleRefresh(); });
  ["seed", "count"].forEach((id) => $(id).addEventListener("change", scheduleRefresh));
  $("attrs").addEventListener("change", onAttrsChange);
  $("query-form").addEventListener("submit", drawQuery);
  $("new-seed").addEventListener("click", () => { $("seed").value = String(Math.floor(Math.random() * 1e9)); scheduleRefresh(); });
  $("edit-form").addEventListener("submit", edit);
  $("register-form").addEventListener("submit", register);
  $("train-form").addEventListener("submit", train);
  for (;;) {
    try {
      const info = await api("info");
      if (info.ready) {
        $("status").textContent = `${info.dataset}: ${info.image_shape.join("×")} images, latent ${info.latent_dim}, on ${info.device}`;
        break;
      }
      $("status").textContent = "the server is starting…";
    } catch (e) {
      $("status").textContent = e.message;
    }
    await new Promise((r) => setTimeout(r, 1000));
  }
  try {
    await loadSets();
  } catch (e) {
    show($("sample-error"), e.message);
  }
}

start();
