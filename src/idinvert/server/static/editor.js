// The idinvert web editor: plain JavaScript, no build step. Talks to the JSON API of
// idinvert/server/app.py; all state lives on the server under this tab's session id.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const JSON_HEADERS = { "Content-Type": "application/json" };
  const SLOTS = ["a", "b"];
  const state = {
    sid: null,
    info: null,
    slots: { a: null, b: null },  // per photo: { faces, face, ready, shownVersion }
    diffusionShown: null,
    edits: {},
    amounts: {},  // attribute → the value asked for, in its units (years, per cent); only sliders moved
    readings: null,  // what the predictor reads on the face shown: the centres of the unit sliders
    polling: false,
    pollAgain: false,
    rendering: false,
    renderAgain: false,
    ended: false,
  };

  const base = () => `/api/session/${state.sid}`;

  class ApiError extends Error {}

  async function api(path, options = {}) {
    let response;
    try {
      response = await fetch(path, options);
    } catch (e) {
      throw new ApiError("The editor server does not answer; is `idinvert serve` still running?");
    }
    if (!response.ok) {
      let message = `${response.status} ${response.statusText}`;
      let code = null;
      try {
        const body = await response.json();
        message = body.error || message;
        code = body.code || null;
      } catch (_) { /* not JSON */ }
      if (code === "session-ended") sessionEnded(message);
      throw new ApiError(message);
    }
    return response;
  }

  function show(el, text, isError = false) {
    el.textContent = text || "";
    el.hidden = !text;
    el.classList.toggle("error", Boolean(isError));
  }

  function sessionEnded(message) {
    state.ended = true;
    show($("global-message"), `${message}.`, true);
    const link = document.createElement("a");
    link.href = "/";
    link.textContent = " Start again";
    $("global-message").append(link);
  }

  // ------------------------------------------------------------------ start-up and shut-down

  async function init() {
    try {
      state.info = await (await api("/api/info")).json();
      state.sid = (await (await api("/api/session", { method: "POST" })).json()).session;
    } catch (e) {
      show($("global-message"), `The editor could not start: ${e.message}`, true);
      return;
    }
    const p = state.info.pack;
    $("pack-line").textContent = `Model pack “${p.name}”: ${p.resolution}×${p.resolution} px faces, ` +
      `${p.code_space || "W+"} codes ${p.code_shape.join("×")}, on ${p.device}; ${state.info.steps} inversion steps per photo.`;
    if (state.info.alignment.notice) show($("global-message"), state.info.alignment.notice);
    if (state.info.refine) {
      $("faithful-label").title += ` (at most ${state.info.refine.steps} tuning steps).`;
    }
    $("footer").textContent = "Runs on this computer. Photos stay in a temporary folder only while this tab is " +
      `open, and are deleted after ${Math.round(state.info.idle_timeout / 60)} minutes without use.`;
    SLOTS.forEach(setupSlot);
    buildSliders();
    setupCombine();
    setupDiffusion();
    $("faithful").addEventListener("change", () => { requestTuning(); startPolling(); scheduleRender(); });
    updateDownloads();
    // Closing or leaving the tab deletes its photos on the server at once.
    window.addEventListener("pagehide", closeSession);
    window.addEventListener("pageshow", (event) => { if (event.persisted) location.reload(); });
    document.body.dataset.session = "open";
  }

  function closeSession() {
    if (!state.sid || state.ended) return;
    state.ended = true;
    navigator.sendBeacon(`${base()}/close`);
  }

  // ------------------------------------------------------------------ photos and faces

  function setupSlot(slot) {
    const select = $(`sample-${slot}`);
    for (const name of state.info.samples) {
      const option = document.createElement("option");
      option.value = name;
      option.textContent = `Sample: ${name}`;
      select.append(option);
    }
    if (!state.info.samples.length) {
      for (const el of [select, $(`use-sample-${slot}`), select.previousElementSibling]) el.hidden = true;
    }
    $(`file-${slot}`).addEventListener("change", (event) => {
      const file = event.target.files[0];
      event.target.value = "";
      if (file) uploadFile(slot, file);
    });
    $(`use-sample-${slot}`).addEventListener("click", () => {
      const form = new FormData();
      form.append("sample", select.value);
      upload(slot, form);
    });
  }

  function uploadFile(slot, file) {
    const limit = state.info.max_upload_bytes;
    if (file.size > limit) {
      const mb = (n) => (n / 1048576).toFixed(1).replace(/\.0$/, "");
      show($(`message-${slot}`), `${file.name} is ${mb(file.size)} MB; the limit is ${mb(limit)} MB. ` +
        "Use a smaller photo.", true);
      return;
    }
    const form = new FormData();
    form.append("file", file);
    upload(slot, form);
  }

  async function upload(slot, form) {
    if (state.ended) return;
    const message = $(`message-${slot}`);
    show(message, "Uploading and looking for faces…");
    try {
      const r = await (await api(`${base()}/photo/${slot}`, { method: "POST", body: form })).json();
      state.slots[slot] = { faces: r.faces, face: null, ready: false, shownVersion: 0 };
      setReady(slot, false);
      const several = r.faces.length > 1 ? `${r.faces.length} faces found: choose one.` : "";
      show(message, [r.notice, several].filter(Boolean).join(" "));
      $(`photo-${slot}`).src = `${base()}/${slot}/photo.jpg?v=${r.version}`;
      $(`photo-row-${slot}`).hidden = false;
      showFaceChoices(slot, r);
      if (r.faces.length === 1) invert(slot, 0);
    } catch (e) {
      show(message, e.message, true);
    }
  }

  function showFaceChoices(slot, r) {
    const box = $(`faces-${slot}`);
    box.replaceChildren();
    if (r.faces.length < 2) return;
    r.faces.forEach((face, k) => {
      const button = document.createElement("button");
      button.type = "button";
      button.dataset.face = String(k);
      const img = new Image();
      img.src = `${base()}/${slot}/face/${k}.png?v=${r.version}`;
      img.alt = `face ${k + 1}`;
      button.append(img, document.createTextNode(`Face ${k + 1}`));
      button.addEventListener("click", () => invert(slot, k));
      box.append(button);
    });
  }

  async function invert(slot, face) {
    state.slots[slot].face = face;
    for (const b of $(`faces-${slot}`).querySelectorAll("button")) {
      b.classList.toggle("chosen", Number(b.dataset.face) === face);
    }
    setReady(slot, false);
    try {
      await api(`${base()}/${slot}/invert`, { method: "POST", headers: JSON_HEADERS, body: JSON.stringify({ face }) });
      startPolling();
    } catch (e) {
      show($(`message-${slot}`), e.message, true);
    }
  }

  // ------------------------------------------------------------------ progress (polling)

  function startPolling() {
    if (state.polling) {
      // a job was started while a status request was on its way: that answer may not know of it yet
      state.pollAgain = true;
      return;
    }
    state.polling = true;
    poll();
  }

  async function poll() {
    state.pollAgain = false;
    let active = false;
    try {
      const s = await (await api(`${base()}/status`)).json();
      for (const slot of SLOTS) {
        if (s.slots[slot] && state.slots[slot]) active = updateSlot(slot, s.slots[slot]) || active;
      }
      active = updateDiffusion(s.diffusion) || active;
    } catch (e) {
      if (!state.ended) show($("global-message"), e.message, true);
      active = !state.ended;
    }
    if (active || state.pollAgain) setTimeout(poll, 250);
    else state.polling = false;
  }

  function showProgress(prefix, job, verb) {
    const wrap = $(`progress-${prefix}`);
    const bar = $(`progress-bar-${prefix}`);
    const text = $(`progress-text-${prefix}`);
    const active = job !== null && (job.state === "queued" || job.state === "running");
    wrap.hidden = !active;
    if (!active) return false;
    if (job.state === "queued") {
      bar.removeAttribute("value");  // indeterminate
      text.textContent = job.ahead > 0
        ? `Waiting in the queue: ${job.ahead} job${job.ahead > 1 ? "s" : ""} ahead of this one…`
        : "Starting…";
    } else {
      bar.max = Math.max(job.steps, 1);
      bar.value = job.step;
      text.textContent = `${verb}: step ${job.step} of ${job.steps}`;
    }
    wrap.dataset.state = job.state;
    return true;
  }

  function updateSlot(slot, info) {
    // "ready" can come a moment before the worker marks the job done: the result decides.
    let active = showProgress(slot, info.ready ? null : info.job, "Inverting");
    if (info.job && info.job.state === "error") show($(`message-${slot}`), info.job.message, true);
    const mine = state.slots[slot];
    if (slot === "a") active = updateTuning(mine, info) || active;
    if (slot === "a") updateReadings(info);
    if (info.ready && mine.shownVersion !== info.version) {
      mine.shownVersion = info.version;
      mine.face = info.face;
      showInverted(slot, info);
    }
    return active;
  }

  function setReady(slot, ready) {
    state.slots[slot].ready = ready;
    if (slot === "a") document.body.dataset.inverted = ready ? "yes" : "no";
    $("combine").hidden = !(state.slots.b && state.slots.b.ready);
    $("diffusion").hidden = !(state.slots.a && state.slots.a.face !== null && state.slots.b &&
                              state.slots.b.face !== null);
    updateDownloads();
  }

  function showInverted(slot, info) {
    const v = info.version;
    if (slot === "a") {
      $("aligned-a").src = `${base()}/a/face/${info.face}.png?v=${v}`;
      $("reconstruction-a").src = `${base()}/a/reconstruction.png?v=${v}`;
      $("editor").hidden = false;
      $("slot-b").hidden = false;
    } else {
      $("reconstruction-b").src = `${base()}/b/reconstruction.png?v=${v}`;
      $("reconstruction-b").hidden = false;
    }
    setReady(slot, true);
    if (slot === "a") requestTuning();  // a new code: tune again if the switch is on
    scheduleRender();
  }

  // ------------------------------------------------------------------ faithful (pivotal tuning)

  async function requestTuning() {
    const mine = state.slots.a;
    if (!$("faithful").checked || !mine || !mine.ready || mine.faithful || mine.tuning) return;
    mine.tuning = true;
    try {
      await api(`${base()}/a/refine`, { method: "POST" });
      startPolling();
    } catch (e) {
      mine.tuning = false;
      show($("message-a"), e.message, true);
    }
  }

  function updateTuning(mine, info) {
    const active = showProgress("refine", info.faithful ? null : info.refine, "Tuning the generator");
    if (info.refine && info.refine.state === "error") show($("message-a"), info.refine.message, true);
    if (!active) mine.tuning = false;
    if (Boolean(info.faithful) !== Boolean(mine.faithful)) {
      mine.faithful = Boolean(info.faithful);
      $("faithful-time").textContent = mine.faithful ? `(tuned in ${info.refine_seconds.toFixed(1)} s per image)` : "";
      if ($("faithful").checked) scheduleRender();
    }
    return active;
  }

  // ------------------------------------------------------------------ editing

  // A value in a slider's unit, as the page writes it: "47 y", "88 %".
  const inUnits = (value, unit) => `${Math.round(value)}${unit === "years" ? " y" : " %"}`;

  function buildSliders() {
    const box = $("sliders");
    for (const attribute of state.info.attributes) {
      const label = document.createElement("label");
      label.className = "slider";
      if (attribute.title) label.title = attribute.title;  // e.g. the layers a direction moves
      const name = document.createElement("span");
      name.className = "name";
      name.textContent = attribute.label || attribute.name;
      const input = document.createElement("input");
      Object.assign(input, { type: "range", min: attribute.min, max: attribute.max, step: attribute.step, value: 0 });
      input.dataset.attribute = attribute.name;
      const output = document.createElement("output");
      output.textContent = "0.0";
      if (attribute.unit) {
        // in the attribute's units, centred on what the predictor reads on this face (set once inverted)
        input.dataset.unit = attribute.unit;
        input.step = attribute.unit_step;
        input.disabled = true;
        output.textContent = "…";
        input.addEventListener("input", () => {
          state.amounts[attribute.name] = Number(input.value);
          output.textContent = inUnits(Number(input.value), attribute.unit);
          scheduleRender();
        });
      } else {
        input.addEventListener("input", () => {
          state.edits[attribute.name] = Number(input.value);
          output.textContent = Number(input.value).toFixed(1);
          scheduleRender();
        });
      }
      label.append(name, input, output);
      box.append(label);
    }
    $("no-attributes").hidden = state.info.attributes.length > 0;
    $("reset").addEventListener("click", () => {
      for (const input of box.querySelectorAll("input:not([data-unit])")) {
        input.value = 0;
        input.nextElementSibling.textContent = "0.0";
      }
      state.edits = {};
      state.amounts = {};
      centreUnitSliders();
      scheduleRender();
    });
  }

  // The readings of the face shown: the tuned generator's when "faithful" is on and tuned.
  function updateReadings(info) {
    const readings = ($("faithful").checked && info.faithful_readings) || info.readings || null;
    if (JSON.stringify(readings) === JSON.stringify(state.readings)) return;
    state.readings = readings;
    centreUnitSliders();
  }

  // Unit sliders span the person's value (age ± the range, or 1–99 %); a slider not moved sits on it.
  function centreUnitSliders() {
    const ranges = state.info.amounts;
    for (const input of $("sliders").querySelectorAll("input[data-unit]")) {
      const name = input.dataset.attribute;
      const value = state.readings ? state.readings[name] : undefined;
      input.disabled = value === undefined;
      if (value === undefined) continue;
      if (input.dataset.unit === "years") {
        input.min = Math.max(0, Math.round(value - ranges.age_range));
        input.max = Math.round(value + ranges.age_range);
      } else {
        [input.min, input.max] = ranges.percent_range;
      }
      if (!(name in state.amounts)) {
        input.value = Math.round(value);
        input.nextElementSibling.textContent = inUnits(value, input.dataset.unit);
        input.nextElementSibling.title = "what the attribute predictor reads on this face";
      }
    }
  }

  // What the server's search reached for each slider in units (X-Edit-Amounts of a render).
  function showReached(found) {
    for (const [name, entry] of Object.entries(found)) {
      const input = $("sliders").querySelector(`input[data-attribute="${CSS.escape(name)}"]`);
      if (!input || !input.dataset.unit) continue;
      const unit = input.dataset.unit;
      const output = input.nextElementSibling;
      const reached = entry.reached;
      output.textContent = inUnits(entry.target, unit) +
        (Math.abs(reached - entry.target) >= (unit === "years" ? 1 : 1.5) ? ` (reached ${inUnits(reached, unit)})` : "");
      output.title = `distance along the boundary d = ${entry.distance.toFixed(2)}` +
        (entry.reachable ? "" : "; the target lies beyond the largest distance searched");
    }
  }

  function setupCombine() {
    const blend = $("blend");
    const mixStart = $("mix-start");
    const mixOn = $("mix-on");
    blend.max = state.info.blend_steps;
    blend.addEventListener("input", () => {
      const k = Number(blend.value);
      const max = Number(blend.max);
      $("blend-value").textContent = k === 0 ? "photo 1" : k === max ? "photo 2" : `${Math.round(100 * k / max)} %`;
      scheduleRender();
    });
    if (!state.info.mix) {  // a single-latent generator (L = 1) has no layers to mix
      mixOn.closest("label").hidden = true;
      return;
    }
    const layers = state.info.mix.layers;
    mixStart.max = layers;
    mixStart.value = state.info.mix.default_start;
    const describeMix = () => {
      const k = Number(mixStart.value);
      $("mix-value").textContent = k >= layers ? "none" : `layers ${k}–${layers - 1}`;
    };
    describeMix();
    mixOn.addEventListener("change", () => { mixStart.disabled = !mixOn.checked; scheduleRender(); });
    mixStart.addEventListener("input", () => { describeMix(); scheduleRender(); });
  }

  function params() {
    const edits = {};
    for (const [name, d] of Object.entries(state.edits)) if (d !== 0) edits[name] = d;
    const p = { edits };
    if (Object.keys(state.amounts).length) p.amounts = { ...state.amounts };
    if ($("faithful").checked) p.faithful = true;
    if (state.slots.b && state.slots.b.ready) {
      p.blend = Number($("blend").value);
      if (state.info.mix && $("mix-on").checked) p.mix_start = Number($("mix-start").value);
    }
    return p;
  }

  function scheduleRender() {
    updateDownloads();
    if (!state.slots.a || !state.slots.a.ready || state.ended) return;
    if (state.rendering) {
      state.renderAgain = true;  // only the latest slider position is rendered next
      return;
    }
    render();
  }

  async function render() {
    state.rendering = true;
    state.renderAgain = false;
    const started = performance.now();
    const img = $("edited");
    try {
      const response = await api(`${base()}/render`, {
        method: "POST", headers: JSON_HEADERS, body: JSON.stringify(params()),
      });
      const serverMs = Number(response.headers.get("X-Render-Ms"));
      const found = response.headers.get("X-Edit-Amounts");
      if (found) showReached(JSON.parse(found));
      const url = URL.createObjectURL(await response.blob());
      const previous = img.src;
      img.src = url;
      await img.decode();
      if (previous.startsWith("blob:")) URL.revokeObjectURL(previous);
      const total = performance.now() - started;
      $("latency").textContent = `(${Math.round(total)} ms; ${Math.round(serverMs)} ms on the server)`;
      img.dataset.renders = String(Number(img.dataset.renders || 0) + 1);
    } catch (e) {
      show($("message-a"), e.message, true);
    } finally {
      state.rendering = false;
      if (state.renderAgain) render();
    }
  }

  function updateDownloads() {
    const ready = Boolean(state.slots.a && state.slots.a.ready);
    const query = `?p=${encodeURIComponent(JSON.stringify(params()))}`;
    for (const [id, name] of [["download-photo", "edited-photo.png"], ["download-face", "edited-face.png"],
                              ["download-code", "code.npy"]]) {
      const link = $(id);
      if (ready) link.href = `${base()}/download/${name}${query}`;
      else link.removeAttribute("href");
      link.setAttribute("aria-disabled", ready ? "false" : "true");
    }
  }

  // ------------------------------------------------------------------ semantic diffusion

  function setupDiffusion() {
    const d = state.info.diffusion;
    for (const [id, value] of [["crop-size", d.crop_size], ["center-x", d.center_x], ["center-y", d.center_y]]) {
      $(id).value = value;
      $(id).max = d.resolution;
    }
    $("diffuse").addEventListener("click", async () => {
      const body = {
        target: $("diffuse-target").value,
        crop_size: Number($("crop-size").value),
        center_x: Number($("center-x").value),
        center_y: Number($("center-y").value),
      };
      show($("message-diffusion"), "");
      try {
        await api(`${base()}/diffuse`, { method: "POST", headers: JSON_HEADERS, body: JSON.stringify(body) });
        startPolling();
      } catch (e) {
        show($("message-diffusion"), e.message, true);
      }
    });
  }

  function updateDiffusion(d) {
    if (!d) return false;
    const active = showProgress("diffusion", d.ready ? null : d.job, "Diffusing");
    if (d.job.state === "error") show($("message-diffusion"), d.job.message, true);
    if (d.ready && state.diffusionShown !== d.job.id) {
      state.diffusionShown = d.job.id;
      $("diffusion-stitched").src = `${base()}/diffusion/stitched.png?v=${d.job.id}`;
      $("diffusion-image").src = `${base()}/diffusion/result.png?v=${d.job.id}`;
      $("diffusion-result").hidden = false;
    }
    return active;
  }

  init();
})();
