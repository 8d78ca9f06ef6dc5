// clustersync dashboard: live fleet table and confirmations. Our own code, no dependency.
// Everything from the server is put into the page with textContent, never as HTML.
"use strict";

const POLL_MS = 2000;

function cell(row, text, className) {
  const td = row.insertCell();
  if (className) td.className = className;
  if (text instanceof Node) td.appendChild(text); else td.textContent = text;
  return td;
}

function el(name, text, attrs) {
  const node = document.createElement(name);
  if (text !== undefined && text !== null) node.textContent = text;
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
  return node;
}

function ago(epochSeconds) {
  if (!epochSeconds) return "never";
  const seconds = Math.max(0, Math.round(Date.now() / 1000 - epochSeconds));
  if (seconds < 60) return seconds + " s ago";
  if (seconds < 3600) return Math.round(seconds / 60) + " min ago";
  return Math.round(seconds / 3600) + " h ago";
}

function progress(cluster) {
  const box = el("div");
  for (const [kind, p] of Object.entries(cluster.progress || {})) {
    const line = el("div", null, { class: "progress", "data-kind": kind });
    line.appendChild(el("progress", p.stored + " / " + p.listed,
      { value: String(Math.min(p.stored, p.listed)), max: String(p.listed), title: kind }));
    line.appendChild(document.createTextNode(" " + p.stored + " / " + p.listed + " " + kind));
    box.appendChild(line);
  }
  if (!box.childNodes.length) box.appendChild(el("span", "—", { class: "muted" }));
  return box;
}

function renderFleet(table, clusters) {
  const body = table.tBodies[0];
  const fresh = document.createElement("tbody");
  for (const c of clusters) {
    const row = fresh.insertRow();
    row.dataset.cluster = c.account + "/" + c.cluster;
    const href = "/ui/clusters/" + encodeURIComponent(c.account) + "/" +
      encodeURIComponent(c.cluster);
    const name = el("a", c.cluster, { href: href });
    const who = el("div");
    who.appendChild(name);
    who.appendChild(el("div", c.account, { class: "muted" }));
    cell(row, who);
    cell(row, el("span", c.state, { class: "badge " + c.state }), "state");
    cell(row, String(c.objects), "num objects");
    cell(row, Object.entries(c.kinds).map(([k, n]) => k + ": " + n).join(", ") || "—", "kinds");
    cell(row, progress(c), "sync");
    cell(row, typeof c.lastSeen === "number" ? ago(c.lastSeen) : (c.lastSeen || "—"));
    cell(row, c.agentVersion || "—");
    const outcomes = Object.entries(c.writes || {}).sort();
    const audit = "/ui/writes?account=" + encodeURIComponent(c.account) + "&cluster=" +
      encodeURIComponent(c.cluster);
    cell(row, outcomes.length
      ? el("a", outcomes.map(([s, n]) => n + " " + s).join(", "), { href: audit }) : "—",
      "writes");
    cell(row, String(c.deadLetters), "num dead");
  }
  table.replaceChild(fresh, body);
}

async function poll(table, status) {
  try {
    const response = await fetch(table.dataset.source, { credentials: "same-origin" });
    if (response.status === 401) { window.location.assign("/ui/login"); return; }
    if (!response.ok) throw new Error("HTTP " + response.status);
    const data = await response.json();
    renderFleet(table, data.clusters);
    status.textContent = "live · updated " + new Date().toLocaleTimeString();
  } catch (err) {
    status.textContent = "live updates paused: " + err.message;
  }
  setTimeout(() => poll(table, status), POLL_MS);
}

document.addEventListener("DOMContentLoaded", () => {
  const table = document.querySelector("table[data-source]");
  if (table) {
    const status = document.getElementById("live-status") || el("span");
    poll(table, status);
  }
  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  }
});
