// The tenant dashboard: reads the tenant's own usage API with the key they give it and
// shows it. Every figure on the page is a string from an API reply, shown as the API
// wrote it (amounts, quantities and percentages are exact decimals); numbers are only
// converted to floating point to size bars, never to display them. The page is built
// with DOM calls and textContent, so nothing from the API is parsed as markup.
"use strict";

const KEY_STORAGE = "tollgate.apiKey";
const RATE_PERIODS = [
  ["perSecond", "second"],
  ["perMinute", "minute"],
  ["perHour", "hour"],
  ["perDay", "day"],
];
const OUTLOOKS = {
  withinBudget: "within the budget",
  onTrackToExceed: "on track to exceed the budget",
  exceeded: "over the budget",
};

const $ = (selector, root = document) => root.querySelector(selector);
const testid = (id, root = document) => $(`[data-testid="${id}"]`, root);

/** An error reply of the API, or a request that got none. */
class ApiFailure extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

const page = {
  key: null,
  usage: null,
  history: null,
};

// Content Security Policy violations are counted where a test (or a curious operator)
// can read them: the page should never cause one.
let violations = 0;
document.addEventListener("securitypolicyviolation", () => {
  violations += 1;
  document.body.dataset.cspViolations = String(violations);
});

document.addEventListener("DOMContentLoaded", start);

function start() {
  document.body.dataset.cspViolations = "0";
  $("#key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const key = $("#key").value.trim();
    if (key) {
      sessionStorage.setItem(KEY_STORAGE, key);
      $("#key").value = "";
      load();
    }
  });
  $("#sign-out").addEventListener("click", signOut);
  $("#refresh").addEventListener("click", () => load());
  $("#trend-meter").addEventListener("change", () => drawTrend());
  $("#estimate-form").addEventListener("submit", (event) => {
    event.preventDefault();
    estimate();
  });

  // A key in the fragment (`#key=…`, never sent to a server) is moved into the tab's
  // storage and taken out of the address bar and the history.
  const fragment = new URLSearchParams(location.hash.slice(1));
  if (fragment.has("key")) {
    sessionStorage.setItem(KEY_STORAGE, fragment.get("key").trim());
    history.replaceState(null, "", location.pathname);
  }
  if (sessionStorage.getItem(KEY_STORAGE)) {
    load();
  } else {
    showSignIn();
  }
}

function setState(state) {
  $("#main").dataset.state = state;
  $("#main").setAttribute("aria-busy", String(state === "loading"));
}

function showSignIn(message) {
  page.key = null;
  $("#dashboard").hidden = true;
  $("#context").hidden = true;
  $("#sign-out").hidden = true;
  $("#refresh").hidden = true;
  $("#sign-in").hidden = false;
  showError(message);
  setState("signed-out");
  $("#key").focus();
}

function signOut() {
  sessionStorage.removeItem(KEY_STORAGE);
  showSignIn();
}

function showError(message) {
  const error = $("#error");
  error.textContent = message || "";
  error.hidden = !message;
}

/** Calls the API (paths are relative to the page: `usage` is `/v1/usage`). */
async function api(path, init = {}) {
  const headers = { authorization: `Bearer ${page.key}` };
  if (init.body !== undefined) {
    headers["content-type"] = "application/json";
  }
  let response;
  try {
    response = await fetch(path, {
      ...init,
      headers,
      cache: "no-store",
      credentials: "omit",
      redirect: "error",
    });
  } catch (error) {
    throw new ApiFailure(0, "network", `the API did not answer (${error.message})`);
  }
  const text = await response.text();
  let body = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = null;
  }
  if (!response.ok) {
    throw new ApiFailure(
      response.status,
      body?.code ?? `http_${response.status}`,
      body?.message ?? text.slice(0, 200),
    );
  }
  return body;
}

async function load() {
  page.key = sessionStorage.getItem(KEY_STORAGE);
  if (!page.key) {
    showSignIn();
    return;
  }
  setState("loading");
  showError();
  try {
    const usage = await api("usage");
    const period = usage.period;
    const range = new URLSearchParams({
      granularity: "day",
      by: "meter",
      from: period.start,
      to: period.end,
    });
    const [forecast, pricing, preview, history, alerts] = await Promise.all([
      api("forecast"),
      api("pricing"),
      api("invoice/preview"),
      api(`usage/history?${range}`),
      api(`alerts?month=${encodeURIComponent(period.key)}`),
    ]);
    page.usage = usage;
    page.history = history;
    render({ usage, forecast, pricing, preview, alerts });
    $("#sign-in").hidden = true;
    $("#dashboard").hidden = false;
    $("#context").hidden = false;
    $("#sign-out").hidden = false;
    $("#refresh").hidden = false;
    setState("ready");
  } catch (error) {
    if (error instanceof ApiFailure && error.status === 401) {
      sessionStorage.removeItem(KEY_STORAGE);
      showSignIn(`This key was not accepted: ${error.message}`);
      return;
    }
    showError(describe(error));
    setState("error");
  }
}

function describe(error) {
  if (error instanceof ApiFailure) {
    return error.status
      ? `The API answered ${error.status} (${error.code}): ${error.message}`
      : `The API could not be reached: ${error.message}`;
  }
  if (error instanceof TypeError && page.key && /[^\x21-\x7e]/.test(page.key)) {
    return "The key holds characters an API key cannot have.";
  }
  return `Something went wrong: ${error.message}`;
}

function render({ usage, forecast, pricing, preview, alerts }) {
  testid("tenant").textContent = usage.tenant;
  testid("plan").textContent = usage.plan;
  testid("period").textContent = period(usage.period);
  setTime(testid("as-of"), usage.asOf);
  renderSpend(usage, forecast);
  renderCost(preview);
  renderTrendMeters(usage, page.history);
  renderMeters(usage);
  renderRateLimits(pricing);
  renderAlerts(alerts.alerts);
  renderEstimator(usage, forecast);
}

function renderSpend(usage, forecast) {
  testid("spend-so-far").textContent = forecast.cost.soFar;
  testid("currency").textContent = forecast.currency;
  testid("projected-spend").textContent = forecast.cost.projected;
  testid("projected-currency").textContent = forecast.currency;
  const budget = forecast.budget;
  const evaluation = budget?.evaluation;
  $("#budget").hidden = !evaluation;
  $("#no-budget").hidden = Boolean(budget);
  testid("budget-outlook").textContent = "";
  if (budget && !evaluation) {
    $("#no-budget").hidden = false;
    $("#no-budget").textContent =
      `Your budget is in ${budget.budget.currency}, your plan in ${forecast.currency}: it is not evaluated.`;
  }
  if (!evaluation) {
    return;
  }
  testid("budget-amount").textContent = budget.budget.monthlyAmount;
  testid("budget-currency").textContent = budget.budget.currency;
  testid("budget-percent").textContent = evaluation.percentUsed;
  $("#hard-limit").hidden = !budget.budget.hardLimit;
  const percent = Number(evaluation.percentUsed);
  const bar = testid("budget-progress");
  bar.setAttribute("aria-valuenow", evaluation.percentUsed);
  bar.setAttribute("aria-valuemax", String(Math.max(100, Math.ceil(percent))));
  bar.setAttribute("aria-valuetext", `${evaluation.percentUsed} % of the budget`);
  bar.classList.toggle("warn", percent >= 80 && percent < 100);
  bar.classList.toggle("over", percent >= 100);
  $(".fill", bar).style.width = `${Math.min(100, Math.max(0, percent))}%`;
  testid("budget-verdict").textContent =
    evaluation.verdict === "block"
      ? "The hard limit is reached: your API requests are refused (402) until the budget is raised or the month ends."
      : budget.budget.hardLimit
        ? "Requests are refused (402) once the spend reaches the budget."
        : "Alerts only: requests are never refused for the budget.";
  const outlook = evaluation.forecast.outlook;
  let text = OUTLOOKS[outlook.status] ?? outlook.status;
  if (outlook.day !== undefined) {
    text += `, reached on day ${outlook.day}`;
  }
  testid("budget-outlook").textContent = `(${evaluation.forecast.projectedPercent} %: ${text})`;
}

function renderCost(preview) {
  const body = $("tbody", testid("cost-lines"));
  body.replaceChildren();
  const total = Number(preview.total);
  for (const line of preview.lines) {
    const row = el("tr", { "data-testid": "cost-line", "data-kind": line.kind });
    if (line.meter) {
      row.dataset.meter = line.meter;
    }
    row.append(
      el("th", { scope: "row" }, line.description),
      cell(line.quantity, "line-quantity"),
      cell(line.included, "line-included"),
      cell(line.billable, "line-billable"),
      cell(line.amount, "line-amount"),
      el("td", { class: "share" }, thinBar(total > 0 ? Number(line.amount) / total : 0)),
    );
    body.append(row);
  }
  testid("invoice-total").textContent = `${preview.total} ${preview.currency}`;
  testid("invoice-total").dataset.value = preview.total;
}

function renderTrendMeters(usage, history) {
  const select = $("#trend-meter");
  const previous = select.value;
  const meters = new Set(usage.meters.map((m) => m.meter));
  for (const row of history.rows) {
    meters.add(row.meter);
  }
  select.replaceChildren(...[...meters].sort().map((m) => el("option", { value: m }, m)));
  if (meters.has(previous)) {
    select.value = previous;
  }
  drawTrend();
}

/** The bar chart of the chosen meter's days, from the month's start to today. */
function drawTrend() {
  const meter = $("#trend-meter").value;
  const usage = page.usage;
  const byDay = new Map();
  for (const row of page.history.rows) {
    if (row.meter === meter && row.quantity !== null) {
      byDay.set(row.window.start.slice(0, 10), row.quantity);
    }
  }
  const unit = usage.meters.find((m) => m.meter === meter)?.unit ?? "";
  const days = daysOf(usage.period.start, usage.asOf);
  const values = days.map((day) => byDay.get(day) ?? "0");
  const max = Math.max(0, ...values.map(Number));

  const width = 720;
  const height = 200;
  const left = 8;
  const bottom = 18;
  const slot = (width - left) / Math.max(days.length, 28);
  const svg = svgEl("svg", {
    viewBox: `0 0 ${width} ${height}`,
    role: "img",
    "aria-label": `${meter} per day`,
    preserveAspectRatio: "none",
  });
  svg.append(
    svgEl("line", { class: "axis", x1: left, y1: height - bottom, x2: width, y2: height - bottom }),
  );
  const today = usage.asOf.slice(0, 10);
  days.forEach((day, i) => {
    const value = values[i];
    const h = max > 0 ? (Number(value) / max) * (height - bottom - 14) : 0;
    const x = left + i * slot + slot * 0.15;
    const rect = svgEl("rect", {
      class: day === today ? "bar-rect today" : "bar-rect",
      x: x.toFixed(2),
      y: (height - bottom - h).toFixed(2),
      width: (slot * 0.7).toFixed(2),
      height: h.toFixed(2),
      "data-testid": "trend-bar",
      "data-day": day,
      "data-value": value,
    });
    rect.append(svgEl("title", {}, `${day}: ${value} ${unit}`.trim()));
    svg.append(rect);
    if (i % 5 === 0 || day === today) {
      svg.append(
        svgEl("text", { x: x.toFixed(2), y: height - 4 }, day.slice(8, 10)),
      );
    }
  });
  if (max > 0) {
    const peak = values.find((v) => Number(v) === max);
    svg.append(svgEl("text", { x: left, y: 10 }, `max ${peak} ${unit}`.trim()));
  }
  $("#trend-chart").replaceChildren(svg);

  const body = $("tbody", testid("trend-table"));
  body.replaceChildren(
    ...days.map((day, i) =>
      el(
        "tr",
        { "data-testid": "trend-row", "data-day": day },
        el("th", { scope: "row" }, day),
        cell(values[i], "trend-quantity"),
      ),
    ),
  );
}

function renderMeters(usage) {
  const body = $("tbody", testid("meters"));
  body.replaceChildren();
  const quotas = $("tbody", testid("quotas"));
  quotas.replaceChildren();
  for (const meter of usage.meters) {
    const label = meter.unit ? `${meter.meter} (${meter.unit})` : meter.meter;
    const row = el("tr", { "data-testid": "meter-row", "data-meter": meter.meter });
    row.append(
      el("th", { scope: "row" }, label),
      cell(meter.quantity, "meter-quantity"),
      cell(meter.today, "meter-today"),
      cell(meter.included, "meter-included"),
      cell(meter.cost, "meter-cost"),
    );
    body.append(row);
    for (const [period, name] of [
      ["perDay", "day"],
      ["perMonth", "month"],
    ]) {
      const quota = meter.quotas[period];
      if (!quota) {
        continue;
      }
      const used = Number(quota.limit) > 0 ? Number(quota.used) / Number(quota.limit) : 1;
      const resets = el("td", {}, timeEl(quota.resetsAt));
      resets.dataset.testid = "quota-resets";
      const line = el("tr", {
        "data-testid": "quota",
        "data-meter": meter.meter,
        "data-period": period,
      });
      line.append(
        el("th", { scope: "row" }, label),
        el("td", {}, `per ${name}${quota.exhausted ? " (used up)" : ""}`),
        cell(quota.limit, "quota-limit"),
        cell(quota.used, "quota-used"),
        cell(quota.remaining, "quota-remaining"),
        resets,
      );
      line.children[1].append(thinBar(used));
      quotas.append(line);
    }
  }
  $("#no-quotas").hidden = quotas.children.length > 0;
}

function renderRateLimits(pricing) {
  const list = testid("rate-limits");
  list.replaceChildren();
  const rate = pricing.current?.limits?.rate ?? {};
  for (const [field, name] of RATE_PERIODS) {
    if (rate[field] === undefined || rate[field] === null) {
      continue;
    }
    const value = el("span", { "data-testid": "rate-limit-value" }, String(rate[field]));
    list.append(
      el("li", { "data-testid": "rate-limit", "data-period": field }, value, ` requests per ${name}`),
    );
  }
  $("#no-rate-limits").hidden = list.children.length > 0;
}

function renderAlerts(alerts) {
  const list = testid("alerts");
  list.replaceChildren();
  for (const alert of alerts) {
    const what =
      alert.trigger.kind === "threshold"
        ? `${alert.trigger.threshold} % of the budget reached`
        : "forecast to exceed the budget";
    const text = el(
      "div",
      {},
      el("span", { class: `severity ${alert.severity}`, "data-testid": "alert-severity" }, alert.severity),
      " ",
      el("strong", {}, what),
      el(
        "div",
        { class: "note" },
        "spent ",
        el("span", { "data-testid": "alert-spent" }, alert.spent),
        ` ${alert.currency} of `,
        el("span", { "data-testid": "alert-budget" }, alert.budget),
        ` (`,
        el("span", { "data-testid": "alert-percent" }, alert.percentUsed),
        ` %) · raised `,
        timeEl(alert.createdAt, "alert-created"),
      ),
    );
    const item = el("li", { "data-testid": "alert", "data-id": alert.id }, text);
    if (alert.acknowledgedAt) {
      item.append(
        el("span", { class: "note", "data-testid": "acknowledged" }, "acknowledged ", timeEl(alert.acknowledgedAt)),
      );
    } else {
      const button = el("button", { type: "button", "data-testid": "ack" }, "Acknowledge");
      button.addEventListener("click", () => acknowledge(alert.id, button));
      item.append(button);
    }
    list.append(item);
  }
  $("#no-alerts").hidden = alerts.length > 0;
}

async function acknowledge(id, button) {
  button.disabled = true;
  try {
    await api(`alerts/${encodeURIComponent(id)}/ack`, { method: "POST" });
    const alerts = await api(`alerts?month=${encodeURIComponent(page.usage.period.key)}`);
    renderAlerts(alerts.alerts);
  } catch (error) {
    button.disabled = false;
    showError(describe(error));
  }
}

function renderEstimator(usage, forecast) {
  const inputs = $("#estimate-inputs");
  const typed = new Map(
    [...inputs.querySelectorAll("input")].map((input) => [input.dataset.meter, input.value]),
  );
  inputs.replaceChildren();
  const projected = new Map(forecast.meters.map((m) => [m.meter, m.projected]));
  for (const meter of usage.meters) {
    const id = `estimate-${meter.meter}`;
    const input = el("input", {
      id,
      type: "text",
      inputmode: "decimal",
      "data-meter": meter.meter,
      "data-testid": "estimate-input",
    });
    input.value = typed.get(meter.meter) ?? projected.get(meter.meter) ?? meter.quantity;
    const label = el("label", { for: id }, meter.unit ? `${meter.meter} (${meter.unit})` : meter.meter);
    inputs.append(label, input);
  }
}

async function estimate() {
  const button = testid("estimate-submit");
  const usage = {};
  for (const input of $("#estimate-inputs").querySelectorAll("input")) {
    if (input.value.trim() !== "") {
      usage[input.dataset.meter] = input.value.trim();
    }
  }
  button.disabled = true;
  $("#estimate-error").hidden = true;
  $("#estimate-form").dataset.state = "pending";
  try {
    const preview = await api("estimate", { method: "POST", body: JSON.stringify({ usage }) });
    const body = $("tbody", testid("estimate-lines"));
    body.replaceChildren(
      ...preview.lines.map((line) =>
        el(
          "tr",
          { "data-testid": "estimate-line", "data-kind": line.kind, ...(line.meter ? { "data-meter": line.meter } : {}) },
          el("th", { scope: "row" }, line.description),
          cell(line.amount, "estimate-amount"),
        ),
      ),
    );
    testid("estimate-total").textContent = preview.total;
    testid("estimate-currency").textContent = preview.currency;
    $("#estimate-result").hidden = false;
    $("#estimate-form").dataset.state = "done";
  } catch (error) {
    $("#estimate-result").hidden = true;
    $("#estimate-error").textContent =
      error instanceof ApiFailure && error.status === 400 ? error.message : describe(error);
    $("#estimate-error").hidden = false;
    $("#estimate-form").dataset.state = "failed";
  } finally {
    button.disabled = false;
  }
}

// Small DOM helpers.

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    node.setAttribute(name, value);
  }
  node.append(...children);
  return node;
}

function svgEl(tag, attributes = {}, text) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [name, value] of Object.entries(attributes)) {
    node.setAttribute(name, String(value));
  }
  if (text !== undefined) {
    node.textContent = text;
  }
  return node;
}

/** A numeric table cell: the API's string, or an empty cell for "none". */
function cell(value, id) {
  const td = el("td", { class: "num" });
  if (value !== undefined && value !== null) {
    td.append(el("span", { "data-testid": id }, String(value)));
  }
  return td;
}

function thinBar(fraction) {
  const bar = el("div", { class: "bar thin", "aria-hidden": "true" }, el("div", { class: "fill" }));
  const clamped = Math.min(1, Math.max(0, fraction));
  bar.firstChild.style.width = `${(clamped * 100).toFixed(1)}%`;
  bar.classList.toggle("warn", fraction >= 0.8 && fraction < 1);
  bar.classList.toggle("over", fraction >= 1);
  return bar;
}

/** An RFC 3339 UTC time as written by the API, shown as "YYYY-MM-DD HH:MM UTC". */
function timeEl(value, id) {
  const node = el("time");
  setTime(node, value);
  if (id) {
    node.dataset.testid = id;
  }
  return node;
}

function setTime(node, value) {
  node.setAttribute("datetime", value);
  node.textContent = `${value.slice(0, 10)} ${value.slice(11, 16)} UTC`;
}

function period(window) {
  return `month ${window.key}`;
}

/** Every UTC day from `start`'s through `until`'s, as "YYYY-MM-DD". */
function daysOf(start, until) {
  const days = [];
  const day = new Date(`${start.slice(0, 10)}T00:00:00Z`);
  const last = until.slice(0, 10);
  while (days.length < 31) {
    const text = day.toISOString().slice(0, 10);
    days.push(text);
    if (text >= last) {
      break;
    }
    day.setUTCDate(day.getUTCDate() + 1);
  }
  return days;
}
