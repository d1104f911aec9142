/* fusionbench report page: sortable tables, case pagers, panel size. No external resources.
   The body's data-errors counts script errors and images that failed to load; data-ready="yes"
   says this script ran to its end and data-images, once the page has loaded, how many images
   were drawn (the browser test reads them). */
(function () {
  "use strict";
  var body = document.body;
  function fail(what) {
    body.setAttribute("data-errors", String(Number(body.getAttribute("data-errors") || 0) + 1));
    var list = document.getElementById("page-errors");
    if (!list) {
      list = document.createElement("ul");
      list.id = "page-errors";
      document.querySelector("footer").appendChild(list);
    }
    var item = document.createElement("li");
    item.textContent = what;
    list.appendChild(item);
  }
  window.addEventListener("error", function (event) {
    var t = event.target;
    if (t && t.tagName === "IMG") { t.__reported = true; fail("image failed to load: " + t.getAttribute("src")); }
    else { fail("script error: " + (event.message || "unknown")); }
  }, true);
  /* An image may have failed before this script ran: check the finished ones once loaded. */
  /* data-images: how many images have been drawn (the first case's; others load when shown). */
  window.addEventListener("load", function () {
    var shown = 0;
    Array.prototype.forEach.call(document.images, function (img) {
      if (img.complete && img.naturalWidth > 0) { shown += 1; }
      if (img.complete && img.getAttribute("src") && img.naturalWidth === 0 && !img.__reported) {
        img.__reported = true;
        fail("image failed to load: " + img.getAttribute("src"));
      }
    });
    body.setAttribute("data-images", String(shown));
  });

  /* ---- sortable tables: click a header; numbers by data-value, missing values last ---- */
  function key(cell, numeric) {
    var v = cell ? cell.getAttribute("data-value") : null;
    if (v === null && cell) { v = cell.textContent; }
    if (!numeric) { return (v || "").toLowerCase(); }
    var x = parseFloat(v);
    return isNaN(x) ? null : x;
  }
  function sortBy(table, th) {
    var heads = Array.prototype.slice.call(th.parentNode.children);
    var col = heads.indexOf(th);
    var numeric = th.getAttribute("data-sort") === "num";
    var first = th.getAttribute("data-order") || "asc";
    var now = th.getAttribute("aria-sort");
    var asc = now ? now !== "ascending" : first === "asc";
    heads.forEach(function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", asc ? "ascending" : "descending");
    var tbody = table.tBodies[0];
    var rows = Array.prototype.slice.call(tbody.rows);
    rows.forEach(function (r, i) { r.__i = i; });
    rows.sort(function (a, b) {
      var ka = key(a.children[col], numeric), kb = key(b.children[col], numeric);
      if (ka === null && kb === null) { return a.__i - b.__i; }
      if (ka === null) { return 1; }
      if (kb === null) { return -1; }
      var d = ka < kb ? -1 : (ka > kb ? 1 : 0);
      return (asc ? d : -d) || a.__i - b.__i;
    });
    rows.forEach(function (r) { tbody.appendChild(r); });
  }
  Array.prototype.forEach.call(document.querySelectorAll("table.sortable"), function (table) {
    Array.prototype.forEach.call(table.querySelectorAll("thead th"), function (th) {
      th.addEventListener("click", function () { sortBy(table, th); });
    });
  });

  /* ---- pagers: one case at a time ---- */
  var pagers = [];
  Array.prototype.forEach.call(document.querySelectorAll("section.pager"), function (section) {
    var pages = section.querySelectorAll(".page");
    var controls = section.querySelector(".pager-controls");
    if (!pages.length || !controls) { return; }
    var select = controls.querySelector("select");
    var position = controls.querySelector(".position");
    var current = 0;
    function show(i) {
      current = (i + pages.length) % pages.length;
      Array.prototype.forEach.call(pages, function (p, k) { p.hidden = k !== current; });
      select.value = String(current);
      position.textContent = (current + 1) + " / " + pages.length;
    }
    controls.querySelector(".prev").addEventListener("click", function () { show(current - 1); });
    controls.querySelector(".next").addEventListener("click", function () { show(current + 1); });
    select.addEventListener("change", function () { show(Number(select.value)); });
    pagers.push({ section: section, step: function (d) { show(current + d); } });
  });
  /* The arrow keys page the pager nearest the top of the window. */
  document.addEventListener("keydown", function (event) {
    if (event.altKey || event.ctrlKey || event.metaKey) { return; }
    var tag = (event.target && event.target.tagName) || "";
    if (tag === "INPUT" || tag === "SELECT" || tag === "TEXTAREA") { return; }
    if (event.key !== "ArrowLeft" && event.key !== "ArrowRight") { return; }
    var best = null, bestDist = Infinity;
    pagers.forEach(function (p) {
      var r = p.section.getBoundingClientRect();
      if (r.bottom < 0 || r.top > window.innerHeight) { return; }
      var d = Math.abs(r.top);
      if (d < bestDist) { best = p; bestDist = d; }
    });
    if (best) { best.step(event.key === "ArrowLeft" ? -1 : 1); event.preventDefault(); }
  });

  /* ---- panel size slider ---- */
  Array.prototype.forEach.call(document.querySelectorAll("input[data-size-for]"), function (input) {
    var target = document.getElementById(input.getAttribute("data-size-for"));
    function apply() { target.style.setProperty("--panel", input.value + "px"); }
    input.addEventListener("input", apply);
    apply();
  });

  document.getElementById("script-status").textContent = "page scripts ran";
  body.setAttribute("data-ready", "yes");
})();
