// Browser client of the /ws protocol: mic -> WebRTC offer (non-trickle) -> answer; plays the avatar.
"use strict";
const $ = (id) => document.getElementById(id);
let pc = null, ws = null, mic = null;

function log(msg) {
  const el = $("log");
  el.textContent += `[${new Date().toLocaleTimeString()}] ${msg}\n`;
  el.scrollTop = el.scrollHeight;
}

function setRunning(running) {
  $("start").disabled = running;
  $("interrupt").disabled = !running;
  $("stop").disabled = !running;
}

function iceGatheringDone(peer) {
  // The server takes one offer with every candidate in it (no trickle ICE).
  if (peer.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const check = () => { if (peer.iceGatheringState === "complete") { peer.removeEventListener("icegatheringstatechange", check); resolve(); } };
    peer.addEventListener("icegatheringstatechange", check);
    setTimeout(resolve, 3000); // use what we have after 3 s
  });
}

async function start() {
  setRunning(true);
  try {
    mic = await navigator.mediaDevices.getUserMedia({ audio: { echoCancellation: true, noiseSuppression: true } });
    pc = new RTCPeerConnection({ iceServers: [] });
    mic.getAudioTracks().forEach((t) => pc.addTrack(t, mic));
    pc.addTransceiver("video", { direction: "recvonly" });
    const remote = new MediaStream();
    $("video").srcObject = remote;
    pc.ontrack = (ev) => remote.addTrack(ev.track);
    pc.onconnectionstatechange = () => log(`connection: ${pc.connectionState}`);
    await pc.setLocalDescription(await pc.createOffer());
    await iceGatheringDone(pc);
    const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`;
    ws = new WebSocket(url);
    ws.onopen = () => ws.send(JSON.stringify({
      type: "offer", sdp: pc.localDescription.sdp, options: { low_latency: $("lowlat").checked },
    }));
    ws.onmessage = async (ev) => {
      const msg = JSON.parse(ev.data);
      if (msg.type === "answer") {
        await pc.setRemoteDescription({ type: "answer", sdp: msg.sdp });
        log("answer received");
      } else if (msg.type === "error") {
        log(`error ${msg.code}: ${msg.message}`);
      } else {
        log(`event ${JSON.stringify(msg)}`);
      }
    };
    ws.onclose = (ev) => { log(`socket closed (${ev.code} ${ev.reason})`); stop(); };
  } catch (err) {
    log(`could not start: ${err}`);
    stop();
  }
}

function stop() {
  if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: "close" }));
  if (ws) ws.close();
  if (pc) pc.close();
  if (mic) mic.getTracks().forEach((t) => t.stop());
  ws = pc = mic = null;
  setRunning(false);
}

$("start").onclick = start;
$("stop").onclick = stop;
$("interrupt").onclick = () => ws && ws.send(JSON.stringify({ type: "interrupt" }));
