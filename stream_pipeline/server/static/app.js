// The page at "/": send this browser's camera (WHIP) and watch it back annotated, or watch a
// running stream (WHEP). Plain JavaScript, no build step, nothing loaded from elsewhere.
"use strict";

const $ = (id) => document.getElementById(id);
// What the page shows, also read by the tests (framesDecoded from getStats, the last summary).
const state = { sessions: [], pcs: [], framesDecoded: 0, fps: 0, last: null, classes: [], error: null };
window.spState = state;

const tokenInput = $("token");
tokenInput.value = localStorage.getItem("sp-token") || "";
tokenInput.addEventListener("change", () => localStorage.setItem("sp-token", tokenInput.value));

function headers(extra) {
  const h = Object.assign({}, extra || {});
  if (tokenInput.value) h.Authorization = "Bearer " + tokenInput.value;
  return h;
}

function setStatus(text, kind) {
  const el = $("status");
  el.textContent = text;
  el.className = "status " + (kind || "");
}

// Every candidate goes in the offer (the server does not take trickle ICE): wait for gathering.
function gathered(pc) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const check = () => {
      if (pc.iceGatheringState === "complete") {
        pc.removeEventListener("icegatheringstatechange", check);
        resolve();
      }
    };
    pc.addEventListener("icegatheringstatechange", check);
    setTimeout(resolve, 3000); // some candidates are better than none
  });
}

async function negotiate(pc, path) {
  await pc.setLocalDescription(await pc.createOffer());
  await gathered(pc);
  const resp = await fetch(path, {
    method: "POST",
    headers: headers({ "Content-Type": "application/sdp" }),
    body: pc.localDescription.sdp,
  });
  const body = await resp.text();
  if (resp.status !== 201) {
    let message = body;
    try { message = JSON.parse(body).error; } catch (e) { /* not JSON */ }
    throw new Error(`${path}: ${resp.status} ${message}`);
  }
  state.sessions.push(resp.headers.get("Location"));
  await pc.setRemoteDescription({ type: "answer", sdp: body });
}

function drawLegend() {
  const present = new Map();
  for (const c of (state.last && state.last.classes) || []) present.set(c.id, c);
  const ul = $("legend");
  ul.replaceChildren(...state.classes.map((c) => {
    const li = document.createElement("li");
    const p = present.get(c.id);
    li.className = p ? "" : "absent";
    const sw = document.createElement("span");
    sw.className = "swatch";
    sw.style.background = c.color;
    const name = document.createElement("span");
    name.textContent = c.name;
    const share = document.createElement("span");
    share.className = "share";
    share.textContent = p ? (100 * p.share).toFixed(1) + "%" : "";
    li.append(sw, name, share);
    return li;
  }));
}

function onSummary(event) {
  const msg = JSON.parse(event.data);
  if (msg.type === "classes") {
    state.classes = msg.classes;
  } else if (msg.type === "frame") {
    state.last = msg;
    // Pipeline latency (arrival → result) plus the time since the frame arrived at the server,
    // on this machine's clock: meaningful when browser and server share a clock (loopback).
    const age = Date.now() - msg.captured_at * 1000;
    $("latency").textContent = `${msg.latency_ms.toFixed(0)} ms pipeline · ${age.toFixed(0)} ms since capture`;
    $("frame").textContent = String(msg.frame_id);
    $("size").textContent = `${msg.width}×${msg.height}`;
  }
  drawLegend();
}

async function watch(stream) {
  const pc = new RTCPeerConnection();
  state.pcs.push(pc);
  const transceiver = pc.addTransceiver("video", { direction: "recvonly" });
  // Stay at the live edge: no extra buffering in the receiver (Chrome's jitterBufferTarget, ms).
  if ("jitterBufferTarget" in transceiver.receiver) transceiver.receiver.jitterBufferTarget = 0;
  else transceiver.receiver.playoutDelayHint = 0;
  const channel = pc.createDataChannel("summary");
  channel.onmessage = onSummary;
  pc.ontrack = (event) => { $("remote").srcObject = new MediaStream([event.track]); };
  pc.onconnectionstatechange = () => {
    if (pc.connectionState === "connected") setStatus(`live: ${stream}`, "live");
    if (pc.connectionState === "failed") setStatus(`connection to ${stream} failed`, "error");
  };
  await negotiate(pc, `/whep/${encodeURIComponent(stream)}`);
}

async function publishCamera() {
  const media = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 360 }, audio: false });
  const local = $("local");
  local.srcObject = media;
  local.hidden = false;
  const pc = new RTCPeerConnection();
  state.pcs.push(pc);
  for (const track of media.getVideoTracks()) pc.addTransceiver(track, { direction: "sendonly" });
  const stream = "browser-" + Math.random().toString(36).slice(2, 8);
  await negotiate(pc, `/whip/${stream}`);
  await waitFor(() => pc.connectionState === "connected", 10000, "the camera to connect");
  // The server makes the source once the track arrives; watch it back annotated.
  await waitFor(async () => (await listStreams()).some((s) => s.id === stream), 10000, "the stream");
  await watch(stream);
  return stream;
}

async function waitFor(cond, ms, what) {
  const until = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > until) throw new Error("timed out waiting for " + what);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function listStreams() {
  const resp = await fetch("/streams", { headers: headers() });
  if (!resp.ok) throw new Error(`/streams: ${resp.status} ${(await resp.json()).error}`);
  const body = await resp.json();
  state.classes = body.classes;
  drawLegend();
  return body.streams;
}

async function refresh() {
  const select = $("streams");
  const streams = await listStreams();
  const keep = select.value;
  select.replaceChildren(...(streams.length ? streams : [{ id: "" }]).map((s) => {
    const o = document.createElement("option");
    o.value = s.id;
    o.textContent = s.id ? `${s.id} (${s.state}, ${s.fps} fps)` : "(no stream running)";
    return o;
  }));
  if (keep && streams.some((s) => s.id === keep)) select.value = keep;
}

async function stop() {
  for (const location of state.sessions.splice(0)) {
    try { await fetch(location, { method: "DELETE", headers: headers() }); } catch (e) { /* gone */ }
  }
  for (const pc of state.pcs.splice(0)) pc.close();
  const local = $("local");
  if (local.srcObject) local.srcObject.getTracks().forEach((t) => t.stop());
  local.srcObject = null;
  local.hidden = true;
  $("remote").srcObject = null;
  setStatus("idle");
  $("stop").disabled = true;
}

function guarded(action) {
  return async () => {
    try {
      await stop();
      $("stop").disabled = false;
      setStatus("connecting…");
      await action();
    } catch (err) {
      state.error = String(err.message || err);
      setStatus(state.error, "error");
    }
  };
}

$("camera").addEventListener("click", guarded(publishCamera));
$("watch").addEventListener("click", guarded(async () => {
  const stream = $("streams").value;
  if (!stream) throw new Error("no stream chosen");
  await watch(stream);
}));
$("refresh").addEventListener("click", () => refresh().catch((e) => setStatus(String(e.message), "error")));
$("stop").addEventListener("click", stop);
window.addEventListener("pagehide", () => { for (const pc of state.pcs) pc.close(); });

// fps: frames decoded per second, from the receiver's statistics.
let previous = null;
setInterval(async () => {
  const pc = state.pcs[state.pcs.length - 1];
  if (!pc) return;
  const stats = await pc.getStats();
  stats.forEach((r) => {
    if (r.type !== "inbound-rtp" || r.kind !== "video") return;
    if (previous && r.timestamp > previous.timestamp) {
      state.fps = (1000 * (r.framesDecoded - previous.framesDecoded)) / (r.timestamp - previous.timestamp);
      $("fps").textContent = state.fps.toFixed(1);
    }
    state.framesDecoded = r.framesDecoded;
    previous = { timestamp: r.timestamp, framesDecoded: r.framesDecoded };
  });
}, 1000);

refresh().catch((e) => setStatus(String(e.message), "error"));
