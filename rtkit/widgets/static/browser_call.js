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
 * The kernel's end of this protocol is rtkit/widgets/page.py (PageBridge; each call this page makes is a
 * PageTransport there), owned by rtkit.widgets.BrowserCall together with the widget that draws this card.
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
 *
 * The widget's module is rtkit/static/realtime.js (microphone, transports, PCM audio: shared with the
 * broker's demo page) followed by this file; `rtkit.widgets.page` joins them, as anywidget loads a
 * single module. So the names below that this file does not define come from realtime.js.
 */

const LEVEL_INTERVAL_MS = 50; //     20 level readings a second per direction, like a VU meter
const STATS_INTERVAL_MS = 1000; //   getStats() once a second: its numbers are cumulative anyway
const SESSION_START_MS = 10000; //   per transport; the kernel waits longer, to allow a fallback
//                                   How to try again, at the end of a microphone failure's hint:
const RETRY = "then run `await call.connect()` again (or press Connect)";

/** The calls of this page, by the widget's `_call_id`: how a view finds the call its model owns. */
const calls = new Map();

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
    this.playout = new Playout(); // what is playing of the model's reply, for barge-in
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
    this.playout = new Playout(); // a new connection is a new session: its items are others
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
    this.playout.event(event, this.clock());
    // Every event goes to the kernel as is (WebSocket audio deltas too: a kernel-side session sees them).
    this.tell({ kind: "event", event });
    if (event.type === "input_audio_buffer.speech_started") this.interrupt();
  }

  /** WebRTC playback's clock: the AudioContext's while it runs (the <audio> element plays regardless). */
  clock() {
    return this.audio && this.audio.state === "running" ? this.audio.currentTime : performance.now() / 1000;
  }

  /**
   * The user spoke over the reply: silence it at once and tell the API what was heard, as the official clients
   * do: `output_audio_buffer.clear` over WebRTC, `response.cancel` where the session's interrupt_response is
   * false (else the server cancels by itself), and `conversation.item.truncate` to what was played. Never a
   * truncate that earns an error: not for an item nothing of which was heard, nor one outside the conversation.
   */
  interrupt() {
    const conn = this.conn;
    if (!conn) return;
    let now;
    if (conn.name === "webrtc") {
      // What left the server at `started` reaches the ear after the jitter buffer's delay.
      now = this.clock() - ((this.stats && this.stats.jitter_buffer_ms) || 0) / 1000;
    } else {
      if (!this.pcmAudio) return;
      now = this.pcmAudio.currentTime - (this.pcmAudio.outputLatency || 0);
    }
    const cut = this.playout.interrupt(now);
    if (!cut) return;
    this.stopPlayback();
    if (conn.name === "webrtc") conn.send({ type: "output_audio_buffer.clear" });
    let cancelled = false;
    let truncated = false;
    if (!this.playout.interruptResponse && this.playout.activeResponse) {
      conn.send({ type: "response.cancel", response_id: this.playout.activeResponse });
      cancelled = true;
    }
    if (cut.truncatable && cut.playedMs > 0) {
      const { itemId, contentIndex, playedMs } = cut;
      conn.send({ type: "conversation.item.truncate", item_id: itemId, content_index: contentIndex, audio_end_ms: playedMs });
      truncated = true;
    }
    this.tell({
      kind: "notice",
      type: "rtkit.barge_in",
      item_id: cut.itemId,
      response_id: cut.responseId,
      content_index: cut.contentIndex,
      played_ms: cut.playedMs,
      produced_ms: cut.receivedMs,
      truncated,
      cancelled,
      transport: conn.name,
    });
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
    this.mic = await openMicrophone(RETRY);
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
  playPcm16(base64, event) {
    if (this.playout.silenced.has(event.item_id)) return; // the rest of a reply the user interrupted
    this.player24 = this.player24 || new PcmPlayer(this.pcm());
    if (!this.meters.output) this.meter(this.player24.output, "output");
    const { start, end } = this.player24.play(base64);
    this.playout.scheduled(event, start, end);
  }

  stopPlayback() {
    if (this.player24) this.player24.stop();
  }

  /** The WebSocket carries 24 kHz PCM: a 24 kHz context lets the browser resample the microphone for us. */
  pcm() {
    this.pcmAudio = this.pcmAudio || new AudioContext({ sampleRate: PCM_RATE });
    this.pcmAudio.resume();
    return this.pcmAudio;
  }

  // ---- transports (realtime.js): each calls on.event(serverEvent) and on.lost(reason) ----------------

  openWebRTC(key, on, timings) {
    const { baseUrl, headers } = apiAddress(this.model.get("base_url"));
    const onTrack = (stream) => this.playRemoteStream(stream);
    return openWebRTC({ baseUrl, key, mic: this.mic, onTrack, on, timings, headers });
  }

  openWebSocket(key, on) {
    return openWebSocket({
      baseUrl: apiAddress(this.model.get("base_url")).baseUrl,
      model: this.model.get("model"), // the widget's `model` trait: the model's name
      key,
      on,
      capture: (onChunk) => captureMicrophone(this.pcm(), this.mic, onChunk),
      onAudio: (base64, event) => this.playPcm16(base64, event),
    });
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

/**
 * The page's half of a barge-in: which reply item is playing and how much of it the user has heard, in
 * seconds on the playback's clock. What arrived is not what was heard: a WebSocket reply arrives faster than
 * it plays, and the API cuts its transcript where the client says (`conversation.item.truncate`).
 * Over WebRTC a response's audio item plays from `output_audio_buffer.started` to `stopped`/`cleared`; over the
 * WebSocket each delta names its item and is scheduled on the 24 kHz context.
 */
class Playout {
  constructor() {
    this.interruptResponse = true;
    this.activeResponse = null;
    this.assistantItems = new Set();
    this.audioParts = new Map(); // response id -> [item id, content index]
    this.playing = null; //        {itemId, contentIndex, responseId, started?, segments: [[start, end]], done}
    this.silenced = new Set(); //  items whose late deltas are dropped (WebSocket)
  }

  event(event, now) {
    const t = event.type;
    if (t === "session.created" || t === "session.updated") {
      const detection = ((event.session.audio || {}).input || {}).turn_detection;
      this.interruptResponse = !detection || detection.interrupt_response !== false;
    } else if ((t === "conversation.item.added" || t === "conversation.item.created") && event.item.role === "assistant") {
      this.assistantItems.add(event.item.id);
    } else if (t === "response.created") {
      this.activeResponse = event.response.id;
    } else if (t === "response.done") {
      if (this.activeResponse === event.response.id) this.activeResponse = null;
      if (this.playing && this.playing.responseId === event.response.id) this.playing.done = true;
    } else if (t === "response.content_part.added" && ["audio", "output_audio"].includes(event.part.type)) {
      this.audioParts.set(event.response_id, [event.item_id, event.content_index || 0]);
    } else if (t === "response.output_audio.done") {
      if (this.playing && this.playing.itemId === event.item_id) this.playing.done = true;
    } else if (t === "output_audio_buffer.started") {
      const part = this.audioParts.get(event.response_id);
      this.playing = part && { itemId: part[0], contentIndex: part[1], responseId: event.response_id, started: now };
    } else if (t === "output_audio_buffer.stopped" || t === "output_audio_buffer.cleared") {
      if (this.playing && this.playing.responseId === event.response_id) this.playing = null;
    }
  }

  /** WebSocket: a chunk of the delta's item will play from `start` to `end`. */
  scheduled(event, start, end) {
    if (!this.playing || this.playing.itemId !== event.item_id) {
      const { item_id: itemId, content_index: contentIndex, response_id: responseId } = event;
      this.playing = { itemId, contentIndex: contentIndex || 0, responseId, segments: [], done: false };
    }
    this.playing.segments.push([start, end]);
  }

  /** How much of the playing item was heard by `now`, or null when nothing is playing; the rest is dropped. */
  interrupt(now) {
    const p = this.playing;
    if (!p) return null;
    let played;
    let receivedMs = null;
    if (p.segments) {
      played = p.segments.reduce((sum, [s, e]) => sum + Math.min(Math.max(now - s, 0), e - s), 0);
      const received = p.segments.reduce((sum, [s, e]) => sum + (e - s), 0);
      receivedMs = Math.floor(received * 1000 + 1e-6);
      if (p.done && played >= received) return (this.playing = null); // heard in full: nothing to interrupt
      this.silenced.add(p.itemId);
    } else {
      played = Math.max(0, now - p.started);
    }
    this.playing = null;
    let playedMs = Math.floor(played * 1000);
    if (receivedMs !== null) playedMs = Math.min(playedMs, receivedMs); // never more than was produced
    return {
      itemId: p.itemId,
      contentIndex: p.contentIndex,
      responseId: p.responseId,
      playedMs,
      receivedMs,
      truncatable: this.assistantItems.has(p.itemId),
    };
  }
}

/**
 * Where the API is, from this page. An absolute `base_url` is used as is. A relative one ("proxy/8765/v1")
 * is a path on this Jupyter server: jupyter-server-proxy's route to the kernel's emulator, same origin as the
 * page (no CORS, no mixed content on an https hub). The server guards POSTs with its XSRF cookie, which
 * the page echoes in a header, as JupyterLab's own requests do; the header never goes to another origin.
 */
function apiAddress(baseUrl) {
  if (/^https?:\/\//.test(baseUrl)) return { baseUrl, headers: {} };
  const config = document.getElementById("jupyter-config-data");
  const root = config ? JSON.parse(config.textContent).baseUrl || "/" : "/";
  const url = new URL(root.replace(/\/?$/, "/") + baseUrl.replace(/^\//, ""), window.location.origin);
  const xsrf = document.cookie.match(/(?:^|; )_xsrf=([^;]*)/);
  return { baseUrl: url.href.replace(/\/$/, ""), headers: xsrf ? { "X-XSRFToken": decodeURIComponent(xsrf[1]) } : {} };
}

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
