/* The answer widget of a job's kind (templates/_answer.html), for the annotator and QC pages.
 * ConcordAnswer.mount(form) wires the widget inside `form` and returns {key(event) -> handled}:
 * the page passes its key presses to it first, and leaves alone those it reports handled (the
 * widget prevents the default of those it consumes; typing in the number field keeps it). On submit the answer goes into the form's
 * `label` field as JSON; the server checks it against the job's kind. */
(function () {
  "use strict";
  var COLORS = ["#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f"];

  function digit(e) { return /^[1-9]$/.test(e.key) ? Number(e.key) - 1 : -1; }
  function round(v) { return Math.round(v * 10) / 10; }

  function multiChoice(root, submit, schema, initial) {
    var boxes = root.querySelectorAll("#answer-tags input[type=checkbox]");
    if (Array.isArray(initial)) {
      boxes.forEach(function (b) { b.checked = initial.indexOf(b.value) >= 0; });
    }
    return {
      value: function () {
        return Array.prototype.filter.call(boxes, function (b) { return b.checked; })
          .map(function (b) { return b.value; });
      },
      key: function (e) {
        var i = digit(e);
        if (i >= 0 && i < boxes.length) { e.preventDefault(); boxes[i].checked = !boxes[i].checked; return true; }
        if (e.key === "Enter" && e.target.tagName !== "BUTTON") { e.preventDefault(); submit(); return true; }
        return false;
      }
    };
  }

  function ordinal(root, submit, schema, initial) {
    var levels = root.querySelectorAll("#answer-scale button[data-value]");
    var chosen = null;
    levels.forEach(function (b) {
      b.addEventListener("click", function () { chosen = b.dataset.value; });
      if (b.dataset.value === initial) { b.classList.add("current"); b.title = "the current result"; }
    });
    return {
      value: function () { return chosen; },
      key: function (e) {
        var i = digit(e);
        if (i >= 0 && i < levels.length) {
          e.preventDefault();
          chosen = levels[i].dataset.value;
          submit(levels[i]);
          return true;
        }
        return false;
      }
    };
  }

  function numeric(root, submit, schema, initial) {
    var input = root.querySelector("#answer-number");
    if (typeof initial === "number") { input.value = String(initial); }
    return {
      value: function () { return input.value === "" ? null : Number(input.value); },
      // Typing goes to the field; Enter submits natively (the browser checks the range).
      key: function (e) { return e.target === input; }
    };
  }

  function bbox(root, submit, schema, initial) {
    var canvas = root.querySelector("#answer-canvas");
    var ctx = canvas.getContext("2d");
    var list = root.querySelector("#answer-boxes");
    var radios = root.querySelectorAll("#answer-classes input[type=radio]");
    var boxes = (Array.isArray(initial) ? initial : []).map(function (b) {
      return { x: b.box[0], y: b.box[1], w: b.box[2], h: b.box[3], c: b["class"] };
    });
    var drag = null;
    var image = null;
    if (canvas.dataset.image) {
      var img = new Image();
      img.onload = function () { image = img; draw(); };
      img.src = canvas.dataset.image;
    }
    function chosenClass() {
      var r = root.querySelector("#answer-classes input[type=radio]:checked");
      return r ? r.value : schema.classes[0];
    }
    function point(e) {
      var r = canvas.getBoundingClientRect();
      var x = (e.clientX - r.left) * canvas.width / r.width;
      var y = (e.clientY - r.top) * canvas.height / r.height;
      return [Math.min(Math.max(x, 0), canvas.width), Math.min(Math.max(y, 0), canvas.height)];
    }
    function rect(a, b) {
      return { x: Math.min(a[0], b[0]), y: Math.min(a[1], b[1]), w: Math.abs(a[0] - b[0]), h: Math.abs(a[1] - b[1]) };
    }
    function color(c) { return COLORS[Math.max(0, schema.classes.indexOf(c)) % COLORS.length]; }
    function draw() {
      ctx.clearRect(0, 0, canvas.width, canvas.height);
      if (image) { ctx.drawImage(image, 0, 0, canvas.width, canvas.height); }
      else { ctx.fillStyle = "#eee"; ctx.fillRect(0, 0, canvas.width, canvas.height); }
      ctx.lineWidth = Math.max(2, canvas.width / 300);
      ctx.font = Math.max(12, canvas.width / 40) + "px sans-serif";
      boxes.forEach(function (b) {
        ctx.strokeStyle = ctx.fillStyle = color(b.c);
        ctx.setLineDash([]);
        ctx.strokeRect(b.x, b.y, b.w, b.h);
        ctx.fillText(b.c, b.x + 3, b.y + ctx.lineWidth + 12);
      });
      if (drag) {
        var d = rect(drag.a, drag.b);
        ctx.strokeStyle = color(chosenClass());
        ctx.setLineDash([6, 4]);
        ctx.strokeRect(d.x, d.y, d.w, d.h);
      }
    }
    function render() {
      list.textContent = "";
      boxes.forEach(function (b, i) {
        var li = document.createElement("li");
        li.textContent = b.c + " [" + [b.x, b.y, b.w, b.h].join(", ") + "] ";
        var remove = document.createElement("button");
        remove.type = "button";
        remove.textContent = "remove";
        remove.addEventListener("click", function () { boxes.splice(i, 1); render(); draw(); });
        li.appendChild(remove);
        list.appendChild(li);
      });
      draw();
    }
    canvas.addEventListener("mousedown", function (e) {
      e.preventDefault();
      var p = point(e);
      drag = { a: p, b: p };
    });
    window.addEventListener("mousemove", function (e) {
      if (!drag) return;
      drag.b = point(e);
      draw();
    });
    window.addEventListener("mouseup", function (e) {
      if (!drag) return;
      drag.b = point(e);
      var d = rect(drag.a, drag.b);
      drag = null;
      // A click or a sliver is no box.
      if (d.w >= 2 && d.h >= 2) {
        boxes.push({ x: round(d.x), y: round(d.y), w: round(d.w), h: round(d.h), c: chosenClass() });
      }
      render();
    });
    render();
    return {
      value: function () {
        return boxes.map(function (b) { return { box: [b.x, b.y, b.w, b.h], "class": b.c }; });
      },
      key: function (e) {
        var i = digit(e);
        if (i >= 0 && i < radios.length) { e.preventDefault(); radios[i].checked = true; draw(); return true; }
        if (e.key === "u" || e.key === "Backspace") { e.preventDefault(); boxes.pop(); render(); return true; }
        if (e.key === "Enter" && e.target.tagName !== "BUTTON") { e.preventDefault(); submit(); return true; }
        return false;
      }
    };
  }

  var KINDS = { multi_choice: multiChoice, ordinal: ordinal, numeric: numeric, bbox: bbox };

  function mount(form) {
    var root = form.querySelector("#answer-widget");
    if (!root) return null;
    var schema = JSON.parse(document.getElementById("answer-schema").textContent);
    var initialNode = document.getElementById("answer-initial");
    var initial = initialNode ? JSON.parse(initialNode.textContent) : null;
    var hidden = root.querySelector("#answer-value");
    var widget;
    function submit(submitter) {
      form.requestSubmit(submitter || root.querySelector("#answer-submit"));
    }
    widget = KINDS[root.dataset.kind](root, submit, schema, initial);
    // Registered before the page's own listener: it fills the answer in first, and stops a
    // submit with no answer (an ordinal level not chosen).
    form.addEventListener("submit", function (e) {
      var value = widget.value();
      if (value === null) { e.preventDefault(); return; }
      hidden.value = JSON.stringify(value);
    });
    return widget;
  }

  window.ConcordAnswer = { mount: mount };
})();
