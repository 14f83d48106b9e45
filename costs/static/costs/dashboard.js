/* The admin dashboard: draws the charts from the embedded figures and
   refreshes them every 30 seconds without reloading the page. Chart.js comes
   with the admin theme (django-unfold), served from our own static files. */
(function () {
  "use strict";
  const root = document.getElementById("spend-dashboard");
  if (!root || typeof Chart === "undefined") { return; }
  const PALETTE = ["#6366f1", "#f59e0b", "#10b981", "#ef4444", "#3b82f6", "#8b5cf6", "#ec4899", "#14b8a6", "#84cc16", "#f97316"];
  const money = (s) => (Number(s) < 0 ? "-$" : "$") + Math.abs(Number(s)).toLocaleString(undefined, {minimumFractionDigits: 2, maximumFractionDigits: 2});
  const get = (obj, path) => path.split(".").reduce((o, k) => (o == null ? o : o[k]), obj);
  const charts = {};

  function dailyData(d) {
    const days = d.by_day.map((r) => r.date);
    const providers = [...new Set(d.by_day_provider.map((r) => r.provider))];
    const datasets = providers.map((p, i) => {
      const byDate = Object.fromEntries(d.by_day_provider.filter((r) => r.provider === p).map((r) => [r.date, Number(r.cost)]));
      return {label: p, data: days.map((day) => byDate[day] || 0), backgroundColor: PALETTE[i % PALETTE.length], stack: "cost"};
    });
    return {labels: days, datasets: datasets};
  }

  function draw(id, type, data, options) {
    const canvas = document.getElementById(id);
    if (charts[id]) { charts[id].data = data; charts[id].update(); return; }
    charts[id] = new Chart(canvas, {type: type, data: data, options: Object.assign({responsive: true, maintainAspectRatio: false, animation: false}, options || {})});
  }

  function bars(container, list) {
    container.replaceChildren();
    list.forEach((b) => {
      const row = document.createElement("div");
      row.className = "sd-bar budget-progress";
      row.dataset.level = b.level;
      row.textContent = b.name + ": " + b.spent_display + " of " + b.limit_display + " (" + b.percent_used + "%)";
      const track = document.createElement("div");
      track.className = "sd-bar-track";
      const fill = document.createElement("div");
      fill.className = "sd-bar-fill " + b.level;
      fill.style.width = b.width + "%";
      track.appendChild(fill);
      row.appendChild(track);
      container.appendChild(row);
    });
  }

  function render(d) {
    root.querySelectorAll("[data-field]").forEach((el) => {
      const v = get(d, el.dataset.field);
      if (v !== undefined) { el.textContent = el.dataset.format === "money" ? money(v) : v; }
    });
    root.querySelectorAll("[data-bars]").forEach((el) => bars(el, (d.bars[el.dataset.bars] || []).map((b) => Object.assign({}, b, {
      spent_display: b.metric === "cost" ? money(b.spent) : b.spent,
      limit_display: b.metric === "cost" ? money(b.limit) : b.limit,
    }))));
    const warnings = document.getElementById("sd-warnings");
    warnings.replaceChildren(...d.projection.warnings.map((w) => { const p = document.createElement("p"); p.className = "sd-warning"; p.textContent = w; return p; }));
    draw("sd-daily", "bar", dailyData(d), {scales: {x: {stacked: true}, y: {stacked: true}}});
    draw("sd-providers", "doughnut", {labels: d.by_provider.map((r) => r.provider),
      datasets: [{data: d.by_provider.map((r) => Number(r.cost)), backgroundColor: PALETTE}]});
    const top = d.by_model.slice(0, 8);
    draw("sd-models", "bar", {labels: top.map((r) => r.model), datasets: [{label: "cost", data: top.map((r) => Number(r.cost)), backgroundColor: PALETTE[0]}]}, {indexAxis: "y", plugins: {legend: {display: false}}});
    const body = document.querySelector("#sd-profiles tbody");
    body.replaceChildren(...d.by_profile.map((r) => {
      const tr = document.createElement("tr");
      [r.display_name || r.profile, money(r.cost), r.requests].forEach((v) => { const td = document.createElement("td"); td.textContent = v; tr.appendChild(td); });
      return tr;
    }));
    const alerts = document.getElementById("sd-alerts");
    alerts.replaceChildren(...d.recent_alerts.map((a) => { const li = document.createElement("li"); li.className = a.severity; li.textContent = a.created_at.slice(0, 16).replace("T", " ") + "  " + a.title; return li; }));
    document.getElementById("sd-updated").textContent = "Updated " + new Date().toLocaleTimeString();
    root.dataset.renderedAt = String(Date.now());
  }

  async function refresh() {
    const params = new URLSearchParams({org: root.dataset.org, range: root.dataset.range});
    try {
      const resp = await fetch(root.dataset.endpoint + "?" + params, {credentials: "same-origin", headers: {Accept: "application/json"}});
      if (resp.ok) { render(await resp.json()); root.dataset.refreshes = String(Number(root.dataset.refreshes || 0) + 1); }
    } catch (e) { /* keep the last figures; the next tick tries again */ }
  }

  document.getElementById("sd-range").addEventListener("change", (e) => { root.dataset.range = e.target.value; refresh(); });
  render(JSON.parse(document.getElementById("sd-initial").textContent));
  setInterval(refresh, Number(root.dataset.interval || 30000));
})();
