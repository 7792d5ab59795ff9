// The desk page. Comment text is hostile input: every string from the server reaches the page
// through textContent or a text node, never as HTML.
"use strict";

const PAGE = 50;
const state = { offset: 0, total: 0, groups: [], cursor: 0, undo: [], busy: false };

function csrf() {
  const m = document.cookie.match(/(?:^|;\s*)desk_csrf=([^;]+)/);
  return m ? decodeURIComponent(m[1]) : "";
}

async function api(path, body) {
  const opts = { credentials: "same-origin", headers: {} };
  if (body !== undefined) {
    opts.method = "POST";
    opts.headers = { "Content-Type": "application/json", "X-CSRF-Token": csrf() };
    opts.body = JSON.stringify(body);
  }
  const res = await fetch(path, opts);
  if (res.status === 401) { location.href = "/login"; throw new Error("logged out"); }
  const data = await res.json().catch(() => ({}));
  if (!res.ok && res.status !== 409) throw new Error(data.detail || res.statusText);
  return { status: res.status, data };
}

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
}

function status(text) { document.getElementById("status").textContent = text; }

function filters() {
  const p = new URLSearchParams();
  const cat = document.getElementById("f-category").value, topic = document.getElementById("f-topic").value;
  const q = document.getElementById("f-search").value.trim(), decided = document.getElementById("f-decided").value;
  if (cat) p.set("category", cat);
  if (topic !== "") p.set("topic", topic);
  if (q) p.set("search", q);
  p.set("decided", decided);
  return p;
}

// Quoted spans of the evidence ('term' or (as 'spelling')) are marked in the text.
function terms(group) {
  const out = new Set();
  for (const e of group.evidence) for (const m of e.matchAll(/'([^']+)'/g)) if (m[1].length >= 2 || /[\u4e00-\u9fff]/.test(m[1])) out.add(m[1]);
  return [...out].sort((a, b) => b.length - a.length);
}

function highlighted(text, group) {
  const box = el("div", "text");
  const found = terms(group);
  let rest = text;
  while (rest.length) {
    let at = -1, hit = "";
    for (const t of found) {
      const i = rest.toLowerCase().indexOf(t.toLowerCase());
      if (i >= 0 && (at < 0 || i < at)) { at = i; hit = rest.substr(i, t.length); }
    }
    if (at < 0) { box.appendChild(document.createTextNode(rest)); break; }
    box.appendChild(document.createTextNode(rest.slice(0, at)));
    box.appendChild(el("mark", "", hit));
    rest = rest.slice(at + hit.length);
  }
  return box;
}

function entry(group, index) {
  const box = el("article", `entry cat-${group.categories[0] || ""}`);
  box.dataset.group = group.dup_group;
  box.dataset.index = index;
  box.appendChild(el("div", "meta",
    `#${group.rank} · priority ${group.priority.toFixed(2)} · ${group.size} comment${group.size > 1 ? "s" : ""} · topic ${group.topic_id}: ${group.topic_label} · group ${group.dup_group}`));
  box.appendChild(highlighted(group.text, group));
  const badges = el("div");
  for (const c of group.categories) badges.appendChild(el("span", `badge ${c}`, `${c} ${group.scores[c].toFixed(2)}`));
  box.appendChild(badges);
  const ev = el("div", "evidence");
  for (const e of group.evidence) ev.appendChild(el("div", "", e));
  box.appendChild(ev);
  if (group.decision) box.appendChild(el("div", "decided", `${group.decision.decision} by ${group.decision.moderator}${group.decision.note ? ": " + group.decision.note : ""}`));
  if (group.claimed_by) box.appendChild(el("div", "claimed", `open at ${group.claimed_by}'s desk`));
  box.addEventListener("click", () => select(index));
  return box;
}

function render() {
  const box = document.getElementById("queue");
  box.replaceChildren(...state.groups.map(entry));
  if (!state.groups.length) box.appendChild(el("p", "", "Nothing to review for this filter."));
  const last = Math.min(state.offset + state.groups.length, state.total);
  document.getElementById("page").textContent = state.total ? `${state.offset + 1}–${last} of ${state.total}` : "0 of 0";
  select(Math.min(state.cursor, Math.max(0, state.groups.length - 1)));
}

async function load() {
  const p = filters();
  p.set("offset", state.offset);
  p.set("limit", PAGE);
  const { data } = await api(`/api/queue?${p}`);
  state.total = data.total;
  state.groups = data.groups;
  if (!state.groups.length && state.offset > 0) { state.offset = Math.max(0, state.offset - PAGE); return load(); }
  render();
}

function current() { return state.groups[state.cursor]; }

async function select(index) {
  const nodes = document.querySelectorAll("#queue .entry");
  nodes.forEach(n => n.classList.remove("current"));
  if (!nodes.length) return;
  state.cursor = Math.max(0, Math.min(index, nodes.length - 1));
  const node = nodes[state.cursor];
  node.classList.add("current");
  node.scrollIntoView({ block: "nearest" });
  const { status: code, data } = await api("/api/claims", { dup_group: current().dup_group });
  if (code === 409) status(`${data.held_by} has this group open`);
}

async function move(step) {
  const next = state.cursor + step;
  if (next >= state.groups.length && state.offset + PAGE < state.total) { state.offset += PAGE; state.cursor = 0; return load(); }
  if (next < 0 && state.offset > 0) { state.offset -= PAGE; state.cursor = PAGE - 1; return load(); }
  select(next);
}

async function decide(decision) {
  const group = current();
  if (!group || state.busy) return;
  state.busy = true;
  try {
    const note = document.getElementById("note");
    const body = { dup_group: group.dup_group, decision };
    if (note.value.trim()) body.note = note.value.trim();
    await api("/api/decisions", body);
    note.value = "";
    state.undo.push(group.dup_group);
    status(`${decision}: group ${group.dup_group} (${group.size} comment${group.size > 1 ? "s" : ""}) · u undoes`);
    await load();
  } catch (e) { status(`not saved: ${e.message}`); } finally { state.busy = false; }
}

async function undo() {
  const group = state.undo.pop();
  if (!group) { status("nothing of yours to undo"); return; }
  await api("/api/decisions", { dup_group: group, decision: "undo" });
  status(`undone: group ${group}`);
  await load();
}

async function members() {
  const group = current();
  const node = document.querySelector("#queue .entry.current");
  if (!group || !node) return;
  const open = node.querySelector(".members");
  if (open) { open.remove(); return; }
  const { data } = await api(`/api/groups/${encodeURIComponent(group.dup_group)}`);
  const list = el("ol", "members");
  for (const m of data.members) list.appendChild(el("li", "", `${m.comment_id}: ${m.text}`));
  node.appendChild(list);
}

async function bulk(decision) {
  const p = filters();
  p.set("ids_only", "true");
  const { data } = await api(`/api/queue?${p}`);
  if (!data.total || !confirm(`${decision} all ${data.total} groups this filter shows?`)) return;
  for (let i = 0; i < data.dup_groups.length; i += 1000) {
    await api("/api/decisions", data.dup_groups.slice(i, i + 1000).map(g => ({ dup_group: g, decision })));
  }
  status(`${decision}: ${data.total} groups`);
  state.offset = 0;
  await load();
}

function toggleHelp(show) {
  const help = document.getElementById("help");
  help.hidden = show === undefined ? !help.hidden : !show;
}

document.addEventListener("keydown", ev => {
  const typing = ["INPUT", "SELECT", "TEXTAREA"].includes(document.activeElement.tagName);
  if (ev.key === "Escape") { document.activeElement.blur(); toggleHelp(false); return; }
  if (typing || ev.ctrlKey || ev.metaKey || ev.altKey) return;
  const actions = {
    j: () => move(1), ArrowDown: () => move(1), k: () => move(-1), ArrowUp: () => move(-1),
    a: () => decide("approve"), r: () => decide("remove"), e: () => decide("escalate"), u: undo, m: members,
    n: () => document.getElementById("note").focus(), "/": () => document.getElementById("f-search").focus(),
    z: () => document.body.classList.toggle("zen"), "?": () => toggleHelp(),
  };
  if (actions[ev.key]) { ev.preventDefault(); actions[ev.key](); }
});

document.addEventListener("DOMContentLoaded", () => {
  for (const id of ["f-category", "f-topic", "f-decided"]) document.getElementById(id).addEventListener("change", () => { state.offset = 0; state.cursor = 0; load(); });
  document.getElementById("f-search").addEventListener("keydown", ev => { if (ev.key === "Enter") { state.offset = 0; state.cursor = 0; load(); ev.target.blur(); } });
  document.getElementById("prev").addEventListener("click", () => { state.offset = Math.max(0, state.offset - PAGE); load(); });
  document.getElementById("next").addEventListener("click", () => { if (state.offset + PAGE < state.total) { state.offset += PAGE; load(); } });
  document.getElementById("bulk-approve").addEventListener("click", () => bulk("approve"));
  document.getElementById("bulk-remove").addEventListener("click", () => bulk("remove"));
  document.getElementById("zen").addEventListener("click", () => document.body.classList.toggle("zen"));
  document.getElementById("help-button").addEventListener("click", () => toggleHelp());
  document.getElementById("logout").addEventListener("click", async () => { await api("/logout", {}); location.href = "/login"; });
  load().catch(e => status(`cannot load the queue: ${e.message}`));
});
