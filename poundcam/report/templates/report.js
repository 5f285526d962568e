(function () {
  "use strict";
  var body = document.body;
  var list = document.getElementById("items");
  var rows = Array.prototype.slice.call(list.querySelectorAll(".item"));
  var labelSel = document.getElementById("filter-label");
  var minP = document.getElementById("filter-min-p");
  var maxP = document.getElementById("filter-max-p");
  var shown = document.getElementById("shown");
  var sortKey = body.getAttribute("data-sort") || "position", sortDir = sortKey === "position" ? 1 : -1;

  function posOf(r) { return parseInt(r.getAttribute("data-position"), 10); }
  function pOf(r) {
    var v = r.getAttribute("data-p-fake");
    return v === "" ? null : parseFloat(v);
  }
  function bound(input, fallback) {
    var v = parseFloat(input.value);
    return isNaN(v) ? fallback : v;
  }

  /* Pictures load when their row comes near the view: a long page opens as fast as a short one. */
  function show(img) {
    if (img.hasAttribute("src")) return;
    img.addEventListener("load", function () {
      img.setAttribute("data-loaded", img.naturalWidth > 0 ? "1" : "0");
      img.setAttribute("data-natural-width", String(img.naturalWidth));
    });
    img.addEventListener("error", function () { img.setAttribute("data-loaded", "0"); });
    img.src = img.getAttribute("data-src");
  }
  function showRow(row) {
    Array.prototype.forEach.call(row.querySelectorAll("img.thumb"), show);
  }
  /* The settings in the address's hash (label, min, max, sort, zoom, probe). A screenshot check
     (#probe) starts every picture at once, before the page's load event, which then waits for
     them: a lazily started picture may not be painted when a headless browser takes its
     screenshot. */
  var params = new URLSearchParams(window.location.hash.replace(/^#/, ""));
  var observer = null;
  if ("IntersectionObserver" in window && !params.has("probe")) {
    observer = new IntersectionObserver(function (entries) {
      entries.forEach(function (e) {
        if (e.isIntersecting) { showRow(e.target); observer.unobserve(e.target); }
      });
    }, {rootMargin: "800px 0px"});
    rows.forEach(function (r) { observer.observe(r); });
  } else {
    rows.forEach(showRow);
  }

  function apply() {
    var want = labelSel.value, lo = bound(minP, 0), hi = bound(maxP, 1), n = 0;
    rows.forEach(function (r) {
      var label = r.getAttribute("data-label"), status = r.getAttribute("data-status");
      var p = pOf(r), ok;
      if (want === "all") ok = true;
      else if (want === "failed") ok = status === "failed";
      else if (want === "pending") ok = status === "queued" || status === "running";
      else ok = label === want;
      if (ok && (lo > 0 || hi < 1)) ok = p !== null && p >= lo && p <= hi;
      r.hidden = !ok;
      if (ok) n += 1;
    });
    shown.textContent = n + " of " + rows.length + " shown";
    body.setAttribute("data-shown", String(n));
  }
  function sortBy(key, dir) {
    sortKey = key; sortDir = dir;
    rows.sort(function (a, b) {
      if (key === "p_fake") {
        var pa = pOf(a), pb = pOf(b);
        if (pa === null && pb === null) return posOf(a) - posOf(b);
        if (pa === null) return 1;   /* items without P(fake) last, either direction */
        if (pb === null) return -1;
        return (pa - pb) * dir || posOf(a) - posOf(b);
      }
      return (posOf(a) - posOf(b)) * dir;
    });
    rows.forEach(function (r) { list.appendChild(r); });
    Array.prototype.forEach.call(document.querySelectorAll("button[data-sort]"), function (b) {
      if (b.getAttribute("data-sort") === key) {
        b.setAttribute("aria-sort", dir > 0 ? "ascending" : "descending");
        b.setAttribute("data-arrow", dir > 0 ? " \u25B2" : " \u25BC");
      } else {
        b.removeAttribute("aria-sort");
      }
    });
    body.setAttribute("data-sort", key + (dir > 0 ? ":asc" : ":desc"));
  }

  /* Zoom: the picture at the size of the window, with its item, caption and legend. */
  var dialog = document.getElementById("zoom");
  var zoomImg = document.getElementById("zoom-img");
  var zoomCaption = document.getElementById("zoom-caption");
  var zoomLegend = document.getElementById("zoom-legend");
  function zoom(img) {
    show(img);
    var row = img.closest(".item"), fig = img.closest("figure");
    zoomImg.src = img.getAttribute("data-src");
    zoomImg.alt = img.alt;
    zoomCaption.textContent = "#" + row.getAttribute("data-position") + " " +
      fig.querySelector("figcaption").textContent + " — " + row.querySelector(".uri").textContent;
    while (zoomLegend.firstChild) zoomLegend.removeChild(zoomLegend.firstChild);
    var legend = row.querySelector(".legend");
    if (legend && img.getAttribute("data-panel") !== "original") zoomLegend.appendChild(legend.cloneNode(true));
    if (!dialog.open) dialog.showModal();
    body.setAttribute("data-zoom", row.getAttribute("data-position") + ":" + img.getAttribute("data-panel"));
  }
  function unzoom() { if (dialog.open) dialog.close(); body.removeAttribute("data-zoom"); }
  list.addEventListener("click", function (e) {
    if (e.target.classList && e.target.classList.contains("thumb")) zoom(e.target);
  });
  zoomImg.addEventListener("click", unzoom);
  document.getElementById("zoom-close").addEventListener("click", unzoom);
  dialog.addEventListener("close", function () { body.removeAttribute("data-zoom"); });

  Array.prototype.forEach.call(document.querySelectorAll("button[data-sort]"), function (b) {
    b.addEventListener("click", function () {
      var key = b.getAttribute("data-sort");
      sortBy(key, key === sortKey ? -sortDir : (key === "p_fake" ? -1 : 1));
    });
  });
  [labelSel, minP, maxP].forEach(function (el) {
    el.addEventListener("input", apply);
    el.addEventListener("change", apply);
  });

  if (params.has("label")) labelSel.value = params.get("label");
  if (params.has("min")) minP.value = params.get("min");
  if (params.has("max")) maxP.value = params.get("max");
  if (params.has("sort")) {
    var parts = params.get("sort").split(":");
    sortBy(parts[0] === "p_fake" ? "p_fake" : "position", parts[1] === "desc" ? -1 : 1);
  }
  apply();
  if (params.has("zoom")) {
    var z = params.get("zoom").split(":");
    var target = rows.filter(function (r) { return r.getAttribute("data-position") === z[0]; })[0];
    var img = target && target.querySelector('img.thumb[data-panel="' + (z[1] || "fake_overlay").replace(/[^a-z_]/g, "") + '"]');
    if (img) zoom(img);
  }
  window.addEventListener("load", function () {
    body.setAttribute("data-opened-ms", String(Math.round(performance.now())));
    /* #probe: each row's, picture's and legend's place on the screen, for checking screenshots
       and the layout, and how much wider than the window the page is (scrolled sideways). */
    if (params.has("probe")) {
      var page = document.documentElement;
      body.setAttribute("data-viewport", window.innerWidth + "x" + window.innerHeight);
      body.setAttribute("data-overflow-x", String(page.scrollWidth - page.clientWidth));
      Array.prototype.forEach.call(document.querySelectorAll(".item, img.thumb, .ramp, #zoom-img"), function (el) {
        var b = el.getBoundingClientRect();
        el.setAttribute("data-rect", [b.left, b.top, b.width, b.height].map(Math.round).join(","));
      });
    }
  });
  body.setAttribute("data-ready", "1");
})();
