// Progressive enhancement of the upload form: drag and drop, paste, a drawing pad, results
// without a page reload, and the same input read again when the mode switch changes. The server renders the result (POST /?fragment=1), so the page and
// the no-JavaScript form show exactly the same thing.
"use strict";

(function () {
  const form = document.getElementById("upload-form");
  const fileInput = document.getElementById("file");
  const drop = document.getElementById("drop");
  const result = document.getElementById("result");
  const pad = document.getElementById("pad");
  const pen = document.getElementById("pen");
  const hint = document.getElementById("pad-hint");
  let busy = false;
  let timer = null;  // recognises the drawing a moment after its last stroke
  let last = null;  // the input the result on screen was read from: {blob, name}
  let queued = null;  // an input given while another was being read

  function mode() {
    const checked = document.querySelector("input[name=mode]:checked");
    return checked ? checked.value : "digit";
  }

  // On a phone the result sits below the inputs: bring it into view.
  function reveal() {
    const box = result.getBoundingClientRect();
    if (box.top > window.innerHeight * 0.6 || box.bottom < 0) {
      result.scrollIntoView({ behavior: "smooth", block: "start" });
    }
  }

  function showMessage(text) {
    result.replaceChildren();
    const box = document.createElement("div");
    box.className = "error";
    box.setAttribute("role", "alert");
    const h = document.createElement("h2");
    h.textContent = "That did not work";
    const p = document.createElement("p");
    p.textContent = text;
    box.append(h, p);
    result.append(box);
    reveal();
  }

  async function send(blob, name) {
    if (busy) {  // the newest input is read once the one being read is answered
      queued = { blob: blob, name: name };
      return;
    }
    busy = true;
    result.classList.add("busy");
    result.setAttribute("aria-busy", "true");
    last = { blob: blob, name: name };
    const body = new FormData();
    body.append("image", blob, name || "image");
    body.append("mode", mode());
    try {
      const response = await fetch("/?fragment=1", { method: "POST", body });
      const type = response.headers.get("Content-Type") || "";
      if (type.startsWith("text/html")) {
        // Server-rendered and autoescaped by Jinja: the same markup the form post shows.
        result.innerHTML = await response.text();
        reveal();
      } else if (type.startsWith("application/json")) {
        showMessage((await response.json()).error || "The server refused the image.");
      } else {
        showMessage("The server answered " + response.status + ".");
      }
    } catch (err) {
      showMessage("The server cannot be reached. Check your connection and try again.");
    } finally {
      busy = false;
      result.classList.remove("busy");
      result.removeAttribute("aria-busy");
      if (queued) {
        const next = queued;
        queued = null;
        send(next.blob, next.name);
      }
    }
  }

  // A file replaces the drawing, and a drawing the chosen file: the result shown always
  // belongs to the one input on screen.
  function sendFile(file, name) {
    clearTimeout(timer);
    clearPad();
    send(file, name || file.name);
  }

  // Upload: choosing a file is enough; the button stays for keyboard users.
  form.addEventListener("submit", function (event) {
    event.preventDefault();
    if (!fileInput.files.length) {
      showMessage("Choose an image file first.");
      return;
    }
    sendFile(fileInput.files[0]);
  });
  fileInput.addEventListener("change", function () {
    if (fileInput.files.length) sendFile(fileInput.files[0]);
  });

  document.querySelectorAll("input[name=mode]").forEach(function (radio) {
    radio.addEventListener("change", function () {
      if (last) send(last.blob, last.name);
    });
  });

  ["dragenter", "dragover"].forEach(function (type) {
    drop.addEventListener(type, function (event) {
      event.preventDefault();
      drop.classList.add("over");
    });
  });
  ["dragleave", "drop"].forEach(function (type) {
    drop.addEventListener(type, function () { drop.classList.remove("over"); });
  });
  drop.addEventListener("drop", function (event) {
    event.preventDefault();
    const file = event.dataTransfer.files[0];
    if (file) sendFile(file);
    else showMessage("Drop an image file.");
  });

  document.addEventListener("paste", function (event) {
    const items = Array.from(event.clipboardData ? event.clipboardData.items : []);
    const item = items.find(function (i) { return i.kind === "file"; });
    if (item) {
      event.preventDefault();
      sendFile(item.getAsFile(), "pasted");
    }
  });

  // Drawing pad: black ink on white, pointer events cover mouse, touch and pen alike.
  const panel = document.getElementById("draw-panel");
  panel.hidden = false;
  const ctx = pad.getContext("2d");
  let drawing = false;
  let drawn = false;

  function clearPad() {
    ctx.fillStyle = "#ffffff";
    ctx.fillRect(0, 0, pad.width, pad.height);
    drawn = false;
    hint.hidden = false;
    last = null;  // the result on screen no longer has its input on screen
  }
  function point(event) {
    const box = pad.getBoundingClientRect();
    return {
      x: (event.clientX - box.left) * (pad.width / box.width),
      y: (event.clientY - box.top) * (pad.height / box.height),
    };
  }
  function recogniseDrawing() {
    if (!drawn) {
      showMessage("Nothing drawn yet: draw a digit in the white box.");
      return;
    }
    pad.toBlob(function (blob) { send(blob, "drawing.png"); }, "image/png");
  }
  clearPad();

  pad.addEventListener("pointerdown", function (event) {
    event.preventDefault();
    pad.setPointerCapture(event.pointerId);
    clearTimeout(timer);
    drawing = true;
    if (!drawn) {  // a new drawing: the file chosen before is not its input
      fileInput.value = "";
      last = null;
    }
    hint.hidden = true;
    const p = point(event);
    ctx.lineWidth = Number(pen.value);
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    ctx.strokeStyle = "#000000";
    ctx.beginPath();
    ctx.moveTo(p.x, p.y);
    ctx.lineTo(p.x + 0.01, p.y);
    ctx.stroke();
    drawn = true;
  });
  pad.addEventListener("pointermove", function (event) {
    if (!drawing) return;
    const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [event];
    (events.length ? events : [event]).forEach(function (e) {
      const p = point(e);
      ctx.lineTo(p.x, p.y);
    });
    ctx.stroke();
  });
  function endStroke() {
    if (!drawing) return;
    drawing = false;
    // A digit often takes several strokes: wait a moment before asking.
    clearTimeout(timer);
    timer = setTimeout(recogniseDrawing, 700);
  }
  pad.addEventListener("pointerup", endStroke);
  pad.addEventListener("pointercancel", endStroke);
  document.getElementById("clear").addEventListener("click", function () {
    clearTimeout(timer);
    clearPad();
  });
  document.getElementById("recognise-drawing").addEventListener("click", function () {
    clearTimeout(timer);
    recogniseDrawing();
  });
})();
