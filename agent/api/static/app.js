// The driver's page: polls the agent's local API and draws the road network and the route
// as SVG. No external tiles, fonts or scripts: everything comes from the agent on loopback.
"use strict";

const POLL_MS = 1000;
const NETWORK_RADIUS_M = 800;
const REFETCH_M = 250;
const ARROWS = {
  "straight": "↑", "slight right": "↗", "right": "→", "sharp right": "↘",
  "slight left": "↖", "left": "←", "sharp left": "↙", "uturn": "↶",
};

let network = null;      // GeoJSON FeatureCollection of roads around networkCenter
let networkCenter = null;
let fetchingNetwork = false;
let last = null;

function metres(a, b) {
  const kx = 111320 * Math.cos(a[1] * Math.PI / 180);
  return Math.hypot((a[0] - b[0]) * kx, (a[1] - b[1]) * 110540);
}

function projector(center, width, height) {
  const kx = 111320 * Math.cos(center[1] * Math.PI / 180);
  const ky = 110540;
  const scale = Math.min(width, height) / (2 * NETWORK_RADIUS_M * 0.75); // px per metre
  return (p) => [
    width / 2 + (p[0] - center[0]) * kx * scale,
    height / 2 - (p[1] - center[1]) * ky * scale,
  ];
}

function pathData(coords, project) {
  return coords.map((c, i) => {
    const [x, y] = project(c);
    return (i ? "L" : "M") + x.toFixed(1) + " " + y.toFixed(1);
  }).join("");
}

function svgPath(d, cls, width) {
  const p = document.createElementNS("http://www.w3.org/2000/svg", "path");
  p.setAttribute("d", d);
  if (cls) p.setAttribute("class", cls);
  p.setAttribute("stroke-width", String(width));
  return p;
}

function draw(ins) {
  const svg = document.getElementById("svg");
  const box = svg.getBoundingClientRect();
  const w = Math.max(box.width, 1), h = Math.max(box.height, 1);
  svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
  const coords = ins.geometry ? ins.geometry.coordinates : [];
  const center = ins.position || (coords.length ? coords[0] : networkCenter);
  const gNet = document.getElementById("network");
  const gRoute = document.getElementById("route");
  const gCab = document.getElementById("cab");
  gNet.replaceChildren(); gRoute.replaceChildren(); gCab.replaceChildren();
  if (!center) return;
  const project = projector(center, w, h);
  if (network) {
    for (const f of network.features) {
      const cls = f.properties.cruise_forbidden ? "forbidden" : "";
      gNet.appendChild(svgPath(pathData(f.geometry.coordinates, project), cls, 3));
    }
  }
  if (coords.length >= 2) {
    const cls = ins.kind === "route" ? "route" : "follow";
    gRoute.appendChild(svgPath(pathData(coords, project), cls, ins.kind === "route" ? 12 : 9));
  }
  if (ins.position) {
    const [x, y] = project(ins.position);
    const a = (ins.heading_deg || 0) * Math.PI / 180;
    const pt = (r, t) => [x + r * Math.sin(a + t), y - r * Math.cos(a + t)];
    const tri = [pt(30, 0), pt(24, 2.5), pt(9, Math.PI), pt(24, -2.5)];
    const cab = svgPath("M" + tri.map((p) => p[0].toFixed(1) + " " + p[1].toFixed(1))
      .join("L") + "Z", "", 3);
    gCab.appendChild(cab);
  }
}

function showBanner(ins) {
  const banner = document.getElementById("banner");
  banner.className = "banner " + ins.kind;
  banner.dataset.kind = ins.kind;
  document.documentElement.lang = ins.locale || "en";
  const m = ins.maneuver;
  document.getElementById("arrow").textContent =
    ins.kind === "route" && m ? (ARROWS[m.modifier] || "↑") : (ins.kind === "fallback" ? "⚠" : "");
  document.getElementById("distance").textContent =
    ins.kind === "route" && m ? formatDistance(m.distance_m) : "";
  document.getElementById("text").textContent =
    ins.kind === "route" ? (m ? m.text : "") : ins.message;
  document.getElementById("reasons").textContent = (ins.reason_codes || []).join(" · ");
}

function formatDistance(d) {
  if (d < 100) return Math.max(10, Math.round(d / 10) * 10) + " m";
  if (d < 1000) return Math.round(d / 50) * 50 + " m";
  return (d / 1000).toFixed(1) + " km";
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
    document.getElementById("status").textContent =
      new Date(ins.time_s * 1000).toISOString().slice(11, 19) + " UTC";
  } catch (e) {
    document.getElementById("status").textContent = "agent not answering";
  }
}

window.addEventListener("resize", () => { if (last) draw(last); });
tick();
setInterval(tick, POLL_MS);
