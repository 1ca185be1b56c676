// kern dashboard: makes the server-rendered pages live. Without it they
// are complete, just not updating by themselves.
"use strict";

// Relative times ("3 min ago"), kept current.
function ago(date) {
  const s = (Date.now() - date.getTime()) / 1000;
  const a = Math.abs(s);
  let t;
  if (a < 5) return "just now";
  if (a < 60) t = Math.floor(a) + " s";
  else if (a < 3600) t = Math.floor(a / 60) + " min";
  else if (a < 172800) t = Math.floor(a / 3600) + " h";
  else t = Math.floor(a / 86400) + " days";
  return s < 0 ? "in " + t : t + " ago";
}
function refreshTimes(root) {
  for (const el of root.querySelectorAll("time[datetime]")) el.textContent = ago(new Date(el.getAttribute("datetime")));
}

// The run list: the table body, re-rendered by the server, once a second.
function liveRuns(table) {
  const body = table.querySelector("tbody");
  const url = new URL(location.href);
  url.searchParams.set("fragment", "1");
  let busy = false;
  setInterval(async () => {
    if (busy || document.hidden) return;
    busy = true;
    try {
      const res = await fetch(url, { headers: { Accept: "text/html" }, credentials: "same-origin" });
      if (res.ok) body.innerHTML = await res.text();
      else if (res.status === 401) location.reload();
    } catch (e) { /* offline for a moment: try again next tick */ }
    busy = false;
  }, 1000);
}

const statusOf = {
  "run.started": "running", "run.waiting": "waiting", "run.retrying": "pending", "run.released": "pending",
  "run.completed": "completed", "run.error": "error", "run.cancelled": "cancelled",
};
// Events after which the forms, metrics and transcript have changed.
const refreshOn = new Set(["run.waiting", "run.completed", "run.error", "run.cancelled", "tool.call", "tool.result",
  "tool.approved", "tool.rejected", "run.retrying", "run.released", "output.rejected"]);

// One run: follows its event stream from the last event the page shows.
function liveRun(box) {
  const id = box.dataset.runId;
  const content = document.getElementById("content");
  const status = document.getElementById("status");
  const events = document.getElementById("events");
  const after = box.dataset.lastSeq || "0";
  const es = new EventSource("/ui/runs/" + encodeURIComponent(id) + "/events?after=" + after);
  let refreshing = null;
  function setStatus(st) {
    status.textContent = st;
    status.dataset.status = st;
    status.className = "badge st-" + st;
  }
  async function refresh() {
    // The parts a server render knows best: the forms, the metrics, the transcript.
    try {
      const res = await fetch(location.href, { credentials: "same-origin" });
      if (!res.ok) return;
      const doc = new DOMParser().parseFromString(await res.text(), "text/html");
      for (const part of ["actions", "metrics", "transcript"]) {
        const fresh = doc.getElementById(part), old = document.getElementById(part);
        if (fresh && old) old.replaceWith(fresh);
      }
      const st = doc.getElementById("status");
      if (st) setStatus(st.dataset.status);
    } catch (e) { /* the next event tries again */ }
  }
  function onEvent(ev) {
    const type = ev.type;
    let data = {};
    try { data = JSON.parse(ev.data); } catch (e) {}
    if (type === "content.delta") content.textContent += data.delta || "";
    if (type === "run.started" || type === "run.retrying" || type === "run.released") content.textContent = "";
    if (statusOf[type]) setStatus(statusOf[type]);
    const li = document.createElement("li");
    li.className = "event";
    li.dataset.seq = ev.lastEventId;
    li.dataset.type = type;
    const seq = document.createElement("span"); seq.className = "mono"; seq.textContent = ev.lastEventId;
    const name = document.createElement("strong"); name.textContent = type;
    const code = document.createElement("code"); code.textContent = ev.data;
    li.append(seq, " ", name, " ", code);
    events.append(li);
    if (refreshOn.has(type)) {
      clearTimeout(refreshing);
      refreshing = setTimeout(refresh, 50);
    }
    if (statusOf[type] && ["completed", "error", "cancelled"].includes(statusOf[type])) es.close();
  }
  for (const t of ["run.started", "content.delta", "tool.call", "tool.result", "run.waiting", "tool.approved",
    "tool.rejected", "run.retrying", "run.released", "output.rejected", "run.completed", "run.error", "run.cancelled"]) {
    es.addEventListener(t, onEvent);
  }
  es.onmessage = onEvent; // any other type
}

document.addEventListener("DOMContentLoaded", () => {
  refreshTimes(document);
  setInterval(() => refreshTimes(document), 5000);
  const table = document.querySelector("table#runs[data-live]");
  if (table) liveRuns(table);
  const box = document.getElementById("run");
  if (box && !["completed", "error", "cancelled"].includes(document.getElementById("status").dataset.status)) liveRun(box);
});
