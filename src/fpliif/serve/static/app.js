// fpliif web page: plain JavaScript, no build step.
//
// The page asks POST v1/parse for JSON with per-class RLE masks (format=json&rle=true), rebuilds the
// label map from them, and draws the colour overlay itself, so classes can be switched on and off without
// asking the server again. Class names and colours come from GET v1/model (fpliif.labels), never from here.
// "Download label PNG" asks the server for the index PNG (format=png) of the same upload.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);

  const SIZES = {
    photo: { label: "Max side", values: ["512", "1024", "2048", ""], initial: "1024", none: "original" },
    aligned: { label: "Output size", values: ["128", "256", "512", "1024", "2048", ""], initial: "512", none: "as uploaded" },
  };

  const state = {
    model: null,
    file: null,
    fileId: 0,
    mode: "photo",
    labelSet: null, // output label set (labels= query parameter); the model's own at first
    classes: [], // class names and colours of the legend: the output label set's
    colors: [],
    tta: false, // flip test-time augmentation (starts at the server's default, GET v1/model)
    sizes: { photo: SIZES.photo.initial, aligned: SIZES.aligned.initial },
    on: [], // on[k]: class k is coloured
    result: null, // the JSON answer
    labels: null, // Uint8Array, h * w
    w: 0,
    h: 0,
    base: null, // ImageData of the original at the label map's size
    seq: 0,
    controller: null,
    renders: 0,
    pngCache: new Map(),
  };

  // ------------------------------------------------------------------------------------------ status
  function setState(name) {
    document.body.dataset.state = name;
  }

  function status(text, kind = "") {
    const el = $("status");
    el.textContent = text;
    el.className = "status" + (kind ? " " + kind : "");
    el.setAttribute("role", kind === "error" ? "alert" : "status"); // errors are announced at once
  }

  function fail(text) {
    // a result shown under other settings or another file would be mistaken for the answer to this request
    clearResult("No result.");
    setState("error");
    status(text, "error");
  }

  async function errorText(resp) {
    try {
      const body = await resp.json();
      if (body && body.detail) return `${body.detail} (HTTP ${resp.status})`;
    } catch (_) {
      /* not JSON */
    }
    return `the server answered HTTP ${resp.status} ${resp.statusText}`;
  }

  const mib = (n) =>
    n < 1024
      ? `${n} bytes`
      : n < 1048576
        ? `${Math.round(n / 1024)} KiB`
        : (n / 1048576).toFixed(n < 10485760 ? 1 : 0) + " MiB";
  const pct = (v) =>
    v >= 0.001 ? (v * 100).toFixed(1) + "%" : v >= 0.0001 ? (v * 100).toFixed(2) + "%" : v > 0 ? "<0.01%" : "0%";

  // ------------------------------------------------------------------------------------------ model
  async function loadModel() {
    const resp = await fetch("v1/model");
    if (!resp.ok) throw new Error(await errorText(resp));
    const m = await resp.json();
    state.model = m;
    state.labelSet = m.label_set;
    useClasses(m.classes, m.colors);
    fillLabelSets();
    const parts = [m.name];
    if (m.weights) parts.push(m.weights);
    if (m.params) parts.push(`${m.params.toLocaleString("en")} parameters`);
    parts.push(`${m.num_classes} classes`);
    $("model-info").textContent = parts.join(" · ");
    state.tta = Boolean(m.defaults && m.defaults.tta);
    $("tta").checked = state.tta;
    fillSizes();
    setState("idle");
    status("Choose or drop a photo.");
  }

  function useClasses(classes, colors) {
    // the legend's classes and colours: the output label set's (all coloured but background)
    state.classes = classes;
    state.colors = colors;
    state.on = classes.map((_, k) => k !== 0);
    buildLegend();
  }

  function fillLabelSets() {
    const sets = state.model.label_sets || [state.model.label_set];
    const select = $("label-set");
    select.replaceChildren();
    for (const name of sets) {
      const opt = document.createElement("option");
      opt.value = name;
      opt.textContent = name === state.model.label_set ? `${name} (model)` : name;
      select.append(opt);
    }
    select.value = state.labelSet;
    $("label-set-row").hidden = sets.length < 2;
  }

  function buildLegend() {
    const ul = $("legend");
    ul.replaceChildren();
    state.classes.forEach((name, k) => {
      if (k === 0) return; // background stays uncoloured
      const li = document.createElement("li");
      li.dataset.index = String(k);
      const label = document.createElement("label");
      const box = document.createElement("input");
      box.type = "checkbox";
      box.checked = state.on[k];
      box.dataset.index = String(k);
      box.dataset.class = name;
      box.addEventListener("change", () => {
        state.on[k] = box.checked;
        render();
      });
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      const [r, g, b] = state.colors[k];
      swatch.style.backgroundColor = `rgb(${r}, ${g}, ${b})`;
      const text = document.createElement("span");
      text.className = "name";
      text.textContent = name.replace(/_/g, " ");
      text.title = name;
      const share = document.createElement("span");
      share.className = "share";
      label.append(box, swatch, text, share);
      li.append(label);
      ul.append(li);
    });
  }

  function updateLegendShares() {
    const shares = state.result ? state.result.class_share : {};
    for (const li of $("legend").children) {
      const name = state.classes[Number(li.dataset.index)];
      const v = shares[name] || 0;
      li.querySelector(".share").textContent = state.result ? pct(v) : "";
      li.classList.toggle("absent", !!state.result && v === 0);
    }
  }

  function setAll(on) {
    if (!state.model) return;
    state.on = state.classes.map((_, k) => k !== 0 && on);
    for (const box of $("legend").querySelectorAll("input[type=checkbox]")) box.checked = on;
    render();
  }

  // ------------------------------------------------------------------------------------------ options
  function fillSizes() {
    const spec = SIZES[state.mode];
    const max = state.model ? state.model.limits.max_size : 2048;
    // aligned outputs cost size^2 decoder queries (twice with TTA): offer only sizes within the server's budget
    const points = ((state.model && state.model.limits.max_points) || Infinity) / (state.tta ? 2 : 1);
    const select = $("size");
    select.replaceChildren();
    for (const v of spec.values) {
      if (v && (Number(v) > max || (state.mode === "aligned" && Number(v) ** 2 > points))) continue;
      const opt = document.createElement("option");
      opt.value = v;
      opt.textContent = v ? `${v} px` : spec.none;
      select.append(opt);
    }
    select.value = state.sizes[state.mode];
    if (select.selectedIndex < 0) {
      // the wanted size is no longer offered (e.g. TTA doubles the cost): the largest offered size below it
      const wanted = Number(state.sizes[state.mode]) || Infinity;
      const below = [...select.options].filter((o) => o.value && Number(o.value) <= wanted);
      select.value = below.length ? below[below.length - 1].value : select.options[0].value;
    }
    state.sizes[state.mode] = select.value; // what the request asks for is what the control shows
    $("size-label").textContent = spec.label;
  }

  function query(format) {
    const p = new URLSearchParams({ format });
    if (format === "json") p.set("rle", "true");
    if (state.mode === "aligned") p.set("aligned", "true");
    p.set("tta", state.tta ? "true" : "false");
    if (state.labelSet !== state.model.label_set) p.set("labels", state.labelSet);
    const size = state.sizes[state.mode];
    if (size) p.set("size", size);
    return p.toString();
  }

  // ------------------------------------------------------------------------------------------ parsing
  function clearResult(text) {
    state.result = null;
    state.labels = null;
    state.base = null;
    $("pair").hidden = true;
    $("empty").hidden = false;
    $("empty").firstElementChild.textContent = text;
    $("download-labels").disabled = true;
    $("download-overlay").disabled = true;
    updateLegendShares();
  }

  function chooseFile(file) {
    if (!file) return;
    state.file = file;
    state.fileId += 1;
    state.pngCache.clear();
    $("file-name").textContent = `${file.name || "image"} (${mib(file.size)})`;
    clearResult("Parsing…");
    parse();
  }

  async function parse() {
    const file = state.file;
    if (!file || !state.model) return;
    if (state.controller) state.controller.abort(); // an earlier request's answer must not show up now
    state.controller = null;
    const seq = ++state.seq;
    const limit = state.model.limits.max_upload_bytes;
    if (file.size > limit) {
      fail(`${file.name} is ${mib(file.size)}; this server accepts images up to ${mib(limit)}.`);
      return;
    }
    const controller = new AbortController();
    state.controller = controller;
    setState("busy");
    status("Parsing…", "busy");
    const form = new FormData();
    form.append("file", file, file.name || "image");
    const started = performance.now();
    try {
      const [resp, bitmap] = await Promise.all([
        fetch("v1/parse?" + query("json"), { method: "POST", body: form, signal: controller.signal }),
        createImageBitmap(file).catch(() => null),
      ]);
      if (seq !== state.seq) return;
      if (!resp.ok) {
        fail(await errorText(resp));
        return;
      }
      const result = await resp.json();
      if (seq !== state.seq) return;
      show(result, bitmap, performance.now() - started);
    } catch (err) {
      if (err.name === "AbortError") return;
      fail(`Request failed: ${err.message}`);
    }
  }

  function decodeRle(rle, w, h) {
    const labels = new Uint8Array(w * h);
    for (const mask of rle.masks) {
      if (mask.index === 0) continue; // zeros already
      let pos = 0;
      mask.counts.forEach((n, i) => {
        if (i % 2 === 1) labels.fill(mask.index, pos, pos + n);
        pos += n;
      });
    }
    return labels;
  }

  function show(result, bitmap, ms) {
    const [w, h] = result.size;
    if (result.classes.join() !== state.classes.join()) useClasses(result.classes, result.colors);
    state.result = result;
    state.w = w;
    state.h = h;
    state.labels = decodeRle(result.rle, w, h);

    const orig = $("original");
    orig.width = w;
    orig.height = h;
    const octx = orig.getContext("2d", { willReadFrequently: true });
    if (bitmap) {
      octx.fillStyle = "#ffffff"; // transparent pixels over white, as the server parses them
      octx.fillRect(0, 0, w, h);
      octx.drawImage(bitmap, 0, 0, w, h);
      bitmap.close();
    } else {
      octx.fillStyle = "#808080";
      octx.fillRect(0, 0, w, h);
    }
    state.base = octx.getImageData(0, 0, w, h);
    const over = $("overlay");
    over.width = w;
    over.height = h;

    $("empty").hidden = true;
    $("pair").hidden = false;
    $("download-labels").disabled = false;
    $("download-overlay").disabled = false;
    updateLegendShares();
    render();

    const n = result.num_faces;
    const faces = result.mode === "aligned" ? "aligned crop" : `${n} face${n === 1 ? "" : "s"}`;
    $("summary").textContent = `· ${faces} · ${w}×${h}`;
    setState("ready");
    const shown = bitmap ? "" : " (this browser cannot show the image itself; labels only)";
    const note = shown + (result.warnings || []).map((text) => ` Note: ${text}.`).join("");
    status(
      result.message
        ? `${result.message[0].toUpperCase()}${result.message.slice(1)}.${note}`
        : `Done in ${(ms / 1000).toFixed(1)} s: ${faces}, ${w}×${h} pixels.${note}`,
    );
  }

  // ------------------------------------------------------------------------------------------ drawing
  function render() {
    if (!state.labels || !state.base) return;
    const { w, h, labels, base } = state;
    const ctx = $("overlay").getContext("2d", { willReadFrequently: true });
    const out = ctx.createImageData(w, h);
    const d = out.data;
    const src = base.data;
    const a = Number($("alpha").value) / 100;
    const keep = 1 - a;
    const on = new Uint8Array(256);
    const cr = new Float32Array(256);
    const cg = new Float32Array(256);
    const cb = new Float32Array(256);
    state.colors.forEach(([r, g, b], k) => {
      on[k] = k !== 0 && state.on[k] ? 1 : 0;
      cr[k] = r * a;
      cg[k] = g * a;
      cb[k] = b * a;
    });
    for (let i = 0, p = 0; i < labels.length; i++, p += 4) {
      const k = labels[i];
      if (on[k]) {
        d[p] = src[p] * keep + cr[k];
        d[p + 1] = src[p + 1] * keep + cg[k];
        d[p + 2] = src[p + 2] * keep + cb[k];
      } else {
        d[p] = src[p];
        d[p + 1] = src[p + 1];
        d[p + 2] = src[p + 2];
      }
      d[p + 3] = 255;
    }
    ctx.putImageData(out, 0, 0);
    if ($("boxes").checked && state.result.mode === "photo") {
      ctx.strokeStyle = "#ffffff";
      ctx.lineWidth = Math.max(1, Math.round(Math.min(w, h) / 300));
      for (const face of state.result.faces) {
        // snap to the pixel grid: a crisp outline (detectors give fractional boxes; anti-aliased edges
        // would tint the label colours under them)
        const half = ctx.lineWidth % 2 ? 0.5 : 0;
        const [x1, y1, x2, y2] = face.box.map((v) => Math.round(v) + half);
        ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
      }
    }
    state.renders += 1;
    $("overlay").dataset.renders = String(state.renders);
  }

  // ------------------------------------------------------------------------------------------ downloads
  function stem() {
    const name = (state.file && state.file.name) || "image";
    return name.replace(/\.[^.]+$/, "") || "image";
  }

  function saveBlob(blob, name) {
    const url = URL.createObjectURL(blob);
    const a = document.createElement("a");
    a.href = url;
    a.download = name;
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  }

  async function downloadLabels() {
    if (!state.file) return;
    const q = query("png");
    const key = `${state.fileId}?${q}`;
    let blob = state.pngCache.get(key);
    if (!blob) {
      status("Fetching the label PNG…", "busy");
      const form = new FormData();
      form.append("file", state.file, state.file.name || "image");
      try {
        const resp = await fetch("v1/parse?" + q, { method: "POST", body: form });
        if (!resp.ok) {
          fail(await errorText(resp));
          return;
        }
        blob = await resp.blob();
      } catch (err) {
        fail(`Request failed: ${err.message}`);
        return;
      }
      state.pngCache.set(key, blob);
      status("Label PNG: pixel value = class index (palette embedded).");
    }
    saveBlob(blob, `${stem()}_labels.png`);
  }

  function downloadOverlay() {
    $("overlay").toBlob((blob) => blob && saveBlob(blob, `${stem()}_overlay.png`), "image/png");
  }

  // ------------------------------------------------------------------------------------------ wiring
  function wire() {
    $("file").addEventListener("change", (e) => chooseFile(e.target.files[0]));
    const drop = $("drop");
    let depth = 0;
    document.addEventListener("dragenter", (e) => {
      e.preventDefault();
      depth += 1;
      drop.classList.add("dragging");
    });
    document.addEventListener("dragleave", () => {
      depth = Math.max(0, depth - 1);
      if (!depth) drop.classList.remove("dragging");
    });
    document.addEventListener("dragover", (e) => e.preventDefault());
    document.addEventListener("drop", (e) => {
      e.preventDefault();
      depth = 0;
      drop.classList.remove("dragging");
      const file = e.dataTransfer && e.dataTransfer.files[0];
      if (file) chooseFile(file);
    });
    for (const radio of document.querySelectorAll("input[name=mode]")) {
      radio.addEventListener("change", () => {
        state.mode = radio.value;
        $("boxes").disabled = state.mode === "aligned";
        fillSizes();
        parse();
      });
    }
    $("size").addEventListener("change", (e) => {
      state.sizes[state.mode] = e.target.value;
      parse();
    });
    $("alpha").addEventListener("input", (e) => {
      $("alpha-value").textContent = `${e.target.value}%`;
      render();
    });
    $("boxes").addEventListener("change", render);
    $("label-set").addEventListener("change", (e) => {
      state.labelSet = e.target.value;
      parse();
    });
    $("tta").addEventListener("change", (e) => {
      state.tta = e.target.checked;
      fillSizes();
      parse();
    });
    $("all").addEventListener("click", () => setAll(true));
    $("none").addEventListener("click", () => setAll(false));
    $("download-labels").addEventListener("click", downloadLabels);
    $("download-overlay").addEventListener("click", downloadOverlay);
  }

  wire();
  loadModel().catch((err) => fail(`Cannot load the model description: ${err.message}`));
})();
