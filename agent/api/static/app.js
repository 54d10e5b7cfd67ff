// The driver's page: polls the agent's local API and draws the road network and the route
// as SVG. No external tiles, fonts or scripts: everything comes from the agent on loopback.
"use strict";

const POLL_MS = 1000;
const NETWORK_RADIUS_M = 800;
const REFETCH_M = 250;
const SVG_NS = "http://www.w3.org/2000/svg";
const ORIENTATION_KEY = "nagashi.orientation";
// the banner's words (agent/instruction.py words the full sentences the same way)
const WORDS = {
  en: {
    "straight": "Continue straight", "slight right": "Bear right", "right": "Turn right",
    "sharp right": "Sharp right", "slight left": "Bear left", "left": "Turn left",
    "sharp left": "Sharp left", "uturn": "U-turn", "continue": "Continue",
    "northUp": "North up", "headingUp": "Heading up", "noAgent": "agent not answering",
    "distanceSuffix": "",
  },
  ja: {
    "straight": "直進", "slight right": "右方向", "right": "右折", "sharp right": "右へ鋭角に曲がる",
    "slight left": "左方向", "left": "左折", "sharp left": "左へ鋭角に曲がる", "uturn": "Uターン",
    "continue": "道なりに直進", "northUp": "北が上", "headingUp": "進行方向が上",
    "noAgent": "エージェントが応答しません", "distanceSuffix": "先",
  },
};
// the arrow's direction per manoeuvre, degrees clockwise from straight ahead
const TURN_DEG = {
  "straight": 0, "slight right": 45, "right": 90, "sharp right": 135,
  "slight left": -45, "left": -90, "sharp left": -135,
};

let network = null;      // GeoJSON FeatureCollection of roads around networkCenter
let networkCenter = null;
let fetchingNetwork = false;
let last = null;
let heldHeading = null;  // the last heading the GPS gave: kept while the cab stands still
let orientation = initialOrientation();

function initialOrientation() {
  const asked = new URLSearchParams(location.search).get("orientation");
  try {
    if (asked === "north-up" || asked === "heading-up") localStorage.setItem(ORIENTATION_KEY, asked);
    return localStorage.getItem(ORIENTATION_KEY) === "heading-up" ? "heading-up" : "north-up";
  } catch (e) {
    return asked === "heading-up" ? "heading-up" : "north-up";
  }
}

function words(ins) { return WORDS[ins && ins.locale === "ja" ? "ja" : "en"]; }

function metres(a, b) {
  const kx = 111320 * Math.cos(a[1] * Math.PI / 180);
  return Math.hypot((a[0] - b[0]) * kx, (a[1] - b[1]) * 110540);
}

function bearing(a, b) {  // degrees clockwise from north, a -> b (lon, lat)
  const kx = Math.cos(a[1] * Math.PI / 180);
  return (Math.atan2((b[0] - a[0]) * kx, b[1] - a[1]) * 180 / Math.PI + 360) % 360;
}

// the cab's heading: the GPS's, else the last good one, else the route's direction
function headingOf(ins) {
  if (typeof ins.heading_deg === "number" && isFinite(ins.heading_deg)) {
    heldHeading = ins.heading_deg;
    return heldHeading;
  }
  if (heldHeading !== null) return heldHeading;
  const c = ins.geometry ? ins.geometry.coordinates : [];
  for (let i = 1; i < c.length; i++) if (metres(c[0], c[i]) > 3) return bearing(c[0], c[i]);
  return null;
}

function projector(center, width, height, rotDeg, cy) {
  const kx = 111320 * Math.cos(center[1] * Math.PI / 180);
  const ky = 110540;
  const scale = Math.min(width, height) / (2 * NETWORK_RADIUS_M * 0.75); // px per metre
  const r = rotDeg * Math.PI / 180, cos = Math.cos(r), sin = Math.sin(r);
  const project = (p) => {
    const x = (p[0] - center[0]) * kx * scale, y = -(p[1] - center[1]) * ky * scale;
    return [width / 2 + x * cos - y * sin, cy + x * sin + y * cos];
  };
  project.scale = scale;
  return project;
}

function pathData(coords, project) {
  return coords.map((c, i) => {
    const [x, y] = project(c);
    return (i ? "L" : "M") + x.toFixed(1) + " " + y.toFixed(1);
  }).join("");
}

function el(name, attrs, text) {
  const e = document.createElementNS(SVG_NS, name);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = text;
  return e;
}

function drawLabels(g, labels, project, rotDeg, w, h, cab) {
  const size = Math.max(15, Math.round(Math.min(w, h) * 0.026));
  const placed = [];
  const cabXY = cab ? project(cab) : null;
  // the next cross street first: it is the one the driver looks for
  const ordered = (labels || []).filter((l) => l.kind === "cross")
    .concat((labels || []).filter((l) => l.kind !== "cross"));
  for (const lab of ordered) {
    let [x, y] = project([lab.lon, lab.lat]);
    const along = (lab.bearing_deg + rotDeg) * Math.PI / 180;
    const ux = Math.sin(along), uy = -Math.cos(along);  // the street's direction on screen
    const half = lab.text.length * size * 0.3 + 34;  // half the text, and the cab's size
    const off = cabXY ? (x - cabXY[0]) * ux + (y - cabXY[1]) * uy : 0;
    const side = cabXY ? Math.abs((x - cabXY[0]) * uy - (y - cabXY[1]) * ux) : Infinity;
    if (side < size && Math.abs(off) < half) {  // never under the cab: slide along the street
      const by = (off >= 0 ? 1 : -1) * half - off;
      x += ux * by;
      y += uy * by;
    }
    if (x < 0 || y < 0 || x > w || y > h) continue;
    if (placed.some(([px, py]) => Math.hypot(px - x, py - y) < size * 3)) continue;
    placed.push([x, y]);
    let a = (lab.bearing_deg + rotDeg) - 90;  // the text runs along the street, never upside down
    a = ((a % 360) + 360) % 360;
    if (a > 90 && a <= 270) a -= 180;
    else if (a > 270) a -= 360;
    g.appendChild(el("text", {
      x: x.toFixed(1), y: y.toFixed(1), class: "label " + lab.kind, "font-size": size,
      transform: `rotate(${a.toFixed(1)} ${x.toFixed(1)} ${y.toFixed(1)})`,
    }, lab.text));
  }
}

function drawScale(g, pxPerM, h) {
  const target = 140 / pxPerM;  // about 140 px
  const nice = [25, 50, 100, 200, 250, 500, 1000, 2000].filter((m) => m <= target).pop() || 25;
  const len = nice * pxPerM, x0 = 16, y0 = h - 46;
  g.appendChild(el("path", { d: `M${x0} ${y0 - 8}L${x0} ${y0}L${x0 + len} ${y0}L${x0 + len} ${y0 - 8}` }));
  g.appendChild(el("text", { x: x0 + 6, y: y0 - 8 }, nice >= 1000 ? nice / 1000 + " km" : nice + " m"));
}

function draw(ins) {
  const svg = document.getElementById("svg");
  const box = svg.getBoundingClientRect();
  const w = Math.max(box.width, 1), h = Math.max(box.height, 1);
  svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
  const coords = ins.geometry ? ins.geometry.coordinates : [];
  const center = ins.position || (coords.length ? coords[0] : networkCenter);
  const groups = ["network", "route", "labels", "cab", "scale"].map((id) => {
    const g = document.getElementById(id);
    g.replaceChildren();
    return g;
  });
  const [gNet, gRoute, gLabels, gCab, gScale] = groups;
  if (!center) return;
  const heading = headingOf(ins);
  const headingUp = orientation === "heading-up" && heading !== null;
  const rot = headingUp ? -heading : 0;
  const project = projector(center, w, h, rot, headingUp ? h * 0.68 : h / 2);
  if (network) {
    for (const f of network.features) {
      const cls = f.properties.cruise_forbidden ? "forbidden" : "";
      gNet.appendChild(el("path", { d: pathData(f.geometry.coordinates, project), class: cls,
        "stroke-width": 3 }));
    }
  }
  if (coords.length >= 2) {
    const cls = ins.kind === "route" ? "route" : "follow";
    gRoute.appendChild(el("path", { d: pathData(coords, project), class: cls,
      "stroke-width": ins.kind === "route" ? 12 : 9 }));
  }
  drawLabels(gLabels, ins.labels, project, rot, w, h, ins.position);
  if (ins.position) {
    const [x, y] = project(ins.position);
    gCab.appendChild(el("circle", { cx: x.toFixed(1), cy: y.toFixed(1), r: 30, class: "halo" }));
    if (heading === null) {  // no direction known at all: a dot, not a guess
      gCab.appendChild(el("circle", { cx: x.toFixed(1), cy: y.toFixed(1), r: 13, class: "body" }));
    } else {  // no notch: a notched tail reads as a second arrowhead at a glance
      gCab.appendChild(el("path", {
        d: "M0 -36L13 16L-13 16Z", class: "body",  // a narrow triangle: one sharp tip
        transform: `translate(${x.toFixed(1)} ${y.toFixed(1)}) rotate(${(heading + rot).toFixed(1)})`,
      }));
    }
  }
  drawScale(gScale, project.scale, h);
  document.documentElement.dataset.orientation = headingUp ? "heading-up" : "north-up";
  document.documentElement.dataset.cabHeading = heading === null ? "" : heading.toFixed(1);
}

function arrowSvg(kind, modifier) {
  if (kind === "fallback") {
    return '<path class="stroke" d="M50 10L92 86L8 86Z"/>' +
      '<path class="stroke" d="M50 38L50 60"/><circle class="head" cx="50" cy="74" r="6.5"/>';
  }
  if (kind !== "route") return "";
  if (modifier === "uturn") {
    return '<path class="stroke" d="M66 92L66 40A16 16 0 0 0 34 40L34 60"/>' +
      '<path class="head" d="M18 56L50 56L34 80Z"/>';
  }
  const t = (TURN_DEG[modifier] || 0) * Math.PI / 180;
  const sx = Math.sin(t), cy = -Math.cos(t);
  const L = modifier === "straight" ? 0 : 30;
  const bendY = modifier === "straight" ? 34 : 54;
  const ox = 50 - (L * sx) / 2;  // keep the drawing centred
  const ex = ox + L * sx, ey = bendY + L * cy;
  const tip = [ex + 20 * sx, ey + 20 * cy];
  const b1 = [ex - 16 * cy, ey + 16 * sx], b2 = [ex + 16 * cy, ey - 16 * sx];
  const f = (p) => p[0].toFixed(1) + " " + p[1].toFixed(1);
  return `<path class="stroke" d="M${ox} 94L${ox} ${bendY}L${f([ex, ey])}"/>` +
    `<path class="head" d="M${f(tip)}L${f(b1)}L${f(b2)}Z"/>`;
}

// shrink an element's type until it fits its fixed box (then CSS cuts it with an ellipsis);
// a one-line element is fitted to its width only (a glyph may reach past its line box)
function fit(node, maxPx, minPx, oneLine) {
  let size = maxPx;
  node.style.fontSize = size + "px";
  while (size > minPx && (node.scrollWidth > node.clientWidth + 1 ||
                          (!oneLine && node.scrollHeight > node.clientHeight + 1))) {
    size = Math.max(minPx, size * 0.92);
    node.style.fontSize = size + "px";
  }
}

function fitBanner() {
  const bh = document.getElementById("banner").getBoundingClientRect().height;
  fit(document.getElementById("street"), bh * 0.22, bh * 0.13, true);
  fit(document.getElementById("message"), bh * 0.26, bh * 0.12, false);
  fit(document.getElementById("action"), bh * 0.27, bh * 0.13, true);
}

function formatDistance(d, suffix) {
  let s;
  if (d < 100) s = Math.max(10, Math.round(d / 10) * 10) + " m";
  else if (d < 1000) s = Math.round(d / 50) * 50 + " m";
  else s = (d / 1000).toFixed(1) + " km";
  return s + suffix;
}

function showBanner(ins) {
  const banner = document.getElementById("banner");
  const wd = words(ins);
  banner.className = "banner " + ins.kind;
  banner.dataset.kind = ins.kind;
  document.documentElement.lang = ins.locale || "en";
  const m = ins.kind === "route" ? ins.maneuver : null;
  document.getElementById("arrow").innerHTML = arrowSvg(ins.kind, m ? m.modifier : "straight");
  document.getElementById("distance").textContent =
    m ? formatDistance(m.distance_m, wd.distanceSuffix) : "";
  document.getElementById("action").textContent =
    m ? (m.type === "turn" ? (wd[m.modifier] || m.modifier) : wd.continue) : "";
  document.getElementById("street").textContent = m ? (m.street || "") : "";
  document.getElementById("message").textContent = ins.kind === "route" ? "" : ins.message;
  document.getElementById("reasons").textContent = (ins.reason_codes || []).join(" · ");
  document.getElementById("orientation").textContent =
    orientation === "heading-up" ? "▲ " + wd.headingUp : "N " + wd.northUp;
  fitBanner();
}

function clock(ins) {
  const opts = { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false,
    timeZoneName: "short" };
  try {
    if (ins.timezone) opts.timeZone = ins.timezone;
    return new Intl.DateTimeFormat(ins.locale === "ja" ? "ja-JP" : "en-US", opts)
      .format(new Date(ins.time_s * 1000));
  } catch (e) {  // an unknown zone: say it is UTC rather than pretend
    return new Date(ins.time_s * 1000).toISOString().slice(11, 19) + " UTC";
  }
}

async function maybeFetchNetwork(center) {
  if (!center || fetchingNetwork) return;
  if (networkCenter && metres(center, networkCenter) < REFETCH_M) return;
  fetchingNetwork = true;
  try {
    const url = `/v1/network?lon=${center[0]}&lat=${center[1]}&radius_m=${NETWORK_RADIUS_M}`;
    const r = await fetch(url, { cache: "no-store" });
    if (r.ok) { network = await r.json(); networkCenter = center; }
  } catch (e) {
    // the agent is restarting: keep the old network
  } finally {
    fetchingNetwork = false;
  }
}

async function tick() {
  try {
    const r = await fetch("/v1/instruction", { cache: "no-store" });
    if (!r.ok) throw new Error("HTTP " + r.status);
    const ins = await r.json();
    last = ins;
    const coords = ins.geometry ? ins.geometry.coordinates : [];
    await maybeFetchNetwork(ins.position || (coords.length ? coords[0] : null));
    showBanner(ins);
    draw(ins);
    document.getElementById("status").textContent = clock(ins);
  } catch (e) {
    document.getElementById("status").textContent = words(last).noAgent;
  }
}

document.getElementById("orientation").addEventListener("click", () => {
  orientation = orientation === "heading-up" ? "north-up" : "heading-up";
  try { localStorage.setItem(ORIENTATION_KEY, orientation); } catch (e) { /* private mode */ }
  if (last) { showBanner(last); draw(last); }
});
window.addEventListener("resize", () => { if (last) { fitBanner(); draw(last); } });
document.fonts.ready.then(() => { if (last) fitBanner(); });
tick();
setInterval(tick, POLL_MS);
