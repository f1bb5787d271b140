/* DemoEHR page script: plain ES2020, no build step, no dependencies.
 *
 * Flow: GET /demo/patients -> choose -> GET /demo/request/{name}?hook=order-select -> POST to the
 * order-select service -> render cards; "Sign" does the same with order-sign. Accepting a suggestion or
 * dismissing a card POSTs CDS Hooks feedback to /cds-services/{id}/feedback.
 *
 * Safety: every string from the service or from FHIR data reaches the page through textContent or
 * setAttribute; nothing is assigned to innerHTML. Card markdown is parsed by the small renderer below
 * (the GFM subset cards use: headings, paragraphs, emphasis, code, lists, tables, block quotes, links)
 * straight into DOM nodes; raw HTML shows as text, and links keep only http(s) and mailto URLs.
 */
"use strict";

(function () {
  // ------------------------------------------------------------------ markdown (safe subset)

  const ESCAPABLE = "\\`*_{}[]()#+-.!|~<>\"'&$%,/:;=?@^";
  const ENTITIES = { amp: "&", lt: "<", gt: ">", quot: "\"", apos: "'", nbsp: "\u00a0", mu: "\u03bc", micro: "\u00b5" };
  const SAFE_PROTOCOLS = new Set(["http:", "https:", "mailto:"]);

  function el(tag, attrs, children) {
    const node = document.createElement(tag);
    if (attrs) for (const [k, v] of Object.entries(attrs)) if (v !== undefined && v !== null) node.setAttribute(k, String(v));
    if (children) for (const c of [].concat(children)) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    return node;
  }

  /** An absolute http(s)/mailto URL, or null. */
  function safeUrl(raw) {
    if (typeof raw !== "string") return null;
    const s = raw.trim();
    if (!s || /[\u0000-\u001f\u007f]/.test(s)) return null;
    let u;
    try { u = new URL(s, window.location.href); } catch (e) { return null; }
    return SAFE_PROTOCOLS.has(u.protocol) ? u.href : null;
  }

  function decodeEntity(m) {
    const name = m.slice(1, -1);
    if (name[0] === "#") {
      const code = name[1] === "x" || name[1] === "X" ? parseInt(name.slice(2), 16) : parseInt(name.slice(1), 10);
      if (!Number.isFinite(code) || code <= 0 || code > 0x10ffff || (code >= 0xd800 && code <= 0xdfff)) return "\ufffd";
      return String.fromCodePoint(code);
    }
    const v = ENTITIES[name.toLowerCase()];
    return v === undefined ? m : v;
  }

  /** Index of the `]` closing the `[` at `open`, honouring escapes and nesting; -1 if none. */
  function closingBracket(s, open) {
    let depth = 0;
    for (let i = open; i < s.length; i++) {
      const c = s[i];
      if (c === "\\") { i++; continue; }
      if (c === "`") { const j = s.indexOf("`", i + 1); if (j < 0) return -1; i = j; continue; }
      if (c === "[") depth++;
      else if (c === "]" && --depth === 0) return i;
    }
    return -1;
  }

  /** Parse `(url "title")` starting at s[i] === "("; returns {url, end} or null. */
  function linkTarget(s, i) {
    if (s[i] !== "(") return null;
    let depth = 0;
    for (let j = i; j < s.length; j++) {
      const c = s[j];
      if (c === "\\") { j++; continue; }
      if (c === "(") depth++;
      else if (c === ")" && --depth === 0) {
        let inner = s.slice(i + 1, j).trim();
        const t = inner.match(/^(\S+)\s+(?:"[^"]*"|'[^']*')$/);
        if (t) inner = t[1];
        if (inner.startsWith("<") && inner.endsWith(">")) inner = inner.slice(1, -1);
        inner = inner.replace(/\\([!-/:-@[-`{-~])/g, "$1").replace(/&(#\d+|#x[0-9a-f]+|[a-z]+);/gi, decodeEntity);
        return { url: inner, end: j + 1 };
      }
    }
    return null;
  }

  /** Inline markdown -> array of DOM nodes. `noLinks` inside link text. */
  function inline(s, noLinks) {
    const out = [];
    let buf = "";
    const flush = () => { if (buf) { out.push(document.createTextNode(buf)); buf = ""; } };
    let i = 0;
    while (i < s.length) {
      const c = s[i];
      const rest = s.slice(i);
      if (c === "\\") {
        const n = s[i + 1];
        if (n === undefined) { buf += c; i++; continue; }
        if (ESCAPABLE.includes(n)) { buf += n; i += 2; continue; }
        buf += c; i++; continue;
      }
      if (c === "&") {
        const m = rest.match(/^&(#\d{1,7}|#x[0-9a-f]{1,6}|[a-z]{2,8});/i);
        if (m) { buf += decodeEntity(m[0]); i += m[0].length; continue; }
        buf += c; i++; continue;
      }
      if (c === "`") {
        const run = rest.match(/^`+/)[0];
        const close = s.indexOf(run, i + run.length);
        if (close > 0) {
          flush();
          out.push(el("code", null, s.slice(i + run.length, close).trim()));
          i = close + run.length; continue;
        }
        buf += run; i += run.length; continue;
      }
      if (c === "*" || c === "_" || c === "~") {
        const run = rest.match(c === "~" ? /^~~/ : c === "*" ? /^\*{1,2}/ : /^_{1,2}/);
        if (run) {
          const d = run[0];
          const prev = i > 0 ? s[i - 1] : " ";
          const leftOk = c !== "_" || !/[A-Za-z0-9]/.test(prev);
          const next = s[i + d.length];
          if (leftOk && next !== undefined && !/\s/.test(next)) {
            let close = -1;
            for (let j = i + d.length + 1; j <= s.length - d.length; j++) {
              if (s[j - 1] === "\\") continue;
              if (s.startsWith(d, j) && !/\s/.test(s[j - 1]) && s[j + d.length] !== c &&
                  (c !== "_" || !/[A-Za-z0-9]/.test(s[j + d.length] || " "))) { close = j; break; }
            }
            if (close > 0) {
              flush();
              const tag = c === "~" ? "del" : d.length === 2 ? "strong" : "em";
              out.push(el(tag, null, inline(s.slice(i + d.length, close), noLinks)));
              i = close + d.length; continue;
            }
          }
          buf += d; i += d.length; continue;
        }
      }
      if (c === "[" && !noLinks) {
        const close = closingBracket(s, i);
        if (close > 0) {
          const target = linkTarget(s, close + 1);
          if (target) {
            const href = safeUrl(target.url);
            if (href) {
              flush();
              out.push(el("a", { href, target: "_blank", rel: "noopener noreferrer" }, inline(s.slice(i + 1, close), true)));
            } else {
              buf += s.slice(i, target.end); // unsafe or unparsable link: show its source as text
            }
            i = target.end; continue;
          }
        }
      }
      if (c === "<") {
        const m = rest.match(/^<((?:https?:\/\/|mailto:)[^\s<>]+)>/i);
        const href = m && safeUrl(m[1]);
        if (href) { flush(); out.push(el("a", { href, target: "_blank", rel: "noopener noreferrer" }, m[1])); i += m[0].length; continue; }
      }
      if (c === "\n") { // hard break after two spaces or a backslash, else a soft break
        if (/ {2,}$/.test(buf)) { buf = buf.replace(/ +$/, ""); flush(); out.push(el("br")); }
        else buf = buf.replace(/ +$/, "") + " ";
        i++; continue;
      }
      buf += c; i++;
    }
    flush();
    return out;
  }

  const RE_HEADING = /^ {0,3}(#{1,6})\s+(.*?)(?:\s+#+\s*)?$/;
  const RE_HR = /^ {0,3}([-*_])(?:\s*\1){2,}\s*$/;
  const RE_FENCE = /^ {0,3}(`{3,}|~{3,})/;
  const RE_UL = /^( *)([-*+])\s+(.*)$/;
  const RE_OL = /^( *)(\d{1,9})[.)]\s+(.*)$/;
  const RE_QUOTE = /^ {0,3}>\s?(.*)$/;
  const RE_TABLE_SEP = /^\s*\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?\s*$/;

  function splitRow(line) {
    let s = line.trim();
    if (s.startsWith("|")) s = s.slice(1);
    if (s.endsWith("|") && !s.endsWith("\\|")) s = s.slice(0, -1);
    const cells = [];
    let cur = "";
    for (let i = 0; i < s.length; i++) {
      if (s[i] === "\\" && s[i + 1] === "|") { cur += "\\|"; i++; continue; }
      if (s[i] === "`") { const j = s.indexOf("`", i + 1); if (j > 0) { cur += s.slice(i, j + 1); i = j; continue; } }
      if (s[i] === "|") { cells.push(cur.trim()); cur = ""; continue; }
      cur += s[i];
    }
    cells.push(cur.trim());
    return cells;
  }

  function isBlockStart(line, next) {
    return RE_HEADING.test(line) || RE_HR.test(line) || RE_FENCE.test(line) || RE_UL.test(line) ||
      RE_OL.test(line) || RE_QUOTE.test(line) || (line.includes("|") && next !== undefined && RE_TABLE_SEP.test(next) && next.includes("-"));
  }

  function list(lines, start) {
    const first = lines[start].match(RE_UL) || lines[start].match(RE_OL);
    const ordered = RE_OL.test(lines[start]) && !RE_UL.test(lines[start]);
    const indent = first[1].length;
    const node = el(ordered ? "ol" : "ul");
    if (ordered && first[2] !== "1") node.setAttribute("start", String(parseInt(first[2], 10)));
    let i = start;
    let item = null;
    let itemText = [];
    const finishItem = () => {
      if (item) { item.prepend(...inline(itemText.join("\n"))); }
    };
    while (i < lines.length) {
      const line = lines[i];
      if (!line.trim()) {
        const nxt = lines[i + 1];
        if (nxt !== undefined && (RE_UL.test(nxt) || RE_OL.test(nxt)) && (nxt.match(RE_UL) || nxt.match(RE_OL))[1].length >= indent) { i++; continue; }
        break;
      }
      const m = line.match(ordered ? RE_OL : RE_UL) || line.match(RE_UL) || line.match(RE_OL);
      if (m && m[1].length === indent && (ordered ? RE_OL.test(line) : RE_UL.test(line))) {
        finishItem();
        item = el("li"); itemText = [m[3]]; node.append(item); i++; continue;
      }
      if (m && m[1].length > indent && item) {
        const sub = list(lines, i);
        item.append(sub.node); i = sub.end; continue;
      }
      if (m) break; // a different list type at this level, or a shallower one
      if (item && /^\s+\S/.test(line)) { itemText.push(line.trim()); i++; continue; }
      if (item && !isBlockStart(line, lines[i + 1])) { itemText.push(line.trim()); i++; continue; } // lazy continuation
      break;
    }
    finishItem();
    return { node, end: i };
  }

  function blocks(lines) {
    const frag = document.createDocumentFragment();
    let i = 0;
    while (i < lines.length) {
      const line = lines[i];
      if (!line.trim()) { i++; continue; }
      let m;
      if ((m = line.match(RE_FENCE))) {
        const fence = m[1];
        const body = [];
        i++;
        while (i < lines.length && !lines[i].trim().startsWith(fence)) body.push(lines[i++]);
        i++;
        frag.append(el("pre", null, el("code", null, body.join("\n"))));
        continue;
      }
      if ((m = line.match(RE_HEADING))) {
        frag.append(el("h" + Math.min(m[1].length + 2, 6), null, inline(m[2])));
        i++; continue;
      }
      if (RE_HR.test(line)) { frag.append(el("hr")); i++; continue; }
      if (RE_QUOTE.test(line)) {
        const inner = [];
        while (i < lines.length && (m = lines[i].match(RE_QUOTE))) { inner.push(m[1]); i++; }
        frag.append(el("blockquote", null, blocks(inner)));
        continue;
      }
      if (RE_UL.test(line) || RE_OL.test(line)) {
        const r = list(lines, i);
        frag.append(r.node); i = r.end; continue;
      }
      const next = lines[i + 1];
      if (line.includes("|") && next !== undefined && RE_TABLE_SEP.test(next) && next.includes("-")) {
        const head = splitRow(line);
        const aligns = splitRow(next).map((c) => c.startsWith(":") && c.endsWith(":") ? "center" : c.endsWith(":") ? "right" : c.startsWith(":") ? "left" : null);
        const table = el("table");
        const tr = el("tr");
        head.forEach((h, k) => tr.append(el("th", aligns[k] ? { "data-align": aligns[k] } : null, inline(h))));
        table.append(el("thead", null, tr));
        const tbody = el("tbody");
        i += 2;
        while (i < lines.length && lines[i].trim() && lines[i].includes("|")) {
          const cells = splitRow(lines[i]);
          const row = el("tr");
          for (let k = 0; k < head.length; k++) row.append(el("td", aligns[k] ? { "data-align": aligns[k] } : null, inline(cells[k] || "")));
          tbody.append(row);
          i++;
        }
        table.append(tbody);
        frag.append(table);
        continue;
      }
      const para = [];
      while (i < lines.length && lines[i].trim() && !(para.length && isBlockStart(lines[i], lines[i + 1]))) {
        para.push(lines[i]); i++;
      }
      frag.append(el("p", null, inline(para.join("\n").trim())));
    }
    return frag;
  }

  /** Markdown -> a <div> of DOM nodes built without innerHTML. */
  function renderMarkdown(md) {
    const root = el("div", { class: "md" });
    if (typeof md !== "string" || !md) return root;
    root.append(blocks(md.replace(/\r\n?/g, "\n").replace(/\t/g, "    ").split("\n")));
    return root;
  }

  // ------------------------------------------------------------------ page state and HTTP

  const state = {
    services: null, // hook -> service id, from discovery
    patient: null, // {name, title, description}
    request: null, // last order-select request (full prefetch)
    draftOrder: null, // the PLEX ServiceRequest as currently drafted (suggestions may update it)
    extraOrders: [], // resources created by accepted suggestions
    lastCards: {}, // serviceId -> cards
    feedbackSent: [], // feedback items posted (for tests and the activity log)
    busy: false,
  };

  const $ = (id) => document.getElementById(id);

  function log(text) {
    $("log-panel").hidden = false;
    const li = el("li", null, `${new Date().toLocaleTimeString()} · ${text}`);
    $("log").prepend(li);
  }

  function setStatus(text, isError) {
    const s = $("hook-status");
    s.textContent = text;
    s.classList.toggle("error", Boolean(isError));
  }

  async function getJSON(url) {
    const r = await fetch(url, { headers: { Accept: "application/json" } });
    if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
    return r.json();
  }

  async function postJSON(url, body) {
    const r = await fetch(url, {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify(body),
    });
    let data = null;
    try { data = await r.json(); } catch (e) { data = null; }
    if (!r.ok) {
      const issue = data && data.issue && data.issue[0];
      const why = issue && (issue.diagnostics || (issue.details && issue.details.text));
      throw new Error(`HTTP ${r.status}${why ? ": " + why : ""}`);
    }
    return data;
  }

  async function services() {
    if (state.services) return state.services;
    const disc = await getJSON("/cds-services");
    const map = {};
    for (const s of disc.services || []) if (!map[s.hook]) map[s.hook] = s.id;
    state.services = map;
    return map;
  }

  // ------------------------------------------------------------------ patients, banner, orders

  function patientList(data) {
    const items = Array.isArray(data) ? data : (data && (data.patients || data.items)) || [];
    return items.map((p) => (typeof p === "string" ? { name: p, title: p, description: "" } : p))
      .filter((p) => p && typeof p.name === "string");
  }

  async function loadPatients() {
    const ul = $("patient-list");
    let pts;
    try {
      try { pts = patientList(await getJSON("/demo/scenarios")); } catch (e) { pts = []; }
      if (!pts.length) pts = patientList(await getJSON("/demo/patients"));
    } catch (e) {
      ul.replaceChildren(el("li", { class: "muted" }, `Could not load patients (${e.message})`));
      return;
    }
    ul.replaceChildren();
    for (const p of pts) {
      const b = el("button", { type: "button", "data-patient": p.name, "aria-pressed": "false" }, [
        el("span", { class: "p-title" }, p.title || p.name),
        el("span", { class: "p-desc" }, p.description || ""),
      ]);
      b.addEventListener("click", () => selectPatient(p));
      ul.append(el("li", null, b));
    }
  }

  function humanName(pat) {
    const n = pat && Array.isArray(pat.name) && pat.name[0];
    if (!n) return "Unnamed patient";
    if (n.text) return n.text;
    return [...(n.given || []), n.family || ""].join(" ").trim() || "Unnamed patient";
  }

  function orderDetails(res) {
    if (!res) return "";
    const bits = [];
    const q = res.quantityQuantity;
    if (q && q.value !== undefined) bits.push(`${q.value} ${q.unit || ""}`.trim());
    const rep = res.occurrenceTiming && res.occurrenceTiming.repeat;
    if (rep && rep.period) bits.push(`every ${rep.period} ${rep.periodUnit || ""}`.trim());
    if (res.dosageInstruction && res.dosageInstruction[0] && res.dosageInstruction[0].text) bits.push(res.dosageInstruction[0].text);
    for (const n of res.note || []) if (n.text) bits.push(n.text);
    return bits.join(" · ");
  }

  function orderName(res) {
    const cc = res.code || res.medicationCodeableConcept || {};
    return cc.text || (cc.coding && cc.coding[0] && cc.coding[0].display) || res.resourceType;
  }

  function renderOrders(status) {
    const rows = $("order-rows");
    rows.replaceChildren();
    if (state.draftOrder) {
      const res = state.draftOrder;
      rows.append(el("tr", { "data-order-id": res.id || "" }, [
        el("td", null, orderName(res)), el("td", null, orderDetails(res)), el("td", null, status || res.status || "draft"),
      ]));
    } else if (state.removedOrder) {
      const res = state.removedOrder;
      rows.append(el("tr", { "data-order-id": res.id || "", class: "removed" }, [
        el("td", null, orderName(res)), el("td", null, orderDetails(res)), el("td", null, "removed"),
      ]));
    }
    for (const res of state.extraOrders) {
      rows.append(el("tr", { "data-order-id": res.id || "" }, [
        el("td", null, orderName(res)), el("td", null, orderDetails(res)), el("td", null, res.status || "draft"),
      ]));
    }
  }

  function resetCards() {
    $("cards").replaceChildren();
    $("cards-panel").hidden = true;
    $("cards-hook").textContent = "";
  }

  async function selectPatient(p) {
    state.patient = p;
    state.extraOrders = [];
    state.removedOrder = null;
    state.selectedKinds = [];
    $("log").replaceChildren();  // the activity log is per patient
    $("log-panel").hidden = true;
    for (const b of document.querySelectorAll("#patient-list button")) b.setAttribute("aria-pressed", String(b.dataset.patient === p.name));
    resetCards();
    setStatus("");
    $("btn-sign").disabled = true;
    $("btn-order").disabled = true;
    try {
      state.request = await getJSON(`/demo/request/${encodeURIComponent(p.name)}?hook=order-select`);
    } catch (e) {
      setStatus(`Could not load the demo patient: ${e.message}`, true);
      return;
    }
    const pre = state.request.prefetch || {};
    const pat = pre.patient || {};
    const ident = (pat.identifier || [])[0];
    $("banner-name").textContent = humanName(pat);
    $("banner-sex").textContent = pat.gender || "unknown";
    $("banner-dob").textContent = pat.birthDate || "unknown";
    $("banner-mrn").textContent = (ident && ident.value) || "—";
    $("banner-title").textContent = p.title || p.name;
    $("banner-desc").textContent = p.description ? `· ${p.description}` : "";
    const entry = ((state.request.context || {}).draftOrders || {}).entry || [];
    state.draftOrder = entry.length ? JSON.parse(JSON.stringify(entry[0].resource)) : null;
    $("banner").hidden = false;
    $("orders").hidden = false;
    $("empty").hidden = true;
    $("btn-order").textContent = state.draftOrder && /plasma|apheresis|pheresis|exchange/i.test(orderName(state.draftOrder)) ? "Order plasma exchange" : `Order ${orderName(state.draftOrder || {})}`;
    $("btn-order").disabled = false;
    renderOrders("not ordered yet");
    document.body.dataset.patient = p.name;
  }

  function withDraftOrders(req) {
    const body = JSON.parse(JSON.stringify(req));
    // draft orders only: a record changed by a suggestion (a medication order set to stopped) is not one
    const orders = [state.draftOrder, ...state.extraOrders.filter((r) => r.status === "draft")].filter(Boolean);
    body.context.draftOrders = { resourceType: "Bundle", entry: orders.map((r) => ({ resource: r })) };
    body.hookInstance = crypto.randomUUID ? crypto.randomUUID() : String(Date.now()) + Math.random();
    return body;
  }

  /** POST `request` to the service for `hook` and render its cards. Returns the response body. */
  async function fireHook(hook, request) {
    const map = await services();
    const id = map[hook];
    if (!id) throw new Error(`no service for ${hook}`);
    state.busy = true;
    document.body.dataset.state = "busy";
    setStatus(`${hook}: asking ${id}…`);
    const t0 = performance.now();
    try {
      const data = await postJSON(`/cds-services/${encodeURIComponent(id)}`, request);
      const cards = (data && Array.isArray(data.cards)) ? data.cards : [];
      state.lastCards[id] = cards;
      renderCards(id, hook, cards);
      setStatus(`${hook}: ${cards.length} card${cards.length === 1 ? "" : "s"} in ${Math.round(performance.now() - t0)} ms`);
      log(`${hook} → ${id}: ${cards.length} card(s)`);
      document.body.dataset.state = "done";
      document.body.dataset.hook = hook;
      return data;
    } catch (e) {
      setStatus(`${hook} failed: ${e.message}`, true);
      log(`${hook} failed: ${e.message}`);
      document.body.dataset.state = "error";
      throw e;
    } finally {
      state.busy = false;
    }
  }

  async function orderPlex() {
    if (!state.request) return;
    $("btn-order").disabled = true;
    try {
      const req = withDraftOrders(state.request);
      await fireHook("order-select", req);
      renderOrders("selected");
      $("btn-sign").disabled = false;
    } catch (e) { /* shown in the status line */ } finally { $("btn-order").disabled = false; }
  }

  async function sign() {
    if (!state.patient) return;
    $("btn-sign").disabled = true;
    try {
      const base = await getJSON(`/demo/request/${encodeURIComponent(state.patient.name)}?hook=order-sign`);
      if (!state.draftOrder) state.selectedKinds = [];  // the order was removed: nothing is "not repeated"
      await fireHook("order-sign", withDraftOrders(base));
      renderOrders("signing");
    } catch (e) { /* shown in the status line */ } finally { $("btn-sign").disabled = false; }
  }

  // ------------------------------------------------------------------ cards

  // text-presentation symbols every font has (DejaVu Sans): no emoji font needed
  const INDICATOR = {
    info: { icon: "\u2139", word: "Info" },
    warning: { icon: "\u26a0", word: "Warning" },
    critical: { icon: "\u2716", word: "Critical" },
  };

  // RFC 3339 UTC with milliseconds: two suggestions of one card accepted within a second stay two items
  // (the store is idempotent on card + outcome + outcomeTimestamp)
  function nowStamp() { return new Date().toISOString(); }

  async function sendFeedback(serviceId, item) {
    const body = { feedback: [item] };
    await postJSON(`/cds-services/${encodeURIComponent(serviceId)}/feedback`, body);
    state.feedbackSent.push({ serviceId, item });
    log(`feedback ${item.outcome} for card ${item.card.slice(0, 8)}…`);
  }

  function applyActions(sugg) {
    for (const a of sugg.actions || []) {
      const r = a.resource;
      if (a.type === "delete" && state.draftOrder && a.resourceId === `${state.draftOrder.resourceType}/${state.draftOrder.id}`) {
        state.removedOrder = state.draftOrder;  // the draft PLEX order is removed, as an EHR would
        state.draftOrder = null;
        continue;
      }
      if (!r || typeof r !== "object") continue;
      if (a.type === "update" && state.draftOrder && r.resourceType === state.draftOrder.resourceType && r.id === state.draftOrder.id) {
        state.draftOrder = JSON.parse(JSON.stringify(r));
      } else if (a.type === "update") {
        // an existing record changed (e.g. an active medication order set to stopped): shown with its status
        state.extraOrders = state.extraOrders.filter((o) => !(o.resourceType === r.resourceType && o.id === r.id));
        state.extraOrders.push(JSON.parse(JSON.stringify(r)));
      } else if (a.type === "create") {
        state.extraOrders.push(JSON.parse(JSON.stringify(r)));
      }
    }
    renderOrders();
  }

  function renderCard(serviceId, card) {
    const ind = INDICATOR[card.indicator] || INDICATOR.info;
    const article = el("article", {
      class: "card", "data-indicator": INDICATOR[card.indicator] ? card.indicator : "info",
      "data-card-uuid": card.uuid || "", "aria-label": `${ind.word}: ${card.summary || ""}`,
    });
    const kind = card.extension && card.extension["pml-plex"] && card.extension["pml-plex"].kind;
    if (kind) article.dataset.kind = kind;
    const body = el("div", { class: "card-body" });
    article.append(el("div", { class: "card-bar", "aria-hidden": "true" }), body);

    body.append(el("div", { class: "card-head" }, [
      el("span", { class: "card-indicator" }, `${ind.icon} ${ind.word}`),
      el("h3", { class: "card-summary" }, card.summary || ""),
    ]));
    if (card.source && card.source.label) {
      const src = el("div", { class: "card-source" }, "Source: ");
      const href = safeUrl(card.source.url);
      src.append(href ? el("a", { href, target: "_blank", rel: "noopener noreferrer" }, card.source.label) : card.source.label);
      body.append(src);
    }
    if (card.detail) {
      const det = el("div", { class: "card-detail" });
      det.append(renderMarkdown(card.detail));
      body.append(det);
    }

    const outcome = el("div", { class: "card-outcome", role: "status" });
    const suggs = Array.isArray(card.suggestions) ? card.suggestions : [];
    if (suggs.length) {
      const box = el("div", { class: "card-suggestions" });
      const buttons = [];
      for (const s of suggs) {
        const b = el("button", {
          type: "button", class: "suggestion" + (s.isRecommended ? " recommended" : ""),
          "data-suggestion-uuid": s.uuid || "", title: (s.actions || []).map((a) => a.description).filter(Boolean).join("; "),
        }, (s.isRecommended ? "\u2605 " : "") + (s.label || "Accept"));
        b.addEventListener("click", async () => {
          if (b.disabled) return;
          b.disabled = true;
          try {
            if (card.uuid && s.uuid) {
              await sendFeedback(serviceId, { card: card.uuid, outcome: "accepted", acceptedSuggestions: [{ id: s.uuid }], outcomeTimestamp: nowStamp() });
            }
            applyActions(s);
            b.classList.add("accepted");
            b.textContent = `\u2713 ${s.label || "Accepted"}`;
            outcome.textContent = "Suggestion accepted";
            article.dataset.outcome = "accepted";
            if (card.selectionBehavior === "at-most-one") for (const o of buttons) o.disabled = true;
          } catch (e) {
            b.disabled = false;
            outcome.textContent = `Could not record: ${e.message}`;
          }
        });
        buttons.push(b);
        box.append(b);
      }
      body.append(box);
    }

    const links = Array.isArray(card.links) ? card.links : [];
    if (links.length) {
      const box = el("div", { class: "card-links" });
      for (const l of links) {
        const href = safeUrl(l.url);
        if (l.type === "absolute" && href) {
          box.append(el("a", { href, target: "_blank", rel: "noopener noreferrer", class: "card-link" }, `\u2197 ${l.label || href}`));
        } else {
          box.append(el("span", { class: "muted", title: "SMART app launch is not available in this demo" }, `${l.label || "link"} (SMART app)`));
        }
      }
      body.append(box);
    }

    const actions = el("div", { class: "card-actions" });
    const dismiss = el("button", { type: "button", class: "dismiss" }, "Dismiss…");
    actions.append(dismiss);
    body.append(actions, outcome);

    dismiss.addEventListener("click", () => {
      if (body.querySelector(".card-dismiss")) return;
      const form = el("form", { class: "card-dismiss" });
      const fs = el("fieldset", null, el("legend", null, "Reason for dismissing (optional)"));
      const reasons = Array.isArray(card.overrideReasons) ? card.overrideReasons : [];
      const name = `reason-${card.uuid || Math.random()}`;
      reasons.forEach((r, k) => {
        const input = el("input", { type: "radio", name, value: String(k) });
        fs.append(el("label", null, [input, " ", r.display || r.code || "reason"]));
      });
      const comment = el("textarea", { rows: "2", "aria-label": "Comment", placeholder: "Comment (optional)" });
      fs.append(comment);
      const confirm = el("button", { type: "submit", class: "confirm-dismiss" }, "Dismiss card");
      const cancel = el("button", { type: "button" }, "Cancel");
      form.append(fs, el("div", { class: "card-actions" }, [confirm, cancel]));
      cancel.addEventListener("click", () => form.remove());
      form.addEventListener("submit", async (ev) => {
        ev.preventDefault();
        confirm.disabled = true;
        const picked = form.querySelector("input[type=radio]:checked");
        const item = { card: card.uuid, outcome: "overridden", outcomeTimestamp: nowStamp() };
        const reason = picked ? reasons[Number(picked.value)] : null;
        const text = comment.value.trim();
        if (reason || text) {
          item.overrideReason = {};
          if (reason) item.overrideReason.reason = Object.fromEntries(Object.entries(reason).filter(([k]) => ["code", "system", "display"].includes(k)));
          if (text) item.overrideReason.userComment = text;
        }
        try {
          if (card.uuid) await sendFeedback(serviceId, item);
          form.remove();
          article.classList.add("dismissed");
          article.dataset.outcome = "overridden";
          dismiss.disabled = true;
          for (const b of body.querySelectorAll("button.suggestion")) b.disabled = true;
          outcome.textContent = reason ? `Dismissed: ${reason.display || reason.code}` : "Dismissed";
        } catch (e) {
          confirm.disabled = false;
          outcome.textContent = `Could not record: ${e.message}`;
        }
      });
      body.insertBefore(form, outcome);
      const firstRadio = form.querySelector("input");
      if (firstRadio) firstRadio.focus();
    });
    return article;
  }

  /** Replace the cards on screen with `cards` from service `serviceId` (CDS Hooks: newest replaces). */
  function renderCards(serviceId, hook, cards) {
    const box = $("cards");
    box.replaceChildren();
    $("cards-panel").hidden = false;
    $("cards-hook").textContent = `(${hook || serviceId})`;
    box.dataset.serviceId = serviceId;
    const kindOf = (c) => (c.extension && c.extension["pml-plex"] && c.extension["pml-plex"].kind) || "";
    if (hook === "order-select") state.selectedKinds = cards.map(kindOf);
    // order-sign after order-select leaves out the info cards that did not change: say so
    const shown = new Set(cards.map(kindOf));
    const notRepeated = hook === "order-sign" ? (state.selectedKinds || []).filter((k) => !shown.has(k)) : [];
    if (!cards.length && !notRepeated.length) {
      box.append(el("p", { class: "no-cards" }, "No decision support for this order."));
      return;
    }
    for (const c of cards) box.append(renderCard(serviceId, c));
    if (notRepeated.length) {
      box.append(el("p", { class: "not-repeated", "data-not-repeated": String(notRepeated.length) },
        `${notRepeated.length} card${notRepeated.length === 1 ? "" : "s"} unchanged since the order was selected `
        + "(information only) not repeated at signing."));
    }
  }

  window.cdsDemo = { renderMarkdown, renderCards, fireHook, safeUrl, state, selectPatient, withDraftOrders };

  document.addEventListener("DOMContentLoaded", () => {
    $("btn-order").addEventListener("click", orderPlex);
    $("btn-sign").addEventListener("click", sign);
    loadPatients().then(() => { document.body.dataset.ready = "1"; });
  });
})();
