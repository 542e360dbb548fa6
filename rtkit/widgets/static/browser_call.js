/*
 * rtkit BrowserCall: the notebook's browser tab makes the Realtime call; the kernel is its backend.
 *
 *   kernel (Python)                        this tab                              Realtime API / emulator
 *   mints an ek_ key  ── open {key} ──▶    microphone, RTCPeerConnection,  ──▶  POST {base_url}/realtime/calls
 *                                          "oai-events" data channel            (SDP offer, Bearer ek_...)
 *   states, events,   ◀── event, levels,   the reply plays on an <audio>    ◀──  voice track + JSON events
 *   levels, metrics       stats, opened,
 *                         failed, lost
 *
 * The key arrives in a custom widget message and lives only in this page's memory: synced widget state is
 * saved into the .ipynb, messages are not. One attempt per "open" message; retrying, backoff and fresh keys
 * are the kernel's business (one reconnection policy, rtkit.session.ReconnectPolicy, for both kinds of call).
 *
 * Messages from the kernel: {kind: "open", attempt, frontend, key, transport}, {kind: "send", event},
 *   {kind: "hangup", attempt?, frontend?}, {kind: "probe_microphone", probe}.
 * Messages to the kernel (each carries `frontend`, this page's id): hello {webrtc, origin}, bye, event {event},
 *   levels {levels: [{direction, rms, peak, ms}]}, stats {stats}, opened {attempt, transport, timings},
 *   failed {attempt, code, message, hint?, status?, body?, retryAfter?}, lost {attempt, reason},
 *   notice {type, message, ...}, action {action: "connect" | "disconnect"} (the widget's buttons),
 *   microphone {probe, ok, code?, message?, hint?}.
 *
 * The call belongs to the widget's *model* (anywidget's `initialize`), not to a view: showing the widget
 * twice does not open two calls, and a call survives its output cell being cleared. Plain ES2020.
 */

const LEVEL_INTERVAL_MS = 50; //     20 level readings a second per direction, like a VU meter
const STATS_INTERVAL_MS = 1000; //   getStats() once a second: its numbers are cumulative anyway
const SESSION_START_MS = 10000; //   per transport; the kernel waits longer, to allow a fallback
const DISCONNECTED_GRACE_MS = 5000; // "disconnected" often heals by itself; the official client waits 5 s too
const PCM_RATE = 24000; //           the Realtime API's PCM rate (WebSocket transport)

/** The calls of this page, by the widget's `_call_id`: how a view finds the call its model owns. */
const calls = new Map();

/** A failure the kernel turns into an rtkit exception: `code` names the rtkit error, `message` is for people. */
class CallError extends Error {
  constructor(code, message, { hint = null, status = null, body = null, retryAfter = null } = {}) {
    super(message);
    Object.assign(this, { code, hint, status, body, retryAfter });
  }

  report() {
    const { code, message, hint, status, body, retryAfter } = this;
    return { code, message, hint, status, body, retryAfter };
  }
}

const dbfs = (x) => (x > 0 ? Math.round(200 * Math.log10(x)) / 10 : null); // JSON has no -Infinity

// ---- the call: one per widget model ------------------------------------------------------------------

class Call extends EventTarget {
  constructor(model) {
    super();
    this.model = model;
    this.id = Math.random().toString(36).slice(2, 10); // this page's id: the kernel talks to one page
    this.attempt = 0; //      the kernel's attempt this page is working on
    this.conn = null; //      the open transport: {name, send(event), close(), pc?}
    this.mic = null; //       the microphone's MediaStream, kept across reconnections
    this.audio = null; //     the AudioContext behind the meters (and WebRTC playback's meter)
    this.pcmAudio = null; //  a 24 kHz context for the WebSocket transport's capture and playback
    this.meters = {}; //      direction -> {source, analyser, samples}
    this.levels = { input: 0, output: 0 }; // latest peaks, 0..1, for the views' bars
    this.stats = null;
    this.transcript = "";
    this.bargeIn = true; //   stop local playback when the user speaks (WebSocket), unless the session says not
    // Detached, but playing: Chromium's Web Audio reads a remote WebRTC stream only while a media element plays it.
    this.player = new Audio();
    this.player.autoplay = true;

    this.onMessage = (msg) => this.onKernelMessage(msg);
    model.on("msg:custom", this.onMessage);
    this.onMute = () => this.applyMute();
    model.on("change:muted", this.onMute);
    this.onPageHide = () => this.tell({ kind: "bye" });
    window.addEventListener("pagehide", this.onPageHide);
    this.levelTimer = setInterval(() => this.measure(), LEVEL_INTERVAL_MS);
    this.statsTimer = setInterval(() => this.readStats(), STATS_INTERVAL_MS);
    // The page's origin: a kernel that runs the emulator opens its CORS to this page (and only to it).
    this.tell({ kind: "hello", webrtc: typeof RTCPeerConnection === "function", origin: window.location.origin });
  }

  dispose() {
    this.hangUp({ release: true });
    clearInterval(this.levelTimer);
    clearInterval(this.statsTimer);
    window.removeEventListener("pagehide", this.onPageHide);
    this.model.off("msg:custom", this.onMessage);
    this.model.off("change:muted", this.onMute);
    for (const ctx of [this.audio, this.pcmAudio]) if (ctx) ctx.close();
  }

  tell(message) {
    this.model.send({ ...message, frontend: this.id });
  }

  /** Something the views show at once (levels, stats, transcript); the kernel's traits carry the rest. */
  emit(what) {
    this.dispatchEvent(new Event(what));
  }

  onKernelMessage(msg) {
    if (msg.frontend && msg.frontend !== this.id) return; // meant for another tab showing the same notebook
    if (msg.kind === "open") this.open(msg);
    else if (msg.kind === "send") this.send(msg.event);
    else if (msg.kind === "probe_microphone") this.probeMicrophone(msg.probe);
    else if (msg.kind === "hangup" && (!msg.attempt || msg.attempt === this.attempt)) {
      this.attempt = 0; // an attempt still under way sees this and closes what it opened
      this.hangUp({ release: !msg.attempt }); // a full hang-up also releases the microphone
    }
  }

  // ---- one attempt, as the kernel asked ------------------------------------------------------------

  async open({ attempt, key, transport }) {
    this.hangUp(); // a new key replaces whatever was open; the microphone stays
    this.attempt = attempt;
    const timings = {};
    try {
      await this.openMicrophone();
      const conn = await this.openCall(attempt, key, transport, timings);
      if (attempt !== this.attempt) return conn.close(); // the kernel gave up on this attempt meanwhile
      this.conn = conn;
      this.tell({ kind: "opened", attempt, transport: conn.name, timings });
    } catch (err) {
      if (attempt !== this.attempt) return;
      const report = err instanceof CallError ? err.report() : { code: "upstream_unreachable", message: String(err) };
      this.tell({ kind: "failed", attempt, ...report });
    }
  }

  /** WebRTC where the browser has it, else (or when its connection cannot be set up) a WebSocket. */
  async openCall(attempt, key, choice, timings) {
    const hasWebRTC = typeof RTCPeerConnection === "function";
    let order = choice === "auto" ? ["webrtc", "websocket"] : [choice];
    if (choice === "auto" && !hasWebRTC) {
      order = ["websocket"];
      this.notice("webrtc", "websocket", "This browser has no WebRTC: the call runs over a WebSocket instead.");
    }
    for (let i = 0; ; i++) {
      try {
        return await this.openTransport(attempt, order[i], key, timings);
      } catch (err) {
        if (err.code !== "webrtc_unavailable" || i + 1 >= order.length) throw err;
        this.notice("webrtc", order[i + 1], `${err.message} The call runs over a WebSocket instead.`);
      }
    }
  }

  notice(from, to, message) {
    this.tell({ kind: "notice", type: "rtkit.transport_fallback", from_transport: from, to_transport: to, message });
  }

  /** Open one transport with `key`; resolves once the server said `session.created`. */
  async openTransport(attempt, kind, key, timings) {
    if (kind === "webrtc" && typeof RTCPeerConnection !== "function") {
      throw new CallError("webrtc_unavailable", "This browser has no WebRTC (RTCPeerConnection).", {
        hint: "use transport='auto' or 'websocket'",
      });
    }
    let started = false;
    let conn = null;
    let settle;
    const ready = new Promise((resolve, reject) => (settle = { resolve, reject }));
    const tooLate =
      kind === "webrtc"
        ? new CallError("webrtc_unavailable", `The WebRTC connection did not start within ${SESSION_START_MS / 1000} s.`)
        : new CallError("network_lost", `The session did not start within ${SESSION_START_MS / 1000} s.`);
    const timer = setTimeout(() => settle.reject(tooLate), SESSION_START_MS);
    const on = {
      event: (event) => {
        if (attempt !== this.attempt) return; // the stragglers of an attempt the kernel gave up on
        this.onServerEvent(event);
        if (event.type === "session.created" && !started) {
          started = true;
          clearTimeout(timer);
          settle.resolve();
        }
      },
      lost: (reason) => {
        if (started) return this.onLost(conn, reason);
        clearTimeout(timer);
        settle.reject(
          kind === "webrtc"
            ? new CallError("webrtc_unavailable", `The WebRTC connection failed before the session started: ${reason}.`, {
                hint: "a firewall that blocks UDP does this",
              })
            : new CallError("upstream_unreachable", `The WebSocket failed before the session started: ${reason}.`, {
                // Browsers hide a refused WebSocket's HTTP status: every failed upgrade is code 1006.
                hint: "the key may have expired, or the Realtime API refused or could not be reached",
              }),
        );
      },
    };
    try {
      conn = kind === "webrtc" ? await this.openWebRTC(key, on, timings) : this.openWebSocket(key, on);
      await ready;
    } catch (err) {
      clearTimeout(timer);
      if (conn) conn.close();
      throw err;
    }
    return conn;
  }

  onLost(conn, reason) {
    if (conn !== this.conn) return; // already handled, or closed on purpose
    this.hangUp();
    this.tell({ kind: "lost", attempt: this.attempt, reason });
  }

  hangUp({ release = false } = {}) {
    const conn = this.conn;
    this.conn = null; // first, so that the transport's own close events are not taken for a lost line
    if (conn) conn.close();
    this.stopPlayback();
    this.player.srcObject = null;
    this.unmeter("output");
    this.stats = this.rawStats = null;
    if (release && this.mic) {
      this.mic.getTracks().forEach((track) => track.stop()); // turns the browser's recording light off
      this.mic = null;
      this.unmeter("input");
    }
    this.levels = { input: 0, output: 0 };
    this.emit("levels");
  }

  send(event) {
    if (this.conn) this.conn.send(event);
    else this.tell({ kind: "notice", type: "rtkit.send_dropped", event_type: event.type });
  }

  onServerEvent(event) {
    if (event.type === "response.created") this.setTranscript("");
    else if (event.type === "response.output_audio_transcript.delta") this.setTranscript(this.transcript + event.delta);
    else if (event.type === "response.output_audio_transcript.done") this.setTranscript(event.transcript);
    else if (event.type === "session.created" || event.type === "session.updated") {
      const detection = ((event.session.audio || {}).input || {}).turn_detection;
      this.bargeIn = Boolean(detection) && detection.interrupt_response !== false;
    } else if (event.type === "input_audio_buffer.speech_started" && this.bargeIn) this.stopPlayback();
    // Every event goes to the kernel as is (WebSocket audio deltas too: a kernel-side session sees them).
    this.tell({ kind: "event", event });
  }

  setTranscript(text) {
    this.transcript = text;
    this.emit("transcript");
  }

  // ---- microphone, meters, playback ----------------------------------------------------------------

  async openMicrophone() {
    this.audio = this.audio || new AudioContext();
    // Allowed without a click only after one on the page (Shift+Enter counts); else the meters stay at zero.
    this.audio.resume();
    if (this.mic) return;
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      throw new CallError("microphone_unavailable", "This page cannot use a microphone: it is not a secure context.", {
        hint: "open JupyterLab over https, or on localhost / 127.0.0.1",
      });
    }
    try {
      // Echo cancellation keeps the model from hearing (and answering) its own voice from the speakers.
      this.mic = await navigator.mediaDevices.getUserMedia({ audio: { echoCancellation: true, noiseSuppression: true } });
    } catch (err) {
      throw microphoneError(err);
    }
    this.applyMute();
    this.meter(this.audio.createMediaStreamSource(this.mic), "input");
  }

  /** Whether this page may use a microphone, asked the way a call asks; one that was not open is closed again. */
  async probeMicrophone(probe) {
    const opened = !this.mic;
    try {
      await this.openMicrophone();
      if (opened && !this.conn) this.hangUp({ release: true });
      this.tell({ kind: "microphone", probe, ok: true });
    } catch (err) {
      const report = err instanceof CallError ? err.report() : { code: "microphone_unavailable", message: String(err) };
      this.tell({ kind: "microphone", probe, ok: false, ...report });
    }
  }

  /** Muted, the track stays in the call and sends silence: nothing to renegotiate, and the VAD hears a pause. */
  applyMute() {
    if (this.mic) this.mic.getAudioTracks().forEach((track) => (track.enabled = !this.model.get("muted")));
  }

  // A meter reads the last 2048 samples (43 ms at 48 kHz) twenty times a second: RMS and peak, in dBFS.
  meter(source, direction) {
    const analyser = source.context.createAnalyser();
    analyser.fftSize = 2048;
    source.connect(analyser);
    this.meters[direction] = { source, analyser, samples: new Float32Array(analyser.fftSize) };
  }

  unmeter(direction) {
    const m = this.meters[direction];
    if (m) m.source.disconnect(m.analyser); // only that edge: the WebSocket's speaker node feeds the output too
    delete this.meters[direction];
  }

  measure() {
    const levels = [];
    for (const direction of ["input", "output"]) {
      const m = this.meters[direction];
      if (!m) continue;
      m.analyser.getFloatTimeDomainData(m.samples);
      let sum = 0;
      let peak = 0;
      for (const x of m.samples) {
        sum += x * x;
        peak = Math.max(peak, Math.abs(x));
      }
      const rms = Math.sqrt(sum / m.samples.length);
      this.levels[direction] = peak;
      levels.push({ direction, rms: dbfs(rms), peak: dbfs(peak), ms: LEVEL_INTERVAL_MS });
    }
    if (levels.length === 0) return;
    this.tell({ kind: "levels", levels });
    this.emit("levels");
  }

  /** WebRTC: the browser decodes the model's voice; the <audio> element plays it. */
  playRemoteStream(stream) {
    this.player.srcObject = stream;
    this.player.play().catch((err) => {
      if (err.name !== "NotAllowedError") return; // AbortError: hung up before it started
      this.tell({
        kind: "notice",
        type: "rtkit.playback_blocked",
        message: "The browser holds the reply's sound until you click on the page: click the widget to hear it.",
      });
    });
    this.meter(this.audio.createMediaStreamSource(stream), "output");
  }

  resumeAudio() {
    // A click is the user gesture browsers ask for before they play sound.
    for (const ctx of [this.audio, this.pcmAudio]) if (ctx) ctx.resume();
    if (this.player.srcObject) this.player.play().catch(() => {});
  }

  // WebSocket: the model's voice arrives as base64 PCM16 chunks, queued back to back on a 24 kHz context.
  playPcm16(base64) {
    const ctx = this.pcm();
    if (!this.speaker) {
      this.speaker = ctx.createGain();
      this.speaker.connect(ctx.destination);
      this.playing = new Set();
      this.playhead = 0;
    }
    if (!this.meters.output) this.meter(this.speaker, "output");
    const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
    const pcm = new Int16Array(bytes.buffer);
    const buffer = ctx.createBuffer(1, pcm.length, PCM_RATE);
    buffer.getChannelData(0).set(Float32Array.from(pcm, (x) => x / 32768));
    const node = ctx.createBufferSource();
    node.buffer = buffer;
    node.connect(this.speaker);
    this.playhead = Math.max(this.playhead, ctx.currentTime);
    node.start(this.playhead);
    this.playhead += buffer.duration;
    this.playing.add(node);
    node.onended = () => this.playing.delete(node);
  }

  stopPlayback() {
    if (!this.playing) return;
    this.playing.forEach((node) => node.stop());
    this.playing.clear();
    this.playhead = 0;
  }

  /** The WebSocket carries 24 kHz PCM: a 24 kHz context lets the browser resample the microphone for us. */
  pcm() {
    this.pcmAudio = this.pcmAudio || new AudioContext({ sampleRate: PCM_RATE });
    this.pcmAudio.resume();
    return this.pcmAudio;
  }

  // WebSocket: the microphone goes up as base64 PCM16 in 100 ms chunks, cut on the audio thread.
  async captureMicrophone(onChunk) {
    const ctx = this.pcm();
    if (!this.captureModule) {
      const url = URL.createObjectURL(new Blob([CAPTURE_WORKLET], { type: "text/javascript" }));
      this.captureModule = ctx.audioWorklet.addModule(url);
    }
    await this.captureModule;
    const source = ctx.createMediaStreamSource(this.mic);
    // No outputs: Chromium runs such a node without connecting it to the speakers.
    const node = new AudioWorkletNode(ctx, "pcm16-chunks", { numberOfOutputs: 0 });
    node.port.onmessage = ({ data }) => {
      let binary = "";
      for (const byte of new Uint8Array(data.buffer)) binary += String.fromCharCode(byte);
      onChunk(btoa(binary));
    };
    source.connect(node);
    return () => source.disconnect();
  }

  // ---- transports: each calls on.event(serverEvent) and on.lost(reason), returns {name, send, close} --

  async openWebRTC(key, on, timings) {
    const t0 = performance.now();
    const since = () => Math.round((performance.now() - t0) * 10) / 10;
    // No iceServers: the service's answer carries its own candidates and learns the browser's address from
    // its connectivity checks (the OpenAI docs use a bare RTCPeerConnection too; on loopback STUN only slows).
    const pc = new RTCPeerConnection();
    pc.addTrack(this.mic.getAudioTracks()[0], this.mic);
    pc.ontrack = (e) => this.playRemoteStream(e.streams[0]);
    const dc = pc.createDataChannel("oai-events");
    dc.onopen = () => (timings.channel_open_ms = since());
    dc.onmessage = (e) => on.event(JSON.parse(e.data));
    dc.onclose = () => on.lost("the data channel closed");
    let grace = null;
    pc.onconnectionstatechange = () => {
      clearTimeout(grace);
      const state = pc.connectionState;
      if (state === "connected") timings.connected_ms = timings.connected_ms || since();
      if (state === "failed" || state === "closed") on.lost(`the peer connection ${state}`);
      if (state === "disconnected") {
        grace = setTimeout(() => on.lost(`the peer connection stayed disconnected for ${DISCONNECTED_GRACE_MS} ms`),
          DISCONNECTED_GRACE_MS);
      }
    };

    const baseUrl = this.model.get("base_url");
    try {
      await pc.setLocalDescription(await pc.createOffer());
      timings.offer_ms = since();
      let res;
      try {
        res = await fetch(`${baseUrl}/realtime/calls`, {
          method: "POST",
          body: pc.localDescription.sdp,
          headers: { Authorization: `Bearer ${key}`, "Content-Type": "application/sdp" },
        });
      } catch {
        throw new CallError("upstream_unreachable", `The Realtime API at ${baseUrl} cannot be reached from this browser.`, {
          // A refused CORS preflight looks exactly like a network failure to the page.
          hint: "check the address; on another origin its CORS must allow this page (the emulator's cors_origins)",
        });
      }
      // An error body is JSON, never SDP: the kernel reads it, so nobody sees "Failed to parse SessionDescription".
      const body = await res.text();
      if (!res.ok) {
        throw new CallError("http", `The Realtime API refused the call (HTTP ${res.status}).`, {
          status: res.status,
          body,
          retryAfter: res.headers.get("Retry-After"),
        });
      }
      timings.answer_ms = since();
      await pc.setRemoteDescription({ type: "answer", sdp: body });
    } catch (err) {
      dc.onclose = pc.onconnectionstatechange = null; // a call that never opened is not a lost one
      pc.close();
      throw err;
    }
    const send = (event) => dc.readyState === "open" && dc.send(JSON.stringify(event));
    return { name: "webrtc", pc, send, close: () => pc.close() };
  }

  openWebSocket(key, on) {
    // Browsers cannot set headers on a WebSocket: the key rides in a subprotocol, next to "realtime".
    const name = encodeURIComponent(this.model.get("model")); // the widget's `model` trait: the model's name
    const url = `${this.model.get("base_url").replace(/^http/, "ws")}/realtime?model=${name}`;
    const ws = new WebSocket(url, ["realtime", `openai-insecure-api-key.${key}`]);
    const send = (event) => ws.readyState === WebSocket.OPEN && ws.send(JSON.stringify(event));
    let stopCapture = () => {};
    ws.onopen = async () => {
      stopCapture = await this.captureMicrophone((audio) => send({ type: "input_audio_buffer.append", audio }));
      if (ws.readyState !== WebSocket.OPEN) stopCapture(); // closed while the worklet loaded
    };
    ws.onmessage = (e) => {
      const event = JSON.parse(e.data);
      if (event.type === "response.output_audio.delta") this.playPcm16(event.delta);
      on.event(event);
    };
    ws.onclose = (e) => {
      stopCapture();
      on.lost(`the WebSocket closed (code ${e.code})`);
    };
    return {
      name: "websocket",
      send,
      close: () => {
        ws.onclose = null;
        stopCapture();
        ws.close();
      },
    };
  }

  // ---- getStats: what the connection itself measures ------------------------------------------------

  async readStats() {
    const pc = this.conn && this.conn.pc;
    if (!pc) return;
    const stats = {};
    const previous = this.rawStats || {};
    const raw = {};
    (await pc.getStats()).forEach((s) => {
      if (s.type === "candidate-pair" && s.nominated && s.state === "succeeded" && s.currentRoundTripTime != null) {
        stats.rtt_ms = s.currentRoundTripTime * 1000;
      } else if (s.type === "inbound-rtp" && s.kind === "audio") {
        stats.jitter_ms = s.jitter * 1000;
        stats.packets_received = s.packetsReceived;
        stats.packets_lost = s.packetsLost;
        stats.audio_level = s.audioLevel;
        raw.delay = s.jitterBufferDelay;
        raw.emitted = s.jitterBufferEmittedCount;
      } else if (s.type === "outbound-rtp" && s.kind === "audio") {
        stats.packets_sent = s.packetsSent;
      } else if (s.type === "media-source" && s.kind === "audio") {
        stats.input_audio_level = s.audioLevel;
      }
    });
    // jitterBufferDelay is a running total of seconds over every emitted sample: the mean over the last
    // second is the difference of two readings.
    const emitted = (raw.emitted || 0) - (previous.emitted || 0);
    if (emitted > 0) stats.jitter_buffer_ms = (1000 * (raw.delay - (previous.delay || 0))) / emitted;
    this.rawStats = raw;
    if (pc !== (this.conn && this.conn.pc)) return; // hung up while getStats ran
    this.stats = stats;
    this.tell({ kind: "stats", stats });
    this.emit("stats");
  }
}

function microphoneError(err) {
  const retry = "then run `await call.connect()` again (or press Connect)";
  if (err.name === "NotAllowedError" || err.name === "SecurityError") {
    return new CallError(
      "microphone_denied",
      "Microphone access is blocked for this page. Click the microphone (or lock) icon in the address bar " +
        "and allow the microphone for this site.",
      { hint: retry },
    );
  }
  if (err.name === "NotFoundError" || err.name === "OverconstrainedError") {
    return new CallError("microphone_unavailable", "No microphone was found on this computer.", {
      hint: `plug one in or enable it in the system's sound settings, ${retry}`,
    });
  }
  if (err.name === "NotReadableError") {
    return new CallError("microphone_unavailable", "The microphone is busy: another application is using it.", {
      hint: `close the other application, ${retry}`,
    });
  }
  return new CallError("microphone_unavailable", `The microphone could not be opened: ${err.message}`, { hint: retry });
}

const CAPTURE_WORKLET = `
registerProcessor("pcm16-chunks", class extends AudioWorkletProcessor {
  constructor() { super(); this.chunk = new Int16Array(${PCM_RATE / 10}); this.n = 0; }
  process([input]) {
    for (const x of input[0] || []) {
      this.chunk[this.n++] = Math.max(-1, Math.min(1, x)) * 32767;
      if (this.n === this.chunk.length) { this.port.postMessage(this.chunk.slice()); this.n = 0; }
    }
    return true;
  }
});`;

// ---- the view: state, message, meters, stats, transcript, two buttons -------------------------------

function element(tag, className, parent, text = "") {
  const el = document.createElement(tag);
  el.className = className;
  el.textContent = text;
  if (parent) parent.append(el);
  return el;
}

function render({ model, el }) {
  const call = calls.get(model.get("_call_id"));
  const root = element("div", "rtkit-call", el);
  const head = element("div", "rtkit-call-head", root);
  const light = element("span", "rtkit-call-light", head);
  const state = element("b", "rtkit-call-state", head);
  const where = element("span", "rtkit-call-where", head);
  const connect = element("button", "rtkit-call-connect", head, "Connect");
  const mute = element("button", "rtkit-call-mute", head);
  const hangup = element("button", "rtkit-call-hangup", head, "Hang up");
  const message = element("div", "rtkit-call-message", root);
  const bars = {};
  for (const [direction, label] of [["input", "microphone"], ["output", "model"]]) {
    const row = element("div", "rtkit-call-meter", root);
    row.dataset.direction = direction;
    element("span", "rtkit-call-meter-label", row, label);
    bars[direction] = element("span", "rtkit-call-bar", element("span", "rtkit-call-track", row));
  }
  const stats = element("div", "rtkit-call-stats", root);
  const transcript = element("div", "rtkit-call-transcript", root);

  const drawState = () => {
    const status = model.get("status");
    root.dataset.state = status;
    state.textContent = status;
    const transport = model.get("transport");
    where.textContent = `${transport ? `${transport} · ` : ""}${model.get("base_url")} · ${model.get("model")}`;
    connect.disabled = status === "connected" || status === "connecting";
    hangup.disabled = status === "disconnected" || status === "failed";
    mute.textContent = model.get("muted") ? "Unmute" : "Mute";
    root.dataset.muted = model.get("muted");
    message.textContent = model.get("message");
    message.dataset.kind = model.get("message_kind");
    message.hidden = !model.get("message");
  };
  const drawLevels = () => {
    for (const direction of ["input", "output"]) {
      // Peaks on a dB scale from -60 to 0, so quiet speech still moves the bar.
      const db = dbfs(call.levels[direction]);
      bars[direction].style.width = `${db === null ? 0 : Math.max(0, Math.min(100, ((db + 60) / 60) * 100))}%`;
    }
  };
  const drawStats = () => {
    const s = call.stats;
    const ms = (x) => (x == null ? "–" : `${x.toFixed(1)} ms`);
    stats.textContent = s
      ? `RTT ${ms(s.rtt_ms)} · jitter ${ms(s.jitter_ms)} · jitter buffer ${ms(s.jitter_buffer_ms)} · ` +
        `packets lost ${s.packets_lost ?? "–"}`
      : "";
  };
  const drawTranscript = () => (transcript.textContent = call.transcript);

  connect.onclick = () => {
    call.resumeAudio();
    call.tell({ kind: "action", action: "connect" });
  };
  hangup.onclick = () => call.tell({ kind: "action", action: "disconnect" });
  mute.onclick = () => {
    model.set("muted", !model.get("muted")); // a synced trait: the kernel sees `call.muted` change too
    model.save_changes();
  };
  root.onclick = () => call.resumeAudio();
  const traits = ["status", "message", "message_kind", "transport", "base_url", "model", "muted"];
  for (const name of traits) model.on(`change:${name}`, drawState);
  call.addEventListener("levels", drawLevels);
  call.addEventListener("stats", drawStats);
  call.addEventListener("transcript", drawTranscript);
  drawState();
  drawLevels();
  drawStats();
  drawTranscript();
  return () => {
    for (const name of traits) model.off(`change:${name}`, drawState);
    call.removeEventListener("levels", drawLevels);
    call.removeEventListener("stats", drawStats);
    call.removeEventListener("transcript", drawTranscript);
  };
}

function initialize({ model }) {
  const id = model.get("_call_id");
  const call = new Call(model);
  calls.set(id, call);
  return () => {
    call.dispose();
    calls.delete(id);
  };
}

export default { initialize, render };
