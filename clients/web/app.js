// The browser page (docs/page.md): microphone -> WebRTC offer on /ws -> the avatar, zoomed onto its
// face, with the session's state in words, live figures and avatar choice (library.js: the avatar
// list and photo upload, loaded before this file).
"use strict";
const $ = (id) => document.getElementById(id);
const TOKEN = new URLSearchParams(location.search).get("token");
const FACE_MARGIN = 1.25; // the zoomed view: the server's face box (chin to hair) and a little room
const BADGE_MS = 1500;
const CLOSE_WORDS = {
  1000: "the session closed", 1001: "the server is shutting down",
  1006: "the connection to the server was lost", 1008: "the server refused the session",
  1009: "a message was too large for the server", 1011: "the server hit an internal error",
  1013: "the server is full; try again in a moment",
};
const ERROR_WORDS = {
  session_cap: "the server is full (every session is in use); try again in a moment",
  unknown_avatar: "the server does not have that avatar any more; pick another",
  internal_error: "the server hit an internal error (it is in the server's log); start again",
  rate_limited: "the page sent too many messages", bad_message: "the server could not use this browser's offer",
  unauthorized: "this server needs a token",
};

const page = {
  state: "idle", call: null, mic: null, audio: null, meterTimer: 0, figTimer: 0,
  faceBox: null, width: 0, height: 0, fullFrame: false, avatars: [], upload: null, held: false, needsToken: false,
};

// ---- words on screen ---------------------------------------------------------------------------
function log(text) {
  const li = document.createElement("li");
  const time = document.createElement("time");
  time.textContent = new Date().toLocaleTimeString();
  li.append(time, text);
  const list = $("log");
  list.append(li);
  while (list.children.length > 200) list.firstChild.remove();
  list.scrollTop = list.scrollHeight;
}

const COVER = { idle: "Press Start and allow the microphone.", mic: "Waiting for the microphone…" };

function setState(state, text) {
  page.state = state;
  document.body.dataset.state = state;
  $("state-text").textContent = text;
  $("cover-text").textContent = state === "ended" ? `${text} Press Start to begin again.` : (COVER[state] || text);
  const active = state === "mic" || state === "connecting" || state === "live";
  $("start").disabled = active;
  $("start").textContent = state === "ended" ? "Start again" : "Start";
  $("stop").disabled = !active;
  $("interrupt").disabled = state !== "live";
}

function showBadge() {
  const b = $("badge");
  b.hidden = false;
  clearTimeout(showBadge.timer);
  showBadge.timer = setTimeout(() => { b.hidden = true; }, BADGE_MS);
}

function authHeaders() { return TOKEN ? { Authorization: `Bearer ${TOKEN}` } : {}; }
function withToken(path) {
  return TOKEN ? `${path}${path.includes("?") ? "&" : "?"}token=${encodeURIComponent(TOKEN)}` : path;
}
function tokenHint() {
  return `This server needs a token: open the page as ${location.origin}${location.pathname}?token=YOUR_TOKEN`;
}
function megabytes(n) { return `${(n / 1e6).toFixed(1)} MB`; }

// ---- one WebRTC session: a peer connection and its /ws socket -----------------------------------
function iceGatheringDone(pc) {
  // the server takes one offer with every candidate in it (no trickle ICE)
  return new Promise((resolve) => {
    if (pc.iceGatheringState === "complete") return resolve();
    pc.addEventListener("icegatheringstatechange", () => { if (pc.iceGatheringState === "complete") resolve(); });
    setTimeout(resolve, 3000); // use what there is after 3 s
  });
}

class Call {
  constructor(mic, avatar, onMessage, onEnd) {
    Object.assign(this, { mic, avatar, onMessage, onEnd, pc: null, ws: null, reason: null, closed: false });
    this.stream = new MediaStream();
  }

  async open(lowLatency) {
    const pc = this.pc = new RTCPeerConnection({ iceServers: [] });
    this.mic.getAudioTracks().forEach((t) => pc.addTrack(t, this.mic));
    pc.addTransceiver("video", { direction: "recvonly" });
    pc.ontrack = (ev) => this.stream.addTrack(ev.track);
    pc.onconnectionstatechange = () => {
      if (pc.connectionState === "connected") log("Media connected.");
      if (pc.connectionState === "failed") this.end("the media connection failed (a network or firewall problem)");
    };
    await pc.setLocalDescription(await pc.createOffer());
    await iceGatheringDone(pc);
    if (this.closed) return;
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const ws = this.ws = new WebSocket(withToken(`${scheme}://${location.host}/ws`));
    ws.onopen = () => this.send({ type: "offer", sdp: pc.localDescription.sdp,
      options: { avatar: this.avatar, low_latency: lowLatency, stats: true } });
    ws.onmessage = (ev) => {
      let msg;
      try { msg = JSON.parse(ev.data); } catch { return log("The server sent a message this page cannot read."); }
      if (msg.type === "answer") {
        pc.setRemoteDescription({ type: "answer", sdp: msg.sdp })
          .catch((err) => this.end(`the browser could not use the server's answer (${err.message})`));
      } else if (msg.type === "error") {
        this.reason = ERROR_WORDS[msg.code] || msg.message;
        log(`Server error: ${msg.message}`);
      } else if (msg.event === "session_ended") {
        this.reason = `the server ended the session: ${msg.reason}`;
      } else {
        this.onMessage(msg);
      }
    };
    ws.onclose = (ev) => {
      // refused before the upgrade (401 token, 403 origin, 429 too many connections): only 1006 shows
      const refused = ev.code === 1006 && !pc.remoteDescription && (page.needsToken ? ERROR_WORDS.unauthorized
        : "the server refused the connection or could not be reached");
      this.end(this.reason || refused || CLOSE_WORDS[ev.code] || `the connection closed (code ${ev.code})`);
    };
  }

  send(msg) { if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(msg)); }

  end(reason) { if (!this.closed) { this.close(); this.onEnd(this, reason); } }

  close() { // quietly: no onEnd (Stop and avatar switches say why themselves)
    if (this.closed) return;
    this.closed = true;
    this.send({ type: "close" });
    if (this.ws) { this.ws.onclose = null; this.ws.close(); }
    if (this.pc) this.pc.close();
  }
}

// ---- start, switch, stop ------------------------------------------------------------------------
async function start() {
  setState("mic", "Waiting for the microphone…");
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    return end("the microphone needs a secure page: open it over https:// (or on localhost)");
  }
  try {
    page.mic = await navigator.mediaDevices.getUserMedia({ audio: { echoCancellation: true, noiseSuppression: true } });
  } catch (err) {
    const why = { NotAllowedError: "the microphone permission was refused (allow it in the address bar)",
      NotFoundError: "no microphone was found", NotReadableError: "the microphone is in use by another program" };
    return end(why[err.name] || `the microphone could not be opened (${err.message})`);
  }
  if (page.state !== "mic") { // stopped while the browser asked
    page.mic.getTracks().forEach((t) => t.stop());
    page.mic = null;
    return;
  }
  startMeter(page.mic);
  connect();
}

async function connect() {
  const avatar = $("avatar").value || "default";
  setState("connecting", `Connecting (avatar ${avatar})…`);
  const onEnd = (c, reason) => { if (c === page.call) end(reason); };
  const call = page.call = new Call(page.mic, avatar, onServerMessage, onEnd);
  freezeLastFrame(); // an avatar switch: the old picture, dimmed, until the new one shows
  const v = $("video");
  v.srcObject = call.stream;
  const shown = () => { if (call === page.call) $("still").classList.remove("has-frame"); };
  if (v.requestVideoFrameCallback) v.requestVideoFrameCallback(shown);
  else v.addEventListener("playing", shown, { once: true });
  try {
    await call.open($("lowlat").checked);
  } catch (err) {
    if (call === page.call) end(`the browser could not start the connection (${err.message})`);
  }
}

function onServerMessage(msg) {
  if (msg.event === "session_started") {
    page.width = msg.width || $("video").videoWidth || 512;
    page.height = msg.height || $("video").videoHeight || 512;
    page.faceBox = Array.isArray(msg.face_box) && msg.face_box.length === 4 ? msg.face_box : null;
    $("video").dataset.faceBox = page.faceBox ? page.faceBox.join(" ") : "";
    document.body.dataset.avatar = page.call.avatar;
    applyZoom();
    $("video").play().catch(() => {}); // autoplay needs the Start click; a replaced stream aborts play()
    setState("live", `Live: avatar ${page.call.avatar}.`);
    log(`Live with avatar ${page.call.avatar}: ${msg.fps} fps, latency budget ${msg.latency_budget_ms} ms.`);
    startFigures();
  } else if (msg.event === "stats") {
    showStats(msg);
  } else if (msg.event === "interrupted") {
    showBadge();
    log("Interrupted: the avatar dropped what it had not said yet.");
  } else if (msg.type === "event") {
    log(`Server event: ${String(msg.event).replace(/_/g, " ")}.`);
  }
}

function switchAvatar() {
  const name = $("avatar").value;
  if (!page.call || page.state === "ended" || page.state === "mic") return;
  log(`Switching to avatar ${name}: a new session starts.`);
  page.call.close();
  stopFigures();
  connect();
}

function freezeLastFrame() { // the last picture stays, dimmed, under the "ended" words: no empty black box
  const v = $("video"), c = $("still");
  if (!v.videoWidth) return;
  Object.assign(c, { width: v.videoWidth, height: v.videoHeight }).getContext("2d").drawImage(v, 0, 0);
  c.classList.add("has-frame");
}

function end(reason) {
  if (page.state === "ended" || page.state === "idle") return;
  freezeLastFrame();
  if (page.call) page.call.close();
  page.call = null;
  releaseHold();
  stopFigures();
  stopMeter();
  if (page.mic) page.mic.getTracks().forEach((t) => t.stop());
  page.mic = null;
  $("video").srcObject = null;
  setState("ended", `Ended: ${reason}.`);
  log(`Ended. ${reason.charAt(0).toUpperCase()}${reason.slice(1)}.`);
  if (/token/.test(reason)) log(tokenHint());
}

// ---- interrupt (held), volume, view -------------------------------------------------------------
function hold(ev) {
  if (ev) ev.preventDefault();
  if (page.held || page.state !== "live") return;
  page.held = true;
  page.mic.getAudioTracks().forEach((t) => { t.enabled = false; }); // the server hears silence while held
  page.call.send({ type: "interrupt" });
  $("interrupt").classList.add("held");
  $("interrupt").textContent = "Interrupting: mic muted";
}

function releaseHold() {
  if (!page.held) return;
  page.held = false;
  if (page.mic) page.mic.getAudioTracks().forEach((t) => { t.enabled = true; });
  $("interrupt").classList.remove("held");
  $("interrupt").textContent = "Hold to interrupt";
}

function applyZoom() {
  const { faceBox: b, width: w, height: h } = page;
  $("stage").style.setProperty("--aspect", w && h ? `${w} / ${h}` : "1");
  $("full-frame").disabled = !b;
  if (!b || page.fullFrame) { $("frame").style.transform = "none"; return; }
  // a window of the frame's aspect around the face, kept inside the frame
  const cw = Math.min(w, Math.max((b[2] - b[0]) * FACE_MARGIN, (b[3] - b[1]) * FACE_MARGIN * w / h));
  const ch = cw * h / w;
  const x0 = Math.min(Math.max((b[0] + b[2]) / 2 - cw / 2, 0), w - cw);
  const y0 = Math.min(Math.max((b[1] + b[3]) / 2 - ch / 2, 0), h - ch);
  $("frame").style.transform = `scale(${w / cw}) translate(${-100 * x0 / w}%, ${-100 * y0 / h}%)`;
}

// ---- microphone level and live figures ----------------------------------------------------------
function startMeter(stream) {
  const Ctx = window.AudioContext || window.webkitAudioContext;
  if (!Ctx) return;
  const ctx = page.audio = new Ctx();
  const analyser = ctx.createAnalyser();
  analyser.fftSize = 1024;
  ctx.createMediaStreamSource(stream).connect(analyser);
  const buf = new Float32Array(analyser.fftSize);
  page.meterTimer = setInterval(() => {
    analyser.getFloatTimeDomainData(buf);
    let sum = 0;
    for (const x of buf) sum += x * x;
    const db = 10 * Math.log10(sum / buf.length + 1e-12);
    const level = Math.min(1, Math.max(0, (db + 60) / 60)); // -60 dBFS .. 0 dBFS
    $("mic-level").value = level;
    $("mic-level").textContent = `${Math.round(level * 100)} %`;
    $("mic-note").textContent = page.held ? "muted" : level > 0.25 ? "hearing you" : "quiet";
  }, 100);
}

function stopMeter() {
  clearInterval(page.meterTimer);
  if (page.audio) page.audio.close().catch(() => {});
  page.audio = null;
  Object.assign($("mic-level"), { value: 0, textContent: "off" });
  $("mic-note").textContent = "off";
}

function startFigures() {
  stopFigures();
  let last = null;
  for (const id of ["fps", "latency", "late", "quality"]) $(id).textContent = "–";
  page.figTimer = setInterval(() => {
    const v = $("video");
    if (!v.getVideoPlaybackQuality) return;
    const now = { t: performance.now(), n: v.getVideoPlaybackQuality().totalVideoFrames };
    if (last && now.n >= last.n) $("fps").textContent = ((now.n - last.n) * 1000 / (now.t - last.t)).toFixed(1);
    last = now;
  }, 1000);
}

function stopFigures() { clearInterval(page.figTimer); }

function showStats(s) {
  $("latency").textContent = s.engine_latency_ms == null ? "no speech" : `${Math.round(s.engine_latency_ms)} ms`;
  $("late").textContent = s.late_frames;
  $("quality").textContent = s.degrade_level ? `reduced (level ${s.degrade_level})` : "full";
  $("quality").title = `server output ${Number(s.output_fps).toFixed(1)} fps, ${s.frames} frames sent`;
  document.body.dataset.speaking = s.speaking ? "yes" : "no";
}

// ---- wiring ------------------------------------------------------------------------------------
$("start").onclick = start;
$("stop").onclick = () => end("you stopped the session");
$("avatar").onchange = switchAvatar;
const intr = $("interrupt");
intr.addEventListener("pointerdown", (ev) => {
  try { intr.setPointerCapture(ev.pointerId); } catch { /* a synthetic pointer: release comes as pointerup */ }
  hold(ev);
});
["pointerup", "pointercancel", "lostpointercapture"].forEach((e) => intr.addEventListener(e, releaseHold));
intr.addEventListener("keydown", (ev) => { if ((ev.key === " " || ev.key === "Enter") && !ev.repeat) hold(ev); });
intr.addEventListener("keyup", (ev) => { if (ev.key === " " || ev.key === "Enter") releaseHold(); });
intr.addEventListener("contextmenu", (ev) => ev.preventDefault());
$("volume").oninput = () => { $("video").volume = Number($("volume").value); };
$("mute").onclick = () => {
  const muted = $("video").muted = !$("video").muted;
  Object.assign($("mute"), { textContent: muted ? "Muted" : "Mute" }).setAttribute("aria-pressed", String(muted));
};
$("full-frame").onclick = () => {
  page.fullFrame = !page.fullFrame;
  $("full-frame").setAttribute("aria-pressed", String(page.fullFrame));
  applyZoom();
};
$("photo").onchange = suggestName;
$("upload-form").onsubmit = upload;
window.addEventListener("pagehide", () => { if (page.call) page.call.close(); });
setState("idle", "Ready: press Start.");
loadAvatars();
